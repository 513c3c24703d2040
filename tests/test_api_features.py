"""The API against real PostGIS: CRUD per layer, SRID 4490, geodesic area, clear errors."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, ProgrammingError
from sqlalchemy.orm import Session

from pyproj import Geod
from shapely.geometry import box, shape

from layers.base import REGISTRY
from spatial.db import state
from spatial.geometry import mu_from_m2
from tests.accounts import bearer
from tests.samples import COMMUNITY, GRID, X0, Y0, edit, polygon, sample

GEOJSON = "application/geo+json"


def post(client: TestClient, layer: str, body: object) -> dict:
    response = client.post(f"/api/layers/{layer}/features", json=body)
    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == GEOJSON
    return response.json()


def assert_error(response, status: int, code: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    assert body["message"]
    if field:
        assert body["where"].get("field") == field, body
    return body


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize("layer_id", list(REGISTRY))
def test_crud_round_trip(client: TestClient, session: Session, layer_id: str) -> None:
    sent = sample(layer_id)
    created = post(client, layer_id, sent)
    fid = created["id"]
    assert client.get(f"/api/layers/{layer_id}/features/{fid}").json() == created
    for name, value in sent["properties"].items():
        assert created["properties"][name] == value, name  # an administrator sees personal fields in full
    assert shape(created["geometry"]).hausdorff_distance(shape(sent["geometry"])) < 1e-9  # stored to 9 decimals

    srid = session.execute(text(f"SELECT ST_SRID(geom) FROM {layer_id} WHERE id = :i"), {"i": fid}).scalar()
    assert srid == 4490

    name, value = edit(layer_id)
    changed = sample(layer_id)
    changed["properties"][name] = value
    changed["properties"] = {n: changed["properties"].get(n) for n in REGISTRY[layer_id].field_names}  # PUT: all
    if changed["geometry"]["type"] == "Polygon":
        ring = changed["geometry"]["coordinates"][0]
        changed["geometry"]["coordinates"][0] = [[x + 0.00001, y] for x, y in ring]
    else:
        changed["geometry"]["coordinates"][0] += 0.00001
    replaced = client.put(f"/api/layers/{layer_id}/features/{fid}", json=changed, headers={"If-Match": '"1"'})
    assert replaced.status_code == 200, replaced.text
    again = client.get(f"/api/layers/{layer_id}/features/{fid}").json()
    assert again["properties"][name] == value
    assert again["geometry"]["coordinates"] != created["geometry"]["coordinates"]

    listed = client.get(
        f"/api/layers/{layer_id}/features", params={"bbox": f"{X0 - 0.02},{Y0 - 0.02},{X0 + 0.02},{Y0 + 0.02}"}
    )
    assert listed.headers["content-type"] == GEOJSON
    assert [f["id"] for f in listed.json()["features"]] == [fid]
    outside = client.get(f"/api/layers/{layer_id}/features", params={"bbox": "100,20,100.1,20.1"}).json()
    assert outside["features"] == [] and outside["numberMatched"] == 0

    assert client.delete(f"/api/layers/{layer_id}/features/{fid}", headers={"If-Match": '"2"'}).status_code == 204
    assert_error(client.get(f"/api/layers/{layer_id}/features/{fid}"), 404, "feature_not_found")
    assert_error(
        client.delete(f"/api/layers/{layer_id}/features/{fid}", headers={"If-Match": "*"}), 404, "feature_not_found"
    )


def test_geodesic_area_of_one_hectare(client: TestClient) -> None:
    # ~100 m x 100 m near Chengyang (120.396 E, 36.307 N)
    square = box(X0, Y0, X0 + 0.0011151, Y0 + 0.00090131)
    expected = abs(Geod(ellps="GRS80").geometry_area_perimeter(square)[0])
    assert 9_900 < expected < 10_100
    parcel = sample("parcels")
    parcel["geometry"] = polygon(*square.bounds)
    props = post(client, "parcels", parcel)["properties"]
    assert abs(props["area_m2"] - expected) / expected < 1e-4
    assert props["area_mu"] == mu_from_m2(props["area_m2"])  # 1 亩 = 2000/3 m², exactly
    assert round(props["area_mu"], 2) == round(expected * 3 / 2000, 2)


def test_winding_order_is_not_a_reason_to_reject(client: TestClient) -> None:
    parcel = sample("parcels")
    parcel["geometry"]["coordinates"][0].reverse()  # clockwise shell
    props = post(client, "parcels", parcel)["properties"]
    assert props["area_m2"] > 0


def test_invalid_geometry_is_rejected_with_its_location(client: TestClient) -> None:
    parcel = sample("parcels")
    parcel["geometry"] = {
        "type": "Polygon",
        "coordinates": [[[X0, Y0], [X0 + 0.001, Y0 + 0.001], [X0 + 0.001, Y0], [X0, Y0 + 0.001], [X0, Y0]]],
    }
    body = assert_error(client.post("/api/layers/parcels/features", json=parcel), 422, "self_intersection", "geometry")
    assert body["where"]["location"] == pytest.approx([X0 + 0.0005, Y0 + 0.0005])


def test_wrong_geometry_type_is_rejected(client: TestClient) -> None:
    parcel = sample("parcels")
    parcel["geometry"] = {"type": "Point", "coordinates": [X0, Y0]}
    assert_error(client.post("/api/layers/parcels/features", json=parcel), 422, "geometry_type_not_allowed", "geometry")
    shop = sample("shops")
    shop["geometry"] = {"type": "LineString", "coordinates": [[X0, Y0], [X0 + 0.001, Y0]]}
    assert_error(client.post("/api/layers/shops/features", json=shop), 422, "geometry_type_not_allowed", "geometry")


def test_unknown_land_use_code_is_rejected(client: TestClient) -> None:
    parcel = sample("parcels")
    parcel["properties"]["land_use_code"] = "0199"
    assert_error(
        client.post("/api/layers/parcels/features", json=parcel),
        422,
        "unknown_land_use_code",
        "properties.land_use_code",
    )


@pytest.mark.parametrize("code", ["0702", "05H1", "0301K", "08H2A", "1201"])
def test_both_code_lists_are_accepted(client: TestClient, code: str) -> None:
    parcel = sample("parcels")
    parcel["properties"]["land_use_code"] = code
    assert post(client, "parcels", parcel)["properties"]["land_use_code"] == code


@pytest.mark.parametrize(
    ("mutate", "status", "code", "field"),
    [
        (lambda f: f["properties"].pop("ownership"), 422, "required", "properties.ownership"),
        (lambda f: f["properties"].update(ownership="私有"), 422, "enum", "properties.ownership"),
        (lambda f: f["properties"].update(code="ABC"), 422, "code_format", "properties.code"),
        (lambda f: f["properties"].update(idle_since="去年"), 422, "type", "properties.idle_since"),
        (lambda f: f["properties"].update(colour="red"), 422, "unknown_field", "properties.colour"),
        (lambda f: f.update(geometry=None), 422, "geometry_missing", "geometry"),
        (
            lambda f: f["geometry"].update(coordinates=[[[X0, Y0], [X0 + 1e-3, Y0], [X0, Y0]]]),
            422,
            "ring_too_short",
            "geometry",
        ),
        (
            lambda f: f["geometry"].update(coordinates=[[[X0, Y0], [X0 + 1e-3, Y0], [X0, Y0 + 1e-3], [X0, Y0 + 2e-3]]]),
            422,
            "ring_not_closed",
            "geometry",
        ),
        (
            lambda f: f["geometry"].update(
                coordinates=[[[535566, 4019680], [535666, 4019680], [535666, 4019780], [535566, 4019680]]]
            ),
            422,
            "coordinate_out_of_range",
            "geometry",
        ),
        (lambda f: f.update(type="FeatureCollection"), 400, "not_a_feature", "type"),
    ],
)
def test_bad_input_gets_a_clear_error(client: TestClient, mutate, status: int, code: str, field: str) -> None:
    parcel = sample("parcels")
    mutate(parcel)
    assert_error(client.post("/api/layers/parcels/features", json=parcel), status, code, field)


def test_every_problem_is_listed(client: TestClient) -> None:
    parcel = sample("parcels")
    parcel["properties"].update(ownership="私有", use_status=None)
    parcel["geometry"] = {"type": "Point", "coordinates": [X0, Y0]}
    body = client.post("/api/layers/parcels/features", json=parcel).json()
    assert {e["code"] for e in body["errors"]} == {"enum", "required", "geometry_type_not_allowed"}


def test_malformed_bodies_never_500(client: TestClient) -> None:
    url = "/api/layers/parcels/features"
    sent = {"Content-Type": "application/json"}
    body = assert_error(
        client.post(url, content=b'{"type": "Feature",\n "geometry": ', headers=sent), 400, "invalid_json"
    )
    assert body["where"]["location"][0] == 2
    assert_error(client.post(url, content=b"", headers=sent), 400, "body_empty")
    assert_error(client.post(url, content=b"[1, 2]", headers=sent), 400, "not_a_feature")
    assert_error(
        client.post(
            url, json={"type": "Feature", "geometry": {"type": "Polygon", "coordinates": "x"}, "properties": {}}
        ),
        422,
        "required",
    )
    nan = b'{"type":"Feature","geometry":{"type":"Point","coordinates":[NaN,1]},"properties":{}}'
    assert_error(client.post("/api/layers/shops/features", content=nan, headers=sent), 400, "invalid_json")
    assert_error(client.get("/api/layers/parcels/features", params={"bbox": "1,2,3"}), 422, "bbox_invalid", "bbox")
    assert_error(client.get("/api/layers/parcels/features", params={"limit": 0}), 422, "parameter_invalid", "limit")
    assert_error(client.get("/api/layers/nope/features"), 404, "layer_not_found")
    assert_error(client.get("/api/layers/parcels/features/abc"), 422, "parameter_invalid")
    assert_error(client.get("/no/such/page"), 404, "not_found")


def test_duplicate_key_is_a_conflict(client: TestClient) -> None:
    post(client, "shops", sample("shops"))
    assert_error(
        client.post("/api/layers/shops/features", json=sample("shops")), 409, "duplicate_key", "properties.code"
    )


def test_codes_follow_the_location(client: TestClient) -> None:
    post(client, "divisions", sample("divisions"))
    post(client, "grids", sample("grids"))
    shop = sample("shops")
    del shop["properties"]["community_code"], shop["properties"]["grid_code"]
    props = post(client, "shops", shop)["properties"]
    assert (props["community_code"], props["grid_code"]) == (COMMUNITY, GRID)

    parcel = sample("parcels")
    parcel["properties"]["grid_code"] = COMMUNITY + "002"
    assert_error(
        client.post("/api/layers/parcels/features", json=parcel), 422, "location_mismatch", "properties.grid_code"
    )


def test_grid_code_must_extend_its_community(client: TestClient) -> None:
    grid = sample("grids")
    grid["properties"]["code"] = "370214001010001"
    assert_error(client.post("/api/layers/grids/features", json=grid), 422, "code_inconsistent", "properties.code")
    grid["properties"]["code"] = COMMUNITY + "0001"
    assert_error(client.post("/api/layers/grids/features", json=grid), 422, "code_format", "properties.code")


BOWTIE = "MULTIPOLYGON(((0 0,1 1,1 0,0 1,0 0)))"
TRIANGLE = "MULTIPOLYGON(((0 0,1 0,1 1,0 0)))"


@pytest.mark.parametrize(
    ("wkt", "srid", "land_use", "ownership", "why"),
    [
        (BOWTIE, 4490, "1201", "集体", "ck_parcels_geom_valid"),
        (TRIANGLE, 4490, "9999", "集体", "ck_parcels_land_use_code_known"),
        (TRIANGLE, 4490, "1201", "私有", "ck_parcels_ownership_enum"),
        (TRIANGLE, 4326, "1201", "集体", "SRID"),
        ("POINT(0 0)", 4490, "1201", "集体", "Geometry type"),
    ],
)
def test_database_constraints_hold_without_the_api(
    session: Session, wkt: str, srid: int, land_use: str, ownership: str, why: str
) -> None:
    statement = text(
        "INSERT INTO parcels (geom, code, land_use_code, ownership, use_status) "
        "VALUES (ST_GeomFromText(:wkt, :srid), '3702140010090100009', :land_use, :ownership, '闲置')"
    )
    with pytest.raises(DBAPIError, match=why), session.begin_nested():
        session.execute(statement, {"wkt": wkt, "srid": srid, "land_use": land_use, "ownership": ownership})


def test_paging_reports_matched_and_returned(client: TestClient) -> None:
    for n in range(3):
        shop = sample("shops")
        shop["properties"]["code"] = COMMUNITY + f"210000{n}"
        post(client, "shops", shop)
    url = "/api/layers/shops/features"
    pages = [client.get(url, params={"limit": 2, "offset": offset}).json() for offset in (0, 2, 5)]
    assert [(p["numberReturned"], p["numberMatched"]) for p in pages] == [(2, 3), (1, 3), (0, 3)]
    ids = [f["id"] for p in pages for f in p["features"]]
    assert len(ids) == len(set(ids)) == 3


def test_layer_catalogue_counts_and_extent(client: TestClient) -> None:
    post(client, "parcels", sample("parcels"))
    layers = {layer["id"]: layer for layer in client.get("/api/layers").json()}
    assert set(layers) == set(REGISTRY)
    parcels = layers["parcels"]
    assert parcels["count"] == 1 and parcels["title"] == {"zh": "地块", "en": "Land parcels"}
    assert parcels["stored_type"] == "MULTIPOLYGON"
    assert parcels["extent"] == pytest.approx([X0, Y0, X0 + 0.001, Y0 + 0.0009])
    assert layers["zones"]["count"] == 0 and layers["zones"]["extent"] is None


def _stored_head(session: Session, fid: int) -> Any:
    """Return the stored household head (the app role cannot read the column: the owner's function shows it)."""
    state(session, {"guatu.role": "admin", "guatu.user": "tests", "guatu.area": ""})
    return session.execute(text("SELECT guatu_shown_zones(:i) ->> 'household_head'"), {"i": fid}).scalar()


def test_personal_data_leaves_masked_and_survives_a_round_trip(
    client: TestClient, session: Session, tokens: dict[str, str]
) -> None:
    for layer_id in ("divisions", "grids"):
        post(client, layer_id, sample(layer_id))
    zone = post(client, "zones", sample("zones"))
    surveyor = bearer(tokens["surveyor9"])  # edits zones in the community, is shown names masked
    shown = client.get(f"/api/layers/zones/features/{zone['id']}", headers=surveyor).json()
    assert shown["properties"]["household_head"] == "李*华"
    listed = client.get("/api/layers/zones/features", headers=surveyor).json()["features"][0]
    assert listed["properties"]["household_head"] == "李*华"
    # An editor sends back what it was shown: the real name is kept, the edit applied.
    shown["properties"]["scope"] = "屋后"
    url = f"/api/layers/zones/features/{zone['id']}"
    answer = client.put(url, json=shown, headers=surveyor | {"If-Match": '"1"'})
    assert answer.status_code == 200, answer.text
    assert _stored_head(session, zone["id"]) == "李明华"
    shown["properties"]["household_head"] = "王小二"
    assert client.put(url, json=shown, headers=surveyor | {"If-Match": '"2"'}).status_code == 200
    assert _stored_head(session, zone["id"]) == "王小二"
    with pytest.raises(ProgrammingError, match="permission denied"):  # the app role itself cannot read the column
        with session.begin_nested():
            session.execute(text("SELECT household_head FROM zones")).all()


SHOP_URL = "/api/layers/shops/features"


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"geometry": {"type": "Polygon", "coordinates": [[1, 2, 3, 4]]}}, "geometry_malformed", "geometry"),
        (
            {"geometry": {"type": "Polygon", "coordinates": [[[120.3, 36.3], 5, [120.3, 36.3]]]}},
            "geometry_malformed",
            "geometry",
        ),
        ({"geometry": {"type": "Point", "coordinates": [[120.3, 36.3]]}}, "geometry_malformed", "geometry"),
        ({"geometry": {"type": "Point", "coordinates": [120.3]}}, "geometry_malformed", "geometry"),
        ({"geometry": {"type": "Point", "coordinates": [120.3, True]}}, "invalid_coordinate", "geometry"),
        ({"geometry": {"type": "MultiPolygon", "coordinates": [[]]}}, "geometry_malformed", "geometry"),
        ({"properties": {"name": "a\u0000b"}}, "invalid_text", "properties.name"),
        ({"properties": {"name": "   "}}, "required", "properties.name"),
        ({"properties": {"floor": True}}, "type", "properties.floor"),
        ({"properties": {"floor": "3"}}, "type", "properties.floor"),
        ({"properties": {"floor": 3_000_000_000}}, "out_of_range", "properties.floor"),
        ({"properties": {"asking_rent": 1e300}}, "out_of_range", "properties.asking_rent"),
        ({"properties": {"idle_since": "2024-02-30"}}, "type", "properties.idle_since"),
        ({"properties": {"code": "３７０２１４００１００１２１０００９９"}}, "fullwidth_digits", "properties.code"),
        ({"properties": {"status": ["闲置"]}}, "enum", "properties.status"),
    ],
)
def test_odd_input_is_refused_clearly(client: TestClient, change: dict, code: str, field: str) -> None:
    shop = sample("shops")
    shop["properties"].update(change.get("properties", {}))
    if "geometry" in change:
        shop["geometry"] = change["geometry"]
    body = assert_error(client.post(SHOP_URL, json=shop), 422, code, field)
    assert len(body["message"]) < 400  # the offending value is quoted, not echoed whole


def test_infinity_and_huge_numbers_never_reach_the_database(client: TestClient) -> None:
    raw = (
        b'{"type":"Feature","geometry":{"type":"Point","coordinates":[120.3,36.3]},'
        b'"properties":{"code":"3702140010092100001","name":"x","ownership":"\xe9\x9b\x86\xe4\xbd\x93",'
        b'"status":"\xe5\x9c\xa8\xe8\x90\xa5","floor_area":1e999}}'
    )
    assert client.post(SHOP_URL, content=raw, headers={"Content-Type": "application/json"}).status_code in (400, 422)
    grid = sample("grids")
    grid["properties"]["households"] = 3_000_000_000
    assert_error(client.post("/api/layers/grids/features", json=grid), 422, "out_of_range", "properties.households")


@pytest.mark.parametrize("path", ["/2147483648", "/0", "/-1"])
def test_out_of_range_ids_are_parameter_errors(client: TestClient, path: str) -> None:
    for method in ("GET", "DELETE"):
        assert_error(client.request(method, SHOP_URL + path), 422, "parameter_invalid", "fid")
    assert_error(client.put(SHOP_URL + path, json=sample("shops")), 422, "parameter_invalid", "fid")
    assert_error(client.get(SHOP_URL, params={"offset": 2**63}), 422, "parameter_invalid", "offset")


def test_oversized_body_is_413(client: TestClient) -> None:
    client.app.state.settings.max_feature_bytes = 1_000
    shop = sample("shops")
    shop["properties"]["owner"] = "x" * 2_000
    assert_error(client.post(SHOP_URL, json=shop), 413, "payload_too_large")


def test_codes_given_for_a_place_outside_the_frame_are_refused(client: TestClient) -> None:
    post(client, "divisions", sample("divisions"))
    post(client, "grids", sample("grids"))
    shop = sample("shops")
    shop["geometry"]["coordinates"] = [116.39, 39.91]  # Beijing, claiming a Chengyang grid
    assert_error(client.post(SHOP_URL, json=shop), 422, "location_outside_frame", "properties.community_code")
    del shop["properties"]["community_code"], shop["properties"]["grid_code"]
    props = post(client, "shops", shop)["properties"]  # outside every unit, no claim: stored, codes empty
    assert props["community_code"] is None and props["grid_code"] is None


def test_a_parcel_over_two_grids_belongs_to_the_larger_share(client: TestClient) -> None:
    post(client, "grids", sample("grids"))  # X0 - D/2 … X0 + D/2
    east = sample("grids")
    east["properties"].update(code=COMMUNITY + "002", name="南疃社区第2网格")
    east["geometry"] = polygon(X0 + 0.005, Y0 - 0.005, X0 + 0.015, Y0 + 0.005)
    post(client, "grids", east)
    parcel = sample("parcels")
    del parcel["properties"]["grid_code"]
    parcel["geometry"] = polygon(X0 + 0.004, Y0, X0 + 0.0075, Y0 + 0.001)  # 1/3 west, 2/3 east
    assert post(client, "parcels", parcel)["properties"]["grid_code"] == COMMUNITY + "002"


def test_retired_grids_are_not_used_for_location(client: TestClient) -> None:
    old = sample("grids")
    old["properties"].update(valid_from="2020-01-01", valid_to="2023-12-31")
    post(client, "grids", old)
    future = sample("grids")
    future["properties"].update(code=COMMUNITY + "002", valid_from="2024-01-01", valid_to="2099-12-31")
    future["geometry"] = polygon(X0 + 0.0005, Y0 + 0.0001, X0 + 0.0015, Y0 + 0.0006)
    post(client, "grids", future)
    shop = sample("shops")
    del shop["properties"]["grid_code"]
    assert post(client, "shops", shop)["properties"]["grid_code"] == COMMUNITY + "002"


@pytest.mark.parametrize(
    ("crs", "accepted"),
    [
        ("EPSG:3857", False),
        ("urn:ogc:def:crs:EPSG::4549", False),
        ("EPSG:4490", True),
        ("urn:ogc:def:crs:OGC:1.3:CRS84", True),
    ],
)
def test_legacy_crs_member_is_honoured_or_refused(client: TestClient, crs: str, accepted: bool) -> None:
    shop = sample("shops")
    shop["crs"] = {"type": "name", "properties": {"name": crs}}
    response = client.post(SHOP_URL, json=shop)
    if accepted:
        assert response.status_code == 201, response.text
    else:
        assert_error(response, 422, "crs_not_supported", "crs")
