"""Vector tiles: decodable MVT with the styled properties, ETag, cache invalidated on edit, empty tiles fast."""

from __future__ import annotations

import functools
import math

import mapbox_vector_tile
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from api.routes.tiles import generation_reader
from layers import generations
from tests.accounts import ANY_VERSION
from tests.samples import sample


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    n = 2**z
    y = (1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n
    return z, int((lon + 180) / 360 * n), int(y)


@pytest.fixture
def client(client: TestClient, session: Session) -> TestClient:
    """The app, reading layer generations in the test's transaction, which never commits.

    Generations are raised as each statement ends rather than at the commit there will not be.
    """
    session.execute(text("SET CONSTRAINTS layer_generation_raise IMMEDIATE"))
    session.commit()
    client.app.dependency_overrides[generation_reader] = lambda: functools.partial(generations.current, session)
    return client


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

    real = tiles.tile_statement
    never = "a tile outside the extent must not be queried"
    assert client.get("/tiles/parcels.json").status_code == 200  # the map reads the extent first
    monkeypatch.setattr(tiles, "tile_statement", lambda *a: pytest.fail(never))
    far = client.get("/tiles/parcels/12/0/0.pbf")  # nowhere near the data: no tile query at all
    assert far.status_code == 204 and far.content == b""
    z, x, y = tile_of(121.5, 37.5, 12)  # another tile outside the extent
    assert client.get(f"/tiles/parcels/{z}/{x}/{y}.pbf").status_code == 204
    monkeypatch.setattr(tiles, "tile_statement", real)
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
    assert (
        client.put(f"/api/layers/parcels/features/{parcel['id']}", json=edited, headers=ANY_VERSION).status_code == 200
    )
    again = client.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 200 and again.headers["etag"] != etag
    props = mapbox_vector_tile.decode(again.content)["parcels"]["features"][0]["properties"]
    assert props["use_status"] == "出租"


def test_bad_tiles_and_the_tilejson(client: TestClient, parcel: dict) -> None:
    bad = client.get("/tiles/parcels/13/9000/0.pbf")
    assert bad.status_code == 422 and bad.json()["code"] == "tile_invalid"
    low = client.get("/tiles/parcels/3/6/3.pbf")  # a z3 tile would hold every parcel of a county: not drawn
    assert low.status_code == 404 and low.json()["code"] == "tile_below_minzoom"
    assert client.get("/tiles/parcels.json").json()["minzoom"] == 12
    assert client.get("/tiles/nope/1/0/0.pbf").json()["code"] == "layer_not_found"
    doc = client.get("/tiles/parcels.json").json()
    assert doc["tilejson"] == "3.0.0" and doc["tiles"][0].endswith("/tiles/parcels/{z}/{x}/{y}.pbf")
    assert set(doc["vector_layers"][0]["fields"]) == {"id", "code", "name", "use_status"}
    west, south, east, north = doc["bounds"]
    lon, lat = parcel["geometry"]["coordinates"][0][0][0]
    assert west <= lon <= east and south <= lat <= north


def features_of(client: TestClient, url: str, **params: str) -> list[dict]:
    response = client.get(url, params=params)
    if response.status_code == 204:
        return []
    assert response.status_code == 200, response.text
    layers = mapbox_vector_tile.decode(response.content)
    return list(layers["parcels"]["features"]) if "parcels" in layers else []


def test_the_map_filter_narrows_tiles_as_it_narrows_the_statistics(client: TestClient, session) -> None:
    from layers import demo

    demo.load(session)
    session.flush()
    listed = client.get("/api/layers/parcels/features", params={"limit": 10000}).json()["features"]
    idle = next(f for f in listed if f["properties"]["use_status"] == "闲置")
    lon, lat = idle["geometry"]["coordinates"][0][0][0]
    url = "/tiles/parcels/{}/{}/{}.pbf".format(*tile_of(lon, lat, 15))
    every = features_of(client, url)
    only_idle = features_of(client, url, status="闲置")
    assert idle["id"] in {f["id"] for f in only_idle}
    assert 0 < len(only_idle) < len(every)
    assert {f["properties"]["use_status"] for f in only_idle} == {"闲置"}
    by_id = {f["id"]: f["properties"] for f in listed}
    homes = features_of(client, url, land_use="07")
    assert homes and all(by_id[f["id"]]["land_use_code"].startswith("07") for f in homes)
    assert {f["id"] for f in homes} == {f["id"] for f in every if by_id[f["id"]]["land_use_code"].startswith("07")}
    community = idle["properties"]["community_code"]
    scoped = features_of(client, url, scope=community, ownership=idle["properties"]["ownership"])
    assert idle["id"] in {f["id"] for f in scoped}
    assert all(
        by_id[f["id"]]["community_code"] == community and by_id[f["id"]]["ownership"] == idle["properties"]["ownership"]
        for f in scoped
    )
    assert features_of(client, url, status="-") == []  # nothing ticked: nothing drawn
    # the filtered tile is cached apart from the whole one
    assert len(features_of(client, url)) == len(every)


def test_a_filter_a_layer_cannot_take_is_refused(client: TestClient, parcel: dict) -> None:
    lon, lat = parcel["geometry"]["coordinates"][0][0][0]
    z, x, y = tile_of(lon, lat, 15)
    refused = client.get(f"/tiles/grids/{z}/{x}/{y}.pbf", params={"ownership": "集体"})
    assert refused.status_code == 422 and refused.json()["code"] == "filter_invalid"
    assert client.get(f"/tiles/parcels/{z}/{x}/{y}.pbf", params={"idle_since_before": "yesterday"}).status_code == 422


def test_a_write_during_a_render_leaves_no_stale_tile(
    client: TestClient, session: Session, parcel: dict, monkeypatch
) -> None:
    from api.routes import tiles as route

    lon, lat = parcel["geometry"]["coordinates"][0][0][0]
    url = "/tiles/parcels/{}/{}/{}.pbf".format(*tile_of(lon + 0.0005, lat + 0.0004, 16))
    client.get("/tiles/parcels.json")  # the extent is known
    renders: list[int] = []
    real = route.render_tile

    def render_then_someone_writes(session, layer, *args):  # type: ignore[no-untyped-def]
        data = real(session, layer, *args)
        renders.append(len(data))
        if len(renders) == 1:
            session.execute(text("UPDATE parcels SET name = name || '改'"))  # plain SQL while the tile was rendered
        return data

    monkeypatch.setattr(route, "render_tile", render_then_someone_writes)
    assert client.get(url).status_code == 200
    assert client.get(url).status_code == 200
    assert len(renders) == 2  # the tile rendered before the edit was not served again
    assert client.get(url).status_code == 200
    assert len(renders) == 2  # the one rendered after it is


def test_land_use_prefixes_are_checked(client: TestClient, parcel: dict) -> None:
    lon, lat = parcel["geometry"]["coordinates"][0][0][0]
    z, x, y = tile_of(lon, lat, 15)
    for bad in ("_", "07%", "0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20"):
        response = client.get(f"/tiles/parcels/{z}/{x}/{y}.pbf", params={"land_use": bad})
        assert response.status_code == 422 and response.json()["code"] == "filter_invalid", bad
    assert client.get("/api/layers/parcels/stats", params={"land_use": "_"}).json()["code"] == "filter_invalid"


def test_if_none_match_compares_weakly_as_http_says(client: TestClient, parcel: dict) -> None:
    """A proxy that gzips the tile (nginx) hands the client `W/"…"`; that form must revalidate too."""
    lon, lat = parcel["geometry"]["coordinates"][0][0][0]
    url = "/tiles/parcels/{}/{}/{}.pbf".format(*tile_of(lon + 0.0005, lat + 0.0004, 17))
    etag = client.get(url).headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    for sent in (f"W/{etag}", f'"other", {etag}', f'W/"other" , W/{etag}', "*"):
        answer = client.get(url, headers={"If-None-Match": sent})
        assert answer.status_code == 304, sent
        assert answer.headers["etag"] == etag and answer.content == b""
    for sent in ('"other"', 'W/"other"', etag[:-2] + '"', f"{etag}x"):
        assert client.get(url, headers={"If-None-Match": sent}).status_code == 200, sent
