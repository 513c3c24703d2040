"""Vector tiles: decodable MVT with the styled properties, ETag, cache invalidated on edit, empty tiles fast."""

from __future__ import annotations

import math

import mapbox_vector_tile
import pytest
from fastapi.testclient import TestClient

from tests.samples import sample


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    n = 2**z
    y = (1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n
    return z, int((lon + 180) / 360 * n), int(y)


@pytest.fixture
def parcel(client: TestClient) -> dict:
    for layer in ("divisions", "grids", "parcels"):
        response = client.post(f"/api/layers/{layer}/features", json=sample(layer))
        assert response.status_code == 201, response.text
    created: dict = response.json()
    return created


def test_a_tile_holds_the_parcel_with_what_styling_and_popups_need(client: TestClient, parcel: dict) -> None:
    lon, lat = parcel["geometry"]["coordinates"][0][0][0]
    z, x, y = tile_of(lon + 0.0005, lat + 0.0004, 16)
    response = client.get(f"/tiles/parcels/{z}/{x}/{y}.pbf")
    assert response.status_code == 200 and response.headers["content-type"] == "application/vnd.mapbox-vector-tile"
    decoded = mapbox_vector_tile.decode(response.content)
    features = decoded["parcels"]["features"]
    assert len(features) == 1
    assert features[0]["id"] == parcel["id"]
    props = features[0]["properties"]
    assert props == {"code": parcel["properties"]["code"], "name": "南疃东地块", "use_status": "闲置"}
    assert features[0]["geometry"]["type"] in ("Polygon", "MultiPolygon")
    assert decoded["parcels"]["extent"] == 4096


def test_an_empty_tile_is_answered_without_content(
    client: TestClient, parcel: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from layers import tiles

    real = tiles._sql
    monkeypatch.setattr(tiles, "_sql", lambda *a: pytest.fail("a tile outside the extent must not be queried"))
    far = client.get("/tiles/parcels/10/0/0.pbf")  # nowhere near the data: no tile query at all
    assert far.status_code == 204 and far.content == b""
    z, x, y = tile_of(121.5, 37.5, 12)  # another tile outside the extent
    assert client.get(f"/tiles/parcels/{z}/{x}/{y}.pbf").status_code == 204
    monkeypatch.setattr(tiles, "_sql", real)
    assert client.get("/tiles/shops/14/13670/6250.pbf").status_code == 204  # a layer with nothing in it


def test_etag_revalidation_and_the_cache_follows_an_edit(client: TestClient, parcel: dict) -> None:
    lon, lat = parcel["geometry"]["coordinates"][0][0][0]
    url = "/tiles/parcels/{}/{}/{}.pbf".format(*tile_of(lon + 0.0005, lat + 0.0004, 17))
    first = client.get(url)
    etag = first.headers["etag"]
    assert client.get(url, headers={"If-None-Match": etag}).status_code == 304
    edited = dict(parcel, properties={**parcel["properties"], "use_status": "出租"})
    edited["properties"] = {
        k: v for k, v in edited["properties"].items() if k not in ("area_m2", "area_mu", "updated_at")
    }
    assert client.put(f"/api/layers/parcels/features/{parcel['id']}", json=edited).status_code == 200
    again = client.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 200 and again.headers["etag"] != etag
    props = mapbox_vector_tile.decode(again.content)["parcels"]["features"][0]["properties"]
    assert props["use_status"] == "出租"


def test_bad_tiles_and_the_tilejson(client: TestClient, parcel: dict) -> None:
    bad = client.get("/tiles/parcels/3/8/0.pbf")
    assert bad.status_code == 422 and bad.json()["code"] == "tile_invalid"
    assert client.get("/tiles/nope/1/0/0.pbf").json()["code"] == "layer_not_found"
    doc = client.get("/tiles/parcels.json").json()
    assert doc["tilejson"] == "3.0.0" and doc["tiles"][0].endswith("/tiles/parcels/{z}/{x}/{y}.pbf")
    assert set(doc["vector_layers"][0]["fields"]) == {"id", "code", "name", "use_status"}
    west, south, east, north = doc["bounds"]
    lon, lat = parcel["geometry"]["coordinates"][0][0][0]
    assert west <= lon <= east and south <= lat <= north
