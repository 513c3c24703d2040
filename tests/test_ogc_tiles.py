"""OGC API – Tiles metadata and the style: documents, links that answer, GDAL reading a tile from the template."""

from __future__ import annotations

import functools
import math
import os
import subprocess
from collections.abc import Iterator
from urllib.parse import urlsplit

import mapbox_vector_tile
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from api.routes.ogc_tiles import TILES_CONFORMANCE, tiles_links
from api.routes.tiles import generation_reader
from layers import generations
from layers.base import REGISTRY
from layers.ogc_tiles import color_expression
from layers.tiles import MAX_ZOOM, tile_properties
from tests.browser import live_server, sign_in_as
from tests.conftest import act_as_admin, demo_database
from tests.samples import X0, Y0, sample

PARCELS = REGISTRY["parcels"]


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    n = 2**z
    y = (1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n
    return z, int((lon + 180) / 360 * n), int(y)


def _path(href: str) -> str:
    """Return the path and query of HREF (the app's public URL cut off): what the test client asks."""
    parts = urlsplit(href)
    return parts.path + (f"?{parts.query}" if parts.query else "")


@pytest.fixture
def client(client: TestClient, session: Session) -> TestClient:
    session.execute(text("SET CONSTRAINTS layer_generation_raise IMMEDIATE"))
    session.commit()
    client.app.dependency_overrides[generation_reader] = lambda: functools.partial(generations.current, session)
    for layer in ("divisions", "grids", "parcels"):
        response = client.post(f"/api/layers/{layer}/features", json=sample(layer))
        assert response.status_code == 201, response.text
    return client


def test_the_tile_matrix_set_is_web_mercator_quad(client: TestClient) -> None:
    listed = client.get("/ogc/tileMatrixSets", headers={"Authorization": ""})  # holds no data: public
    assert listed.status_code == 200
    (entry,) = listed.json()["tileMatrixSets"]
    tms = client.get(_path(entry["links"][0]["href"])).json()
    assert tms["id"] == "WebMercatorQuad" and tms["crs"].endswith("EPSG/0/3857")
    zero, fourteen = tms["tileMatrices"][0], tms["tileMatrices"][14]
    assert math.isclose(zero["cellSize"], 156543.03392804097, rel_tol=1e-12)  # 2πR / 256
    assert math.isclose(zero["scaleDenominator"], 559082264.0287178, rel_tol=1e-9)
    assert zero["pointOfOrigin"] == [-20037508.342789244, 20037508.342789244]
    assert fourteen["matrixWidth"] == fourteen["matrixHeight"] == 2**14
    assert len(tms["tileMatrices"]) == MAX_ZOOM + 1
    assert client.get("/ogc/tileMatrixSets/WorldCRS84Quad").status_code == 404


def test_a_tileset_names_its_fields_zooms_and_a_template_that_answers(client: TestClient) -> None:
    listed = client.get("/ogc/collections/parcels/tiles")
    assert listed.status_code == 200
    (summary,) = listed.json()["tilesets"]
    assert summary["dataType"] == "vector" and summary["tileMatrixSetURI"].endswith("/WebMercatorQuad")
    self_link = next(link["href"] for link in summary["links"] if link["rel"] == "self")
    tileset = client.get(_path(self_link)).json()
    (layer,) = tileset["layers"]
    assert layer["id"] == "parcels" and layer["minTileMatrix"] == str(PARCELS.tile_min_zoom)
    assert layer["maxTileMatrix"] == str(MAX_ZOOM)
    assert set(layer["propertiesSchema"]["properties"]) == {"id", *tile_properties(PARCELS)}
    z, x, y = tile_of(X0 + 0.0005, Y0 + 0.0004, 14)
    limits = next(limit for limit in tileset["tileMatrixSetLimits"] if limit["tileMatrix"] == "14")
    assert limits["minTileCol"] <= x <= limits["maxTileCol"] and limits["minTileRow"] <= y <= limits["maxTileRow"]
    template = next(link for link in tileset["links"] if link["rel"] == "item")
    assert template["type"] == "application/vnd.mapbox-vector-tile" and template["templated"]
    url = template["href"].replace("{tileMatrix}", str(z)).replace("{tileCol}", str(x)).replace("{tileRow}", str(y))
    tile = client.get(_path(url))
    assert tile.status_code == 200, tile.text
    decoded = mapbox_vector_tile.decode(tile.content)
    (feature,) = decoded["parcels"]["features"]
    assert set(feature["properties"]) <= set(layer["propertiesSchema"]["properties"])
    # the same tile at the OGC path (tileMatrix/tileRow/tileCol: row before column)
    ogc = client.get(f"/ogc/collections/parcels/tiles/WebMercatorQuad/{z}/{y}/{x}")
    assert ogc.status_code == 200 and ogc.content == tile.content
    beyond = client.get(f"/ogc/collections/parcels/tiles/WebMercatorQuad/{z}/{2**z}/{x}")
    assert beyond.status_code == 422 and beyond.json()["code"]  # a row past the matrix: refused, said why
    assert client.get("/ogc/collections/nope/tiles").status_code == 404
    assert client.get("/ogc/collections/parcels/tiles/GoogleCRS84Quad").status_code == 404
    assert client.get("/ogc/collections/parcels/tiles", headers={"Authorization": ""}).status_code == 401


def test_the_collection_links_and_conformance_answer(client: TestClient) -> None:
    assert all(c.startswith("http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/") for c in TILES_CONFORMANCE)
    for layer in REGISTRY.values():
        for link in tiles_links("http://testserver", layer):
            answer = client.get(_path(link["href"]))
            assert answer.status_code == 200, (link, answer.text)
            assert answer.headers["content-type"].startswith(link["type"])


def test_the_style_draws_each_layer_in_its_declared_colours(client: TestClient) -> None:
    answer = client.get("/ogc/styles/guatu", headers={"Authorization": ""})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/vnd.mapbox.style+json")
    style = answer.json()
    assert style["version"] == 8
    drawn = {item["metadata"]["guatu:layer"] for item in style["layers"]}
    assert drawn == set(REGISTRY)
    for item in style["layers"]:
        layer = REGISTRY[item["metadata"]["guatu:layer"]]
        source = style["sources"][item["source"]]
        assert item["source-layer"] == layer.id
        assert source["tiles"][0].endswith(f"/tiles/{layer.id}/{{z}}/{{x}}/{{y}}.pbf")
        assert source["minzoom"] == layer.tile_min_zoom and item["minzoom"] == layer.style.min_zoom
        paint = item["paint"]
        if item["type"] == "fill":
            assert paint["fill-color"] == color_expression(layer)
            declared = dict(zip(paint["fill-color"][2:-1:2], paint["fill-color"][3:-1:2], strict=True))
            assert declared == layer.style.colors and paint["fill-color"][-1] == layer.style.default
        if item["id"].endswith("-emphasis"):
            assert item["filter"][-1] == ["==", ["get", layer.style.by], layer.style.emphasis]
            assert paint["line-width"] > layer.style.weight
    parcels = {item["id"] for item in style["layers"] if item["metadata"]["guatu:layer"] == "parcels"}
    assert parcels == {"parcels-fill", "parcels-line", "parcels-emphasis"}  # idle stands out
    shops = {item["type"] for item in style["layers"] if item["metadata"]["guatu:layer"] == "shops"}
    assert shops == {"fill", "line", "circle"}  # points and polygons both drawn
    one = client.get("/ogc/collections/parcels/styles/guatu").json()
    assert list(one["sources"]) == ["guatu-parcels"]


# ---------------------------------------------------------------- GDAL against a live server


@pytest.fixture(scope="module")
def demo_engine() -> Iterator[Engine]:
    with demo_database("guatu_test_ogc_tiles") as engine:
        yield engine


def test_gdal_reads_a_tile_from_the_tileset_template(demo_engine: Engine, tmp_path: object) -> None:
    """Debian's GDAL 3.6 MVT driver opens a tile whose URL comes from the tileset's template."""
    import httpx

    token = sign_in_as(demo_engine)
    with demo_engine.begin() as conn:
        act_as_admin(conn)
        lon, lat, count = conn.execute(
            text(
                "SELECT ST_X(ST_PointOnSurface(geom)), ST_Y(ST_PointOnSurface(geom)), "
                f"(SELECT count(*) FROM {PARCELS.table}) FROM {PARCELS.table} LIMIT 1"
            )
        ).one()
    assert count > 0
    with live_server(demo_engine) as base:
        auth = {"Authorization": f"Bearer {token}"}
        tileset = httpx.get(f"{base}/ogc/collections/parcels/tiles/WebMercatorQuad", headers=auth).json()
        template = next(link["href"] for link in tileset["links"] if link["rel"] == "item")
        z, x, y = tile_of(lon, lat, 15)
        url = template.replace("{tileMatrix}", str(z)).replace("{tileCol}", str(x)).replace("{tileRow}", str(y))
        url = base + urlsplit(url).path  # the live server's own port
        env = os.environ | {"GDAL_HTTP_HEADERS": f"Authorization: Bearer {token}", "CPL_DEBUG": "OFF"}
        done = subprocess.run(["ogrinfo", "-ro", "-al", "-so", f"MVT:{url}"], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        assert "Layer name: parcels" in done.stdout and "use_status: String" in done.stdout
        assert int(done.stdout.split("Feature Count: ")[1].split()[0]) > 0
        unsigned = subprocess.run(
            ["ogrinfo", "-ro", "-al", "-so", f"MVT:{url}"],
            capture_output=True,
            text=True,
            env={k: v for k, v in env.items() if k != "GDAL_HTTP_HEADERS"},
        )
        assert unsigned.returncode != 0  # no token, no tile
