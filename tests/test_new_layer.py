"""A layer declared in a fixture, and nowhere else, is on the map, in the checks, uploads, search and print.

The fixture does what a new layer's module and migration do: it declares the layer (水井,
wells: points with a status) and creates its table with the triggers the declarations call
for, in a database of its own. Nothing else in the app is told about it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from api.main import create_app
from api.settings import ApiSettings
from layers import migrate
from layers.base import REGISTRY, Layer
from layers.generations import track_writes
from layers.triggers import layer_statements
from spatial.db import Base, make_engine, state
from tests.accounts import bearer, tokens_for
from tests.browser import sign_in_as
from tests.conftest import ADMIN, demo_database, owner_url

LAYER = "test_wells"
COMMUNITY = "370214001006"


@pytest.fixture(scope="module")
def wells() -> Iterator[tuple[Layer, Engine]]:
    """Declare the layer, then make its table in a demo database as its migration would; forget it after."""
    from tests.wells_layer import WELLS as layer  # the declaration, as a layer module holds it

    REGISTRY.setdefault(LAYER, layer)  # again after an earlier module forgot it
    try:
        with demo_database("guatu_test_new_layer") as engine:
            owner = make_engine(url=owner_url("guatu_test_new_layer"))
            try:
                with owner.begin() as conn:
                    layer.model.__table__.create(conn)
                    for statement in track_writes(LAYER):
                        conn.execute(text(statement))
                    for statement in layer_statements(layer):
                        conn.execute(text(statement))
                    migrate.grant_app(conn, engine.url.username or "")
            finally:
                owner.dispose()
            yield layer, engine
    finally:
        REGISTRY.pop(LAYER, None)
        Base.metadata.remove(layer.model.__table__)


@pytest.fixture(scope="module")
def client(wells: tuple[Layer, Engine]) -> Iterator[TestClient]:
    _, engine = wells
    with TestClient(create_app(ApiSettings(), engine=engine), headers=bearer(sign_in_as(engine))) as test_client:
        yield test_client


def _well(code: str, lon: float, lat: float, condition: str = "可用", **extra: object) -> dict:
    props = {"code": code, "name": f"{code}号井", "condition": condition, "depth_m": 12.5, "keeper": "张三丰", **extra}
    return {"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]}, "properties": props}


def _inside(client: TestClient, grid_index: int = 0) -> tuple[float, float, str]:
    """Return a point well inside a grid of the demo community, and the grid's code."""
    from shapely.geometry import shape

    grids = client.get("/api/layers/grids/features", params={"limit": 200}).json()["features"]
    ours = sorted(
        (g for g in grids if g["properties"]["community_code"] == COMMUNITY), key=lambda g: g["properties"]["code"]
    )
    grid = ours[grid_index]
    point = shape(grid["geometry"]).representative_point()
    return point.x, point.y, grid["properties"]["code"]


def test_it_is_listed_described_and_takes_features(client: TestClient) -> None:
    listed = {lay["id"] for lay in client.get("/api/layers").json()}
    assert LAYER in listed
    x, y, grid = _inside(client)
    created = client.post(f"/api/layers/{LAYER}/features", json=_well("W0001", x, y))
    assert created.status_code == 201, created.text
    props = created.json()["properties"]
    assert props["grid_code"] == grid and props["community_code"] == COMMUNITY  # located like any layer
    assert props["keeper"] == "张三丰"  # personal: in full for an administrator
    viewer = tokens_for(owner_url("guatu_test_new_layer"), "guatu_test_new_layer")["viewer"]
    shown = client.get(f"/api/layers/{LAYER}/features/{created.json()['id']}", headers=bearer(viewer))
    assert shown.json()["properties"]["keeper"] == "张*丰"  # masked for a viewer of the street
    bad = client.post(f"/api/layers/{LAYER}/features", json=_well("W0002", x, y, condition="坏了"))
    assert bad.status_code == 422 and "condition" in bad.text


def test_an_upload_is_checked_reported_and_written(client: TestClient) -> None:
    x, y, _ = _inside(client, 1)
    body = {
        "type": "FeatureCollection",
        "features": [_well("W0101", x, y, "干涸"), _well("W0102", x + 1e-4, y, "封填")],
    }
    response = client.post(f"/api/layers/{LAYER}/uploads", content=json.dumps(body).encode())
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "committed" and body["report"]["summary"]["new"] == 2, body["report"]


def test_its_tiles_stats_and_search_follow(client: TestClient, wells: tuple[Layer, Engine]) -> None:
    layer, _ = wells
    tilejson = client.get(f"/tiles/{LAYER}.json")
    assert tilejson.status_code == 200 and tilejson.json()["minzoom"] == layer.tile_min_zoom
    stats = client.get(f"/api/layers/{LAYER}/stats", params={"scope": COMMUNITY, "by": "grid"}).json()
    assert stats["total"]["count"] >= 3
    assert {row["value"] for row in stats["by_status"]} >= {"干涸", "封填"}
    hits = client.get("/api/search", params={"q": "W0101"}).json()
    assert any(hit.get("layer") == LAYER for hit in (hits if isinstance(hits, list) else hits.get("results", [])))


def test_the_checks_hold_it_to_its_rules(client: TestClient, wells: tuple[Layer, Engine]) -> None:
    _, engine = wells
    x, y, grid = _inside(client, 2)
    created = client.post(f"/api/layers/{LAYER}/features", json=_well("W0201", x, y)).json()
    with Session(engine) as session:  # a surveyor typed the wrong grid in, straight into the database
        state(session, ADMIN.settings())
        other = session.execute(
            text("SELECT code FROM grids WHERE community_code = :c AND code <> :g ORDER BY code LIMIT 1"),
            {"c": COMMUNITY, "g": grid},
        ).scalar_one()
        session.execute(text(f"UPDATE {LAYER} SET grid_code = :o WHERE id = :i"), {"o": other, "i": created["id"]})
        session.commit()
    findings = client.get("/api/checks", params={"scope": COMMUNITY, "rules": "within"}).json()["findings"]
    assert any("W0201" in f["codes"] for f in findings), findings


def test_the_map_page_and_the_print_carry_it(client: TestClient, tmp_path: Path) -> None:
    page = client.get("/").text
    assert LAYER in page and json.dumps("水井")[1:-1] in page  # its label, as the page's configuration holds it
    asked = {"scope": COMMUNITY, "size": "A4", "format": "pdf", "layers": f"divisions,grids,{LAYER}"}
    printed = client.get("/api/print", params=asked)
    assert printed.status_code == 200, printed.text[:300]
    pdf = tmp_path / "wall.pdf"
    pdf.write_bytes(printed.content)
    words = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert "水井" in words and "干涸" in words  # in the legend, with the values drawn
