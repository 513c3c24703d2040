"""Statistics follow the filter: counted here again from the listed features, independently of the SQL."""

from __future__ import annotations

from collections import Counter

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from layers import demo


@pytest.fixture
def demo_client(client: TestClient, session: Session) -> TestClient:
    demo.load(session)
    session.flush()
    return client


def parcels(client: TestClient) -> list[dict]:
    listed: list[dict] = client.get("/api/layers/parcels/features", params={"limit": 10000}).json()["features"]
    return [f["properties"] for f in listed]


def test_totals_status_and_roll_up_agree_with_the_features(demo_client: TestClient) -> None:
    props = parcels(demo_client)
    body = demo_client.get("/api/layers/parcels/stats", params={"by": "community"}).json()
    total = body["total"]
    assert total["count"] == len(props)
    assert total["area_mu"] == pytest.approx(sum(p["area_mu"] for p in props), rel=1e-6)
    idle = sum(1 for p in props if p["use_status"] == "闲置")
    assert total["idle"] == idle and total["idle_rate"] == pytest.approx(idle / len(props), abs=1e-4)
    assert total["revitalised"] == sum(1 for p in props if p["stage"] == "已盘活")
    assert {s["value"]: s["count"] for s in body["by_status"]} == Counter(p["use_status"] for p in props)
    per = Counter(p["community_code"] for p in props)
    assert {r["code"]: r["count"] for r in body["rows"]} == per
    assert all(r["name"] for r in body["rows"])  # community names joined in


def test_filters_narrow_the_figures(demo_client: TestClient) -> None:
    props = parcels(demo_client)
    community = props[0]["community_code"]
    idle = demo_client.get(
        "/api/layers/parcels/stats", params={"status": "闲置", "scope": community, "by": "grid"}
    ).json()
    expected = [p for p in props if p["use_status"] == "闲置" and p["community_code"] == community]
    assert idle["total"]["count"] == len(expected) and idle["total"]["idle_rate"] == 1.0
    assert sum(r["count"] for r in idle["rows"]) == len(expected)
    homes = demo_client.get("/api/layers/parcels/stats", params={"land_use": "07"}).json()["total"]["count"]
    assert homes == sum(1 for p in props if p["land_use_code"].startswith("07"))
    x, y = 120.37, 36.30
    view = demo_client.get("/api/layers/parcels/stats", params={"bbox": f"{x},{y},{x + 0.01},{y + 0.01}"}).json()
    in_view = demo_client.get(
        "/api/layers/parcels/features", params={"bbox": f"{x},{y},{x + 0.01},{y + 0.01}", "limit": 10000}
    ).json()
    assert view["total"]["count"] == in_view["numberMatched"]


def test_bad_filters_are_refused_clearly(demo_client: TestClient) -> None:
    assert demo_client.get("/api/layers/zones/stats", params={"land_use": "07"}).json()["code"] == "filter_invalid"
    assert demo_client.get("/api/layers/zones/stats", params={"ownership": "集体"}).json()["code"] == "filter_invalid"
    assert demo_client.get("/api/layers/divisions/stats", params={"by": "grid"}).json()["code"] == "group_invalid"
    assert demo_client.get("/api/layers/parcels/stats", params={"bbox": "1,2"}).json()["code"] == "bbox_invalid"
    odd = demo_client.get("/api/layers/parcels/stats", params={"scope": "3702140"}).json()  # 7 digits: no level's
    assert odd["code"] == "filter_invalid" and "位数不对" in odd["message"] and "6、9、12、15" in odd["message"]


def test_search_finds_codes_names_and_addresses(demo_client: TestClient) -> None:
    props = parcels(demo_client)
    code = props[5]["code"]
    hits = demo_client.get("/api/search", params={"q": code}).json()
    assert hits[0]["code"] == code and hits[0]["exact"] and hits[0]["layer"] == "parcels"
    west, south, east, north = hits[0]["bbox"]
    assert west <= east and south <= north
    community = demo_client.get("/api/search", params={"q": "古庙头"}).json()
    assert any(h["layer"] == "divisions" and h["name"] == "古庙头社区" for h in community)
    assert demo_client.get("/api/search", params={"q": "100%_"}).json() == []  # wildcards are literal
    assert demo_client.get("/api/search", params={"q": ""}).status_code == 422


def test_the_roll_up_drills_down_street_community_grid(demo_client: TestClient) -> None:
    props = parcels(demo_client)
    streets = demo_client.get("/api/layers/parcels/stats", params={"by": "street"}).json()
    assert streets["by"] == "street"
    assert {r["code"]: r["count"] for r in streets["rows"]} == Counter(p["community_code"][:9] for p in props)
    street = streets["rows"][0]
    assert street["name"] == "城阳街道" and len(street["bbox"]) == 4
    communities = demo_client.get(
        "/api/layers/parcels/stats", params={"scope": street["code"], "by": "community"}
    ).json()["rows"]
    assert sum(r["count"] for r in communities) == street["count"]
    community = communities[0]
    west, south, east, north = community["bbox"]
    divisions = demo_client.get("/api/layers/divisions/features", params={"limit": 100}).json()["features"]
    shape = next(f for f in divisions if f["properties"]["code"] == community["code"])
    from shapely.geometry import shape as to_shape

    assert to_shape(shape["geometry"]).bounds == pytest.approx((west, south, east, north), abs=1e-6)
    grids = demo_client.get("/api/layers/parcels/stats", params={"scope": community["code"], "by": "grid"}).json()[
        "rows"
    ]
    assert sum(r["count"] for r in grids) == community["count"]
    assert all(r["code"].startswith(community["code"]) and r["bbox"] for r in grids)
    one = demo_client.get("/api/layers/parcels/stats", params={"scope": grids[0]["code"]}).json()
    assert one["total"]["count"] == grids[0]["count"] == sum(1 for p in props if p["grid_code"] == grids[0]["code"])


def test_features_with_no_unit_are_counted_as_unassigned(demo_client: TestClient, session: Session) -> None:
    from sqlalchemy import text

    props = parcels(demo_client)
    community = props[0]["community_code"]
    session.execute(text("UPDATE parcels SET grid_code = NULL WHERE code = :code"), {"code": props[0]["code"]})
    session.flush()
    rows = demo_client.get("/api/layers/parcels/stats", params={"scope": community, "by": "grid"}).json()["rows"]
    assert rows[-1]["code"] is None and rows[-1]["name"] == "未归属 unassigned" and rows[-1]["count"] == 1
    assert rows[-1]["bbox"] is None
    assert sum(r["count"] for r in rows) == sum(1 for p in props if p["community_code"] == community)


def test_roll_up_rows_are_the_units_own_figures_and_say_how_many_are_in_view(demo_client: TestClient) -> None:
    """A row named 城阳街道 gives the street's own count, not the view's; the view's count stands beside it."""
    x, y = 120.37, 36.30
    box = f"{x},{y},{x + 0.01},{y + 0.01}"
    body = demo_client.get("/api/layers/parcels/stats", params={"bbox": box, "by": "community"}).json()
    whole = demo_client.get("/api/layers/parcels/stats", params={"by": "community"}).json()["rows"]
    assert {r["code"]: r["count"] for r in body["rows"]} == {r["code"]: r["count"] for r in whole}
    assert body["in_view"] is True
    for row in body["rows"]:
        own = demo_client.get("/api/layers/parcels/stats", params={"scope": row["code"]}).json()["total"]
        seen = demo_client.get("/api/layers/parcels/stats", params={"scope": row["code"], "bbox": box}).json()
        assert row["count"] == own["count"] and row["idle"] == own["idle"]
        assert row["in_view"] == seen["total"]["count"]
    assert sum(r["in_view"] for r in body["rows"]) == body["total"]["count"] < sum(r["count"] for r in body["rows"])


def shops(client: TestClient, **params: str) -> list[dict]:
    listed = client.get("/api/layers/shops/features", params={"limit": 10000, **params}).json()["features"]
    return [f["properties"] for f in listed]


def test_shops_are_filtered_and_counted_as_their_declaration_says(demo_client: TestClient) -> None:
    """Which shops are idle in a community: filter by status and letting status, counted per value and per grid."""
    everything = shops(demo_client)
    community = Counter(p["community_code"] for p in everything if p["status"] == "闲置").most_common(1)[0][0]
    here = [p for p in everything if p["community_code"] == community]
    idle = [p for p in here if p["status"] == "闲置"]
    assert 0 < len(idle) < len(here)
    params = {"scope": community, "status": "闲置", "by": "grid"}
    body = demo_client.get("/api/layers/shops/stats", params=params).json()
    assert body["total"]["count"] == body["total"]["idle"] == len(idle)
    assert sum(r["count"] for r in body["rows"]) == len(idle) and all(r["name"] for r in body["rows"] if r["code"])
    letting = Counter(p["letting_status"] for p in idle)
    assert {r["value"]: r["count"] for r in body["by_field"]["letting_status"]} == letting
    assert {r["value"]: r["count"] for r in body["by_field"]["ownership"]} == Counter(p["ownership"] for p in idle)
    listed = shops(demo_client, scope=community, status="闲置")  # the map draws what is counted
    assert sorted(p["code"] for p in listed) == sorted(p["code"] for p in idle)
    signed = demo_client.get("/api/layers/shops/stats", params={"letting_status": "已签约"}).json()["total"]
    assert signed["count"] == signed["signed"] == sum(1 for p in everything if p["letting_status"] == "已签约")
    offered = demo_client.get("/api/layers/shops/filters").json()
    assert {f["param"] for f in offered["filters"]} >= {"status", "ownership", "letting_status", "idle_since_before"}
    refused = demo_client.get("/api/layers/shops/stats", params={"letting_status": "出租"})
    assert refused.status_code == 422 and refused.json()["code"] == "filter_invalid"
    assert demo_client.get("/api/layers/shops/stats", params={"land_use": "07"}).json()["code"] == "filter_invalid"


def test_parcels_are_counted_per_land_use_class_with_its_name(demo_client: TestClient) -> None:
    props = parcels(demo_client)
    rows = demo_client.get("/api/layers/parcels/stats").json()["by_field"]["land_use_code"]
    assert {r["value"]: r["count"] for r in rows} == Counter(p["land_use_code"][:2] for p in props)
    assert next(r for r in rows if r["value"] == "07")["label"] == "住宅用地"


def test_a_search_hit_says_whether_the_maps_filter_keeps_it(demo_client: TestClient) -> None:
    props = parcels(demo_client)
    used = next(p for p in props if p["use_status"] == "自用")
    hits = demo_client.get("/api/search", params={"q": used["code"], "layer": "parcels", "status": "闲置"}).json()
    assert hits[0]["code"] == used["code"] and hits[0]["kept"] is False
    hits = demo_client.get("/api/search", params={"q": used["code"], "layer": "parcels", "status": "自用"}).json()
    assert hits[0]["kept"] is True
    assert demo_client.get("/api/search", params={"q": used["code"]}).json()[0]["kept"] is True
