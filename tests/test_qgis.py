"""The QGIS project: a .qgz holding a .qgs with one layer per declaration, its datasources, colours and view.

QGIS itself is not installed here: the project is checked as XML against what it must say, and
every URL it names is asked of the app.
"""

from __future__ import annotations

import functools
import io
import zipfile
from typing import Any
from urllib.parse import unquote, urlsplit
from xml.etree import ElementTree as ET

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from api.routes.tiles import generation_reader
from layers import generations
from layers.base import REGISTRY
from tests.samples import X0, Y0, sample
from tests.test_ogc_tiles import tile_of


@pytest.fixture
def client(client: TestClient, session: Session) -> TestClient:
    session.execute(text("SET CONSTRAINTS layer_generation_raise IMMEDIATE"))
    session.commit()
    client.app.dependency_overrides[generation_reader] = lambda: functools.partial(generations.current, session)
    for layer in ("divisions", "grids", "parcels", "zones"):
        response = client.post(f"/api/layers/{layer}/features", json=sample(layer))
        assert response.status_code == 201, response.text
    return client


def _project(client: TestClient, **params: str) -> ET.Element:
    answer = client.get("/api/qgis/project.qgz", params=params)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/vnd.qgis.qgz"
    assert "filename*=UTF-8''" in answer.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(answer.content)) as zf:
        (name,) = zf.namelist()
        assert name.endswith(".qgs") and "/" not in name
        body = zf.read(name)
    assert body.startswith(b"<!DOCTYPE qgis")
    return ET.fromstring(body)


def _source(datasource: str) -> dict[str, str]:
    """Return the key='value' pairs of an OAPIF datasource."""
    out = {}
    for part in datasource.split("' "):
        key, _, value = part.partition("=")
        out[key.strip()] = value.strip("'")
    return out


def _rgb(value: str) -> str:
    r, g, b, _ = (int(v) for v in value.split(","))
    return f"#{r:02x}{g:02x}{b:02x}"


def test_the_project_has_a_layer_per_declaration_with_its_datasource_and_colours(client: TestClient) -> None:
    root = _project(client)
    base = client.app.state.settings.public_url.rstrip("/")
    assert root.tag == "qgis" and root.find("projectCrs/spatialrefsys/authid").text == "EPSG:4490"  # type: ignore[union-attr]
    layers = root.findall("projectlayers/maplayer")
    features = {ml.findtext("id"): ml for ml in layers if ml.findtext("provider") == "OAPIF"}
    assert len(features) == len(REGISTRY)
    for layer in REGISTRY.values():
        ml = features[f"guatu_features_{layer.id}"]
        assert ml.get("type") == "vector"
        source = _source(ml.findtext("datasource") or "")
        assert source["url"] == f"{base}/ogc" and source["typename"] == layer.id
        assert ml.findtext("layername") == f"{layer.zh} {layer.en}"
        renderer = ml.find("renderer-v2")
        assert renderer is not None
        if layer.style.by and layer.style.colors:
            assert renderer.get("type") == "categorizedSymbol" and renderer.get("attr") == layer.style.by
            symbols = {s.get("name"): s for s in renderer.findall("symbols/symbol")}
            shown = {}
            for category in renderer.findall("categories/category"):
                if category.get("value"):
                    options = {
                        o.get("name"): o.get("value")
                        for o in symbols[category.get("symbol")].findall("layer/Option/Option")
                    }
                    marker = symbols[category.get("symbol")].get("type") == "marker"
                    shown[category.get("value")] = _rgb(options["color"] if marker else options["outline_color"])
                    if category.get("value") == layer.style.emphasis:
                        assert float(options["outline_width"]) > layer.style.weight  # idle stands out
            assert shown == layer.style.colors
    tiled = {ml.findtext("id"): ml for ml in layers if ml.get("type") == "vector-tile"}
    assert set(tiled) == {f"guatu_tiles_{x.id}" for x in REGISTRY.values() if x.style.tiled}
    tree = {node.get("id"): node for node in root.iter("layer-tree-layer")}
    assert set(tree) == set(features) | set(tiled)
    assert tree["guatu_features_parcels"].get("checked") == "Qt::Unchecked"  # its tiles are shown instead
    extent = [float(root.findtext(f"mapcanvas/extent/{k}") or "nan") for k in ("xmin", "ymin", "xmax", "ymax")]
    assert extent[0] <= X0 <= extent[2] and extent[1] <= Y0 <= extent[3]  # the initial view is where the data is
    assert extent[2] - extent[0] < 1  # a street, not China


def test_the_urls_the_project_names_answer(client: TestClient) -> None:
    root = _project(client)
    tiles = next(ml for ml in root.findall("projectlayers/maplayer") if ml.findtext("id") == "guatu_tiles_parcels")
    parts: dict[str, Any] = dict(p.split("=", 1) for p in (tiles.findtext("datasource") or "").split("&"))
    assert parts["type"] == "xyz" and int(parts["zmin"]) == REGISTRY["parcels"].tile_min_zoom
    url = unquote(parts["url"])
    z, x, y = tile_of(X0 + 0.0005, Y0 + 0.0004, 16)
    tile = client.get(urlsplit(url.replace("{z}", str(z)).replace("{x}", str(x)).replace("{y}", str(y))).path)
    assert tile.status_code == 200 and tile.headers["content-type"] == "application/vnd.mapbox-vector-tile"
    style = client.get(urlsplit(unquote(parts["styleUrl"])).path)
    assert style.status_code == 200 and style.json()["version"] == 8


def test_an_auth_configuration_is_named_in_every_datasource_and_checked(client: TestClient) -> None:
    root = _project(client, authcfg="ab12cd3")
    for ml in root.findall("projectlayers/maplayer"):
        assert "authcfg='ab12cd3'" in (ml.findtext("datasource") or "") or "authcfg=ab12cd3&" in (
            ml.findtext("datasource") or ""
        )
    for bad in ("x' url='http://evil", "abc", "ab12cd3&"):
        refused = client.get("/api/qgis/project.qgz", params={"authcfg": bad})
        assert refused.status_code == 422, bad
    assert client.get("/api/qgis/project.qgz", headers={"Authorization": ""}).status_code == 401
