"""Ledger rows: paged, sorted and filtered as the map and its statistics are, inside the user's area, masked."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from layers import demo
from tests.accounts import bearer

ROWS = "/api/layers/{}/rows"


@pytest.fixture
def demo_client(client: TestClient, session: Session) -> TestClient:
    demo.load(session)
    session.flush()
    return client


def _all_rows(client: TestClient, layer: str, size: int, headers: dict[str, str] | None = None, **params: Any) -> list:
    """Return every row of LAYER, reading page after page until one says no more follow."""
    out: list[dict[str, Any]] = []
    page = 1
    while True:
        body = client.get(ROWS.format(layer), params={**params, "page": page, "size": size}, headers=headers).json()
        out.extend(body["data"])
        if not body["more"]:
            return out
        page += 1


def _features(client: TestClient, layer: str, headers: dict[str, str] | None = None, **params: Any) -> list:
    got = client.get(f"/api/layers/{layer}/features", params={**params, "limit": 10000}, headers=headers)
    return list(got.json()["features"])


def test_pages_hold_every_feature_once(demo_client: TestClient) -> None:
    features = _features(demo_client, "parcels")
    assert len(features) > 120  # several pages
    rows = _all_rows(demo_client, "parcels", 50)
    assert [r["id"] for r in rows] == sorted(f["id"] for f in features)  # default order: by id, no repeats
    first = demo_client.get(ROWS.format("parcels"), params={"size": 50}).json()
    assert first["more"] is True and len(first["data"]) == 50
    assert first["count"] == len(features) and first["last_page"] == -(-len(features) // 50)
    last = demo_client.get(ROWS.format("parcels"), params={"size": 50, "page": first["last_page"]}).json()
    assert last["more"] is False and len(last["data"]) == len(features) - 50 * (first["last_page"] - 1)
    by_id = {f["id"]: f for f in features}
    row = first["data"][7]
    feature = by_id[row["id"]]
    assert row["properties"] == feature["properties"] and row["version"] == feature["version"]
    xs = [p[0] for ring in feature["geometry"]["coordinates"] for part in ring for p in part]
    assert row["bbox"][0] == pytest.approx(min(xs), abs=1e-6) and row["bbox"][2] == pytest.approx(max(xs), abs=1e-6)
    beyond = demo_client.get(ROWS.format("parcels"), params={"size": 50, "page": first["last_page"] + 3}).json()
    assert beyond["data"] == [] and beyond["count"] == len(features) and beyond["more"] is False


def test_sorted_by_a_field_the_area_or_when_changed_ties_broken_by_id(demo_client: TestClient) -> None:
    rows = _all_rows(demo_client, "parcels", 100, sort="area_mu", dir="desc")
    keys = [(-r["properties"]["area_m2"], -r["id"]) for r in rows]
    assert keys == sorted(keys) and len(rows) == len(_features(demo_client, "parcels"))
    rows = _all_rows(demo_client, "parcels", 100, sort="use_status")
    keys = [(r["properties"]["use_status"], r["id"]) for r in rows]
    assert keys == sorted(keys) and len({k[0] for k in keys}) > 2
    stage = _all_rows(demo_client, "parcels", 500, sort="stage", dir="desc")
    nulls = [r for r in stage if r["properties"]["stage"] is None]
    assert nulls and stage[: len(nulls)] == nulls  # descending puts the empty ones first, as PostgreSQL does
    changed = demo_client.get(ROWS.format("shops"), params={"sort": "updated_at", "dir": "desc", "size": 500}).json()
    stamps = [r["properties"]["updated_at"] for r in changed["data"]]
    assert stamps == sorted(stamps, reverse=True)


def test_the_filter_keeps_what_the_statistics_count(demo_client: TestClient) -> None:
    features = [f["properties"] for f in _features(demo_client, "parcels")]
    community = features[0]["community_code"]
    cases: list[dict[str, str]] = [
        {"status": "闲置"},
        {"land_use": "07,01"},
        {"status": "闲置,出租", "scope": community},
        {"ownership": "集体", "idle_since_before": "2023-01-01"},
        {"bbox": "120.37,36.30,120.38,36.31"},
    ]
    for params in cases:
        stats = demo_client.get("/api/layers/parcels/stats", params=params).json()["total"]["count"]
        rows = _all_rows(demo_client, "parcels", 500, **params)
        assert len(rows) == stats, params
        counted = demo_client.get(ROWS.format("parcels") + "/count", params=params).json()["count"]
        assert counted == stats, params
    idle = _all_rows(demo_client, "parcels", 500, status="闲置", scope=community)
    assert idle and all(r["properties"]["use_status"] == "闲置" for r in idle)
    assert len(idle) == sum(1 for p in features if p["use_status"] == "闲置" and p["community_code"] == community)


def test_another_streets_planner_sees_none_of_these_rows(demo_client: TestClient, tokens: dict[str, str]) -> None:
    mine = demo_client.get(ROWS.format("parcels"), headers=bearer(tokens["planner"])).json()
    assert mine["count"] and mine["data"]
    other = demo_client.get(ROWS.format("parcels"), headers=bearer(tokens["planner2"])).json()
    assert other["data"] == [] and other["count"] == 0 and other["more"] is False
    counted = demo_client.get(ROWS.format("parcels") + "/count", headers=bearer(tokens["planner2"])).json()
    assert counted["count"] == 0


def test_personal_values_masked_as_the_features_show_them(demo_client: TestClient, tokens: dict[str, str]) -> None:
    viewer, planner = bearer(tokens["viewer"]), bearer(tokens["planner"])
    seen = {r["id"]: r["properties"] for r in _all_rows(demo_client, "zones", 200, headers=viewer)}
    full = {r["id"]: r["properties"] for r in _all_rows(demo_client, "zones", 200, headers=planner)}
    assert seen and seen.keys() == full.keys()
    assert all("*" in p["household_head"] for p in seen.values())
    assert all("*" not in p["household_head"] for p in full.values())
    as_features = {f["id"]: f["properties"] for f in _features(demo_client, "zones", headers=viewer)}
    assert seen == as_features
    refused = demo_client.get(ROWS.format("zones"), params={"sort": "household_head"}, headers=viewer)
    assert refused.status_code == 422 and refused.json()["code"] == "sort_personal"
    assert "household_head" not in refused.text.split("sort")[0]  # no value named
    allowed = _all_rows(demo_client, "zones", 200, headers=planner, sort="household_head")
    names = [r["properties"]["household_head"] for r in allowed]
    assert len(names) == len(full) and names == sorted(names)


@pytest.mark.parametrize(
    ("params", "code", "where"),
    [
        ({"sort": "geom"}, "sort_invalid", "sort"),
        ({"sort": "name';--"}, "sort_invalid", "sort"),
        ({"dir": "up"}, "dir_invalid", "dir"),
        ({"size": "501"}, "parameter_invalid", "size"),
        ({"page": "0"}, "parameter_invalid", "page"),
        ({"page": "x"}, "parameter_invalid", "page"),
        ({"bbox": "1,2,3"}, "bbox_invalid", "bbox"),
        ({"status": "没有这个"}, "filter_invalid", "status"),
        ({"scope": "123"}, "parameter_invalid", "scope"),
    ],
)
def test_bad_parameters_are_refused_with_a_code(
    demo_client: TestClient, params: dict[str, str], code: str, where: str
) -> None:
    answer = demo_client.get(ROWS.format("parcels"), params=params)
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["code"] == code and where in str(body["where"])
    assert any("\u4e00" <= ch <= "\u9fff" for ch in body["message"].split("(")[0])  # Chinese first


def test_preferences_are_each_users_own(demo_client: TestClient, tokens: dict[str, str]) -> None:
    planner, viewer = bearer(tokens["planner"]), bearer(tokens["viewer"])
    key = "/api/me/preferences/ledger.columns.parcels"
    columns = {"order": ["code", "use_status", "area_mu"], "hidden": ["owner"]}
    assert demo_client.put(key, json=columns, headers=planner).status_code == 204
    assert demo_client.get(key, headers=planner).json() == columns
    missing = demo_client.get(key, headers=viewer)
    assert missing.status_code == 404 and missing.json()["code"] == "preference_not_found"
    assert demo_client.put(key, json={"order": ["name"]}, headers=viewer).status_code == 204
    assert demo_client.get(key, headers=planner).json() == columns  # the viewer's choice is the viewer's
    assert demo_client.get(key, headers=viewer).json() == {"order": ["name"]}
    big = demo_client.put(key, json={"order": ["x" * 50] * 200}, headers=planner)
    assert big.status_code in (413, 422) and big.json()["code"] in ("preference_too_large", "payload_too_large")
    assert demo_client.get(key, headers=planner).json() == columns  # unchanged
    bad = demo_client.put("/api/me/preferences/Bad Key", json=[], headers=planner)
    assert bad.status_code == 422 and bad.json()["code"] == "preference_key_invalid"
    broken = demo_client.put(key, content=b"{", headers=planner | {"content-type": "application/json"})
    assert broken.status_code == 400 and broken.json()["code"] == "invalid_json"


def test_preferences_table_shows_no_other_users_rows(demo_client: TestClient, session: Session, tokens: dict) -> None:
    from sqlalchemy import text

    from layers.access import Actor
    from spatial.db import state

    demo_client.put("/api/me/preferences/ledger.x", json=[1], headers=bearer(tokens["planner"]))
    state(session, Actor(None, "viewer", "viewer", "370214001").settings())
    assert session.execute(text("SELECT count(*) FROM user_preferences")).scalar() == 0
    state(session, Actor(None, "planner", "planner", "370214001").settings())
    assert session.execute(text("SELECT count(*) FROM user_preferences")).scalar() == 1


def test_at_gives_the_page_holding_a_row(demo_client: TestClient) -> None:
    rows = _all_rows(demo_client, "parcels", 40, sort="name", dir="desc")
    target = rows[130]
    found = demo_client.get(
        ROWS.format("parcels"), params={"at": target["id"], "size": 40, "sort": "name", "dir": "desc"}
    ).json()
    assert found["page"] == 130 // 40 + 1 and target["id"] in [r["id"] for r in found["data"]]
    idle = demo_client.get(ROWS.format("parcels"), params={"at": target["id"], "status": "-"})
    assert idle.status_code == 404 and idle.json()["code"] == "row_not_found"


def test_a_big_count_is_capped_and_asked_for_apart(demo_client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from layers import ledger

    total = len(_features(demo_client, "parcels"))
    monkeypatch.setattr(ledger, "COUNT_CAP", 300)
    first = demo_client.get(ROWS.format("parcels"), params={"size": 100}).json()
    assert first["count"] is None and first["count_capped"] is True and first["more"] is True
    assert first["last_page"] >= 3  # the pages the cap shows: the page buttons go that far
    exact = demo_client.get(ROWS.format("parcels") + "/count", params={"size": 100}).json()
    assert exact["count"] == total and exact["last_page"] == -(-total // 100)
    small = demo_client.get(ROWS.format("parcels"), params={"size": 100, "status": "闲置"}).json()
    idle = demo_client.get("/api/layers/parcels/stats", params={"status": "闲置"}).json()["total"]["count"]
    assert 0 < idle <= 300 and small["count"] == idle
