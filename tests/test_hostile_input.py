"""Hostile input of an allowed size finishes (linear work), gets a clear error, and text is text everywhere."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from layers import demo
from tests.browser import live_server
from tests.samples import sample

FINISHES_S = 60
"""Not a speed limit (speed is measured in bench/): linear work on these inputs takes a second or two;
the quadratic checks this replaces took minutes."""


def finishes(call: Any) -> Any:
    """Return CALL()'s result, failing the test if it has not finished within FINISHES_S."""
    out: list[Any] = []
    worker = threading.Thread(target=lambda: out.append(call()), daemon=True)
    worker.start()
    worker.join(FINISHES_S)
    assert out, f"did not finish within {FINISHES_S} s"
    return out[0]


def upload(client: TestClient, body: bytes, layer: str = "shops", **params: str) -> Any:
    return client.post(f"/api/layers/{layer}/uploads", content=body, params=params)


def test_a_feature_with_100k_property_keys_is_handled_in_linear_time(client: TestClient, session: Session) -> None:
    shop = sample("shops")
    keys = ",".join(f'"k{i}":{i}' for i in range(100_000))
    props = json.dumps(shop["properties"], ensure_ascii=False)[:-1] + "," + keys + "}"
    raw = (
        '{"type":"FeatureCollection","features":[{"type":"Feature","geometry":'
        + json.dumps(shop["geometry"])
        + ',"properties":'
        + props
        + "}]}"
    ).encode()
    assert len(raw) > 1_000_000
    response = finishes(lambda: upload(client, raw, dry_run="true"))
    assert response.status_code == 200, response.text[:500]
    report = response.json()["report"]
    assert report["features"][0]["status"] == "new"  # fields no layer field takes: other attributes, capped
    fields = report["fields"]
    assert len(fields["extra"]) == 50 and len(fields["dropped"]) + len(fields["extra"]) <= 200
    assert set(fields["dropped"].values()) == {"capped"} and 99_000 < fields["unlisted"] < 100_000
    stored = session.execute(text("SELECT pg_column_size(report) FROM uploads ORDER BY id DESC LIMIT 1")).scalar_one()
    assert stored < 64 * 1024


def test_repeated_member_names_are_still_found_among_many(client: TestClient) -> None:
    shop = sample("shops")
    keys = ",".join(f'"k{i}":{i}' for i in range(50_000))
    raw = (
        '{"type":"FeatureCollection","features":[{"type":"Feature","geometry":'
        + json.dumps(shop["geometry"])
        + ',"properties":{"status":"闲置",'
        + keys
        + ',"k7":8}}]}'
    ).encode()
    response = finishes(lambda: upload(client, raw, dry_run="true"))
    problems = response.json()["report"]["features"][0]["problems"]
    assert {"code": "duplicate_member", "field": "k7"} in [
        {"code": p["code"], "field": p["where"].get("field")} for p in problems
    ]


@pytest.mark.parametrize("depth", [100, 900])
def test_deep_but_allowed_nesting_is_dropped_with_a_note(client: TestClient, depth: int) -> None:
    shop = sample("shops")
    nested = "[" * depth + "]" * depth
    features = []
    for i in range(50):
        props = json.dumps({**shop["properties"], "code": shop["properties"]["code"][:-2] + f"{i:02d}"})
        features.append(
            '{"type":"Feature","geometry":'
            + json.dumps(shop["geometry"])
            + ',"properties":'
            + props[:-1]
            + ',"deep":'
            + nested
            + "}}"
        )
    raw = ('{"type":"FeatureCollection","features":[' + ",".join(features) + "]}").encode()
    response = finishes(lambda: upload(client, raw, dry_run="true"))
    assert response.status_code == 200, response.text[:300]
    report = response.json()["report"]
    assert report["summary"]["rejected"] == 0 and report["summary"]["new"] == 50
    assert report["fields"]["dropped"] == {"deep": "not_scalar"}


def test_too_deep_nesting_is_refused_as_such(client: TestClient) -> None:
    nested = "[" * 5000 + "]" * 5000
    raw = ('{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"a":' + nested + "}}]}").encode()
    response = finishes(lambda: upload(client, raw))
    assert response.status_code == 400 and response.json()["code"] == "nesting_too_deep"


def test_twenty_thousand_tiny_features_finish_and_the_stored_report_is_capped(
    client: TestClient, session: Session
) -> None:
    tiny = '{"type":"Feature","geometry":{"type":"Point","coordinates":[120.4,36.3]},"properties":{}}'
    raw = ('{"type":"FeatureCollection","features":[' + ",".join([tiny] * 20_000) + "]}").encode()
    response = finishes(lambda: upload(client, raw, dry_run="true"))
    assert response.status_code == 200
    body = response.json()
    assert body["report"]["summary"]["rejected"] == 20_000
    assert len(body["report"]["features"]) == 10_000  # the answer lists up to 10,000; the rest counted
    stored = client.get(f"/api/uploads/{body['id']}").json()["report"]
    assert len(stored["features"]) == 200 and stored["entries_total"] == 10_000
    assert stored["full_report"] == f"/api/uploads/{body['id']}/report"
    full = client.get(stored["full_report"])
    assert full.status_code == 200 and len(full.json()["features"]) == 10_000
    size = session.execute(text("SELECT pg_column_size(report) FROM uploads WHERE id = :i"), {"i": body["id"]})
    assert size.scalar_one() < 64 * 1024


@pytest.mark.parametrize(
    "url",
    [
        "/api/search?q=x%00y",
        "/api/layers/parcels/stats?status=%E9%97%B2%00",
        "/api/layers/parcels/stats?land_use=07&scope=370214001%00",
        "/tiles/parcels/16/54000/25000.pbf?ownership=%00",
        "/api/print?title=a%00b",
        "/api/layers/shops/features?bbox=1,2,3,4%00",
        "/api/uploads?x%00=1",
    ],
)
def test_a_nul_in_a_query_is_a_422_invalid_text(client: TestClient, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_text" and response.json()["where"]["field"]


def test_a_nul_in_a_property_name_is_dropped_and_reported(client: TestClient, session: Session) -> None:
    shop = sample("shops")
    shop["properties"]["bad\u0000name"] = 1
    raw = json.dumps({"type": "FeatureCollection", "features": [shop]}).encode()
    response = upload(client, raw, mode="valid-only")
    assert response.status_code == 201, response.text
    assert response.json()["report"]["fields"]["dropped"] == {"bad\u0000name": "invalid_name"}
    again = client.get(f"/api/uploads/{response.json()['id']}")  # stored escaped: JSONB holds no NUL
    assert again.status_code == 200 and again.json()["report"]["fields"]["dropped"] == {
        "bad\\u0000name": "invalid_name"
    }
    assert session.execute(text("SELECT extra FROM shops")).scalar_one() is None


def pdf_text(pdf: bytes, folder: Path) -> str:
    path = folder / "map.pdf"
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout


def test_dollars_print_as_written(client: TestClient, session: Session, tmp_path: Path) -> None:
    demo.load(session)
    session.execute(text("UPDATE grids SET name = '$\\bad$' WHERE code = '370214001006001'"))
    session.flush()
    response = client.get("/api/print", params={"scope": "370214001006", "size": "A4", "title": "$$ 挂图 $x^2$"})
    assert response.status_code == 200, response.text
    words = pdf_text(response.content, tmp_path)
    assert "$$ 挂图 $x^2$" in words and "$\\bad$" in words


@pytest.mark.parametrize("where", ["property", "coordinate", "id"])
def test_a_number_of_thousands_of_digits_is_refused_on_its_feature(client: TestClient, where: str) -> None:
    big = "9" * 5000
    shop = sample("shops")
    text_of = json.dumps(shop, ensure_ascii=False)
    if where == "property":
        text_of = text_of.replace('"floor": 1', f'"floor": {big}')
    elif where == "coordinate":
        text_of = text_of.replace(json.dumps(shop["geometry"]["coordinates"][0]), big, 1)
    else:
        text_of = '{"id": ' + big + ", " + text_of[1:]
    assert big in text_of
    response = upload(client, ('{"type": "FeatureCollection", "features": [' + text_of + "]}").encode(), dry_run="true")
    assert response.status_code == 200, response.text[:300]
    assert response.json()["report"]["features"][0]["problems"][0]["code"] == "number_too_long"


def test_a_bare_feature_repeating_a_member_is_refused_too(client: TestClient) -> None:
    shop = json.dumps(sample("shops"), ensure_ascii=False)
    repeated = shop.replace('"status": "闲置"', '"status": "闲置", "status": "在营"')
    assert repeated != shop
    response = upload(client, repeated.encode(), dry_run="true")
    problems = response.json()["report"]["features"][0]["problems"]
    assert [p["code"] for p in problems] == ["duplicate_member"] and problems[0]["where"]["field"] == "status"


def test_an_escaped_percent_is_no_nul(engine: Engine) -> None:
    """A real server decodes the path once (the test client decodes it twice, so this runs against uvicorn)."""
    with live_server(engine) as base:
        response = httpx.get(base + "/api/layers/zones%2500/features")  # the text "zones%00": no layer, no NUL
        assert response.status_code == 404 and response.json()["code"] == "layer_not_found"
        assert httpx.get(base + "/api/search", params={"q": "%00"}).status_code == 200  # the text %00
        assert httpx.get(base + "/api/layers/zones%00/features").json()["code"] == "invalid_text"


def test_a_filter_value_the_field_cannot_hold_is_refused_not_printed(client: TestClient) -> None:
    for url in ("/api/layers/parcels/stats", "/api/print", "/tiles/parcels/16/54000/25000.pbf"):
        response = client.get(url, params={"status": "伪造的状态文字"})
        assert response.status_code == 422 and response.json()["code"] == "filter_invalid", url
    assert client.get("/api/layers/parcels/stats", params={"ownership": "私有"}).json()["code"] == "filter_invalid"
    assert client.get("/api/layers/parcels/stats", params={"status": "闲置,出租"}).status_code == 200


def test_invisible_marks_in_a_title_are_not_printed(client: TestClient, session: Session, tmp_path: Path) -> None:
    demo.load(session)
    session.flush()
    response = client.get("/api/print", params={"scope": "370214001006", "size": "A4", "title": "挂图\u202eLTR\t终"})
    assert response.status_code == 200
    words = pdf_text(response.content, tmp_path)
    assert "挂图LTR" in words and "\u202e" not in words  # the override is gone: LTR reads as written
