"""OGC API – Features (Parts 1–4) with GDAL 3.6 (Debian gdal-bin) as the real client, against a live server.

The demo street is committed in a database of this module's; what GDAL reads is compared with
what PostGIS holds (read as the superuser, past row-level security). Writes through Part 4 are
committed too; every comparison reads the database at its own time.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import psycopg
import pytest

import geopandas
import shapely
from pyproj import Transformer

from layers import ogc
from layers.base import REGISTRY
from layers.ogc_tiles import TILES_CONFORMANCE
from tests.accounts import ANY_VERSION, tokens_for
from tests.browser import live_server
from tests.conftest import admin_url, demo_database, libpq, owner_url

DATABASE = "guatu_test_ogc"
GDAL = shutil.which("ogrinfo")
pytestmark = pytest.mark.skipif(GDAL is None, reason="gdal-bin is not installed")


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, dict[str, str]]]:
    """Yield (base URL, tokens) of a live server on the committed demo street."""
    with demo_database(DATABASE) as eng:
        tokens = tokens_for(owner_url(DATABASE), DATABASE)
        with live_server(eng) as base:
            yield base, tokens


@pytest.fixture(scope="module")
def base(server: tuple[str, dict[str, str]]) -> str:
    return server[0]


@pytest.fixture(scope="module")
def gdal_env(server: tuple[str, dict[str, str]]) -> dict[str, str]:
    """The environment GDAL needs: the admin's token, sent as GDAL ≥ 3.6 sends extra headers."""
    return {**os.environ, "GDAL_HTTP_HEADERS": f"Authorization: Bearer {server[1]['admin']}", "GDAL_HTTP_TIMEOUT": "60"}


def sql(query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq(admin_url(DATABASE))) as conn:
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


def gdal(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def matched(base: str, layer: str, **params: str) -> dict[str, Any]:
    answer = httpx.get(f"{base}/ogc/collections/{layer}/items", params=params, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/geo+json")
    body: dict[str, Any] = answer.json()
    return body


# --------------------------------------------------------------------------- Part 1 with GDAL


def test_landing_conformance_and_api_document(base: str) -> None:
    landing = httpx.get(f"{base}/ogc/", headers={"Authorization": "none"}).json()
    rels = {link["rel"]: link for link in landing["links"]}
    assert {"self", "service-desc", "conformance", "data"} <= rels.keys()
    assert rels["data"]["href"] == f"{base}/ogc/collections"
    classes = httpx.get(rels["conformance"]["href"]).json()["conformsTo"]
    assert classes == [*ogc.CONFORMANCE, *TILES_CONFORMANCE]  # Tiles: tests/test_ogc_tiles.py
    assert {"http://www.opengis.net/def/rel/ogc/1.0/tiling-schemes"} <= rels.keys()
    assert not any("html" in c for c in classes)  # no HTML encoding, none claimed
    doc = httpx.get(rels["service-desc"]["href"])
    assert doc.headers["content-type"].startswith("application/vnd.oai.openapi+json")
    paths = doc.json()["paths"]
    assert {f"/collections/{layer}/items" for layer in REGISTRY} <= paths.keys()


def test_anonymous_reads_are_refused_with_json(base: str) -> None:
    for path in ("/ogc/collections", "/ogc/collections/parcels/items", "/ogc/collections/parcels/items/1"):
        answer = httpx.get(base + path, headers={"Authorization": "none"})
        assert answer.status_code == 401 and answer.json()["code"] == "login_required"


def test_ogrinfo_lists_every_collection(base: str, gdal_env: dict[str, str]) -> None:
    out = gdal(gdal_env, "ogrinfo", "-ro", f"OAPIF:{base}/ogc")
    listed = re.findall(r"^\d+: (\w+) \(title: ([^)]*)\)", out, re.M)
    assert [name for name, _ in listed] == [layer.id for layer in ogc.collections_in_order()]
    assert dict(listed)["parcels"] == f"{REGISTRY['parcels'].zh} {REGISTRY['parcels'].en}"


@pytest.mark.parametrize("layer_id", sorted(REGISTRY))
def test_ogrinfo_summary_gives_the_count_extent_and_crs(base: str, gdal_env: dict[str, str], layer_id: str) -> None:
    out = gdal(gdal_env, "ogrinfo", "-ro", "-so", f"OAPIF:{base}/ogc", layer_id)
    table = REGISTRY[layer_id].table
    total, x0, y0, x1, y1 = sql(
        f"SELECT count(*), ST_XMin(ST_Extent(geom)), ST_YMin(ST_Extent(geom)), ST_XMax(ST_Extent(geom)), "
        f"ST_YMax(ST_Extent(geom)) FROM {table}"
    )[0]
    assert f"Feature Count: {total}\n" in out
    if total:
        assert f"Extent: ({x0:.6f}, {y0:.6f}) - ({x1:.6f}, {y1:.6f})" in out
    assert 'ID["EPSG",4326]' in out  # GDAL 3.6 reads CRS84 (it knows no Part 2); CGCS2000 within GPS error
    described = httpx.get(f"{base}/ogc/collections/{layer_id}").json()
    assert described["storageCrs"] == "http://www.opengis.net/def/crs/EPSG/0/4490"
    assert described["crs"][:2] == [ogc.CRS84, "http://www.opengis.net/def/crs/EPSG/0/4490"]
    assert described["crs"][-1] == "http://www.opengis.net/def/crs/EPSG/0/4549"  # Qingdao: 3° zone, CM 120°E


def _truth(layer_id: str) -> dict[int, tuple[bytes, dict[str, Any]]]:
    layer = REGISTRY[layer_id]
    names = ", ".join(layer.field_names)
    rows = sql(f"SELECT id, ST_AsBinary(geom), {names} FROM {layer.table}")
    return {row[0]: (bytes(row[1]), dict(zip(layer.field_names, row[2:], strict=True))) for row in rows}


def _same(value: Any, stored: Any) -> bool:
    if stored is None:
        return value is None or value != value  # NaN: a missing number in a data frame
    if isinstance(stored, dt.date):
        return str(value)[:10] == stored.isoformat()
    if isinstance(stored, float):
        return float(value) == stored
    return bool(value == stored)


@pytest.mark.parametrize("layer_id", sorted(REGISTRY))
def test_ogr2ogr_copies_each_layer_with_identical_geometries_and_attributes(
    base: str, gdal_env: dict[str, str], layer_id: str, tmp_path: Path
) -> None:
    """Pages of 300 make GDAL follow several next links; coordinates survive the JSON bit for bit (15 decimals)."""
    target = tmp_path / f"{layer_id}.gpkg"
    source = f"OAPIF:{base}/ogc"
    gdal(gdal_env, "ogr2ogr", "-preserve_fid", "-f", "GPKG", str(target), source, layer_id, "-oo", "PAGE_SIZE=300")
    truth = _truth(layer_id)
    if not truth:
        return
    copied = geopandas.read_file(target, fid_as_index=True)
    assert sorted(copied.index) == sorted(truth)
    layer = REGISTRY[layer_id]
    for fid, row in copied.iterrows():
        wkb, props = truth[int(fid)]
        assert shapely.to_wkb(row.geometry) == wkb, fid
        for name in layer.field_names:
            if layer.field(name).personal:
                continue  # shown as the role sees it (admin: in full; compared in test_masked)
            assert _same(row.get(name), props[name]), (fid, name, row.get(name), props[name])


# --------------------------------------------------------------------------- filters, bbox, paging


def test_a_cql2_filter_through_gdal_returns_exactly_what_sql_returns(
    base: str, gdal_env: dict[str, str], tmp_path: Path
) -> None:
    cql = "use_status = '闲置' AND ownership IN ('集体', '国有') AND idle_since < DATE('2023-01-01')"
    expected = {
        row[0]
        for row in sql(
            "SELECT id FROM parcels WHERE use_status = '闲置' AND ownership IN ('集体', '国有') "
            "AND idle_since < DATE '2023-01-01'"
        )
    }
    assert expected  # the demo has some: the test can fail
    url = f"OAPIF:{base}/ogc/collections/parcels?" + urlencode({"filter": cql, "filter-lang": "cql2-text"})
    target = tmp_path / "f.gpkg"
    gdal(gdal_env, "ogr2ogr", "-preserve_fid", "-f", "GPKG", str(target), url, "-oo", "PAGE_SIZE=50")
    assert set(geopandas.read_file(target, fid_as_index=True).index) == expected
    assert matched(base, "parcels", filter=cql)["numberMatched"] == len(expected)


def test_gdal_where_goes_to_the_server_as_cql(base: str, gdal_env: dict[str, str]) -> None:
    """GDAL 3.6 sends -where as ``filter-lang=cql-text`` (the API document offers it): read as CQL2 text."""
    env = {**gdal_env, "CPL_DEBUG": "ON"}
    done = subprocess.run(
        ["ogrinfo", "-ro", "-q", f"OAPIF:{base}/ogc", "parcels", "-where", "stage = '招商中'"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    assert "filter-lang=cql-text" in done.stderr
    expected = sql("SELECT count(*) FROM parcels WHERE stage = '招商中'")[0][0]
    assert done.stdout.count("OGRFeature(parcels)") == expected > 0


def test_a_bbox_through_gdal_returns_exactly_what_sql_returns(base: str, gdal_env: dict[str, str]) -> None:
    box = (120.37, 36.29, 120.385, 36.30)
    expected = sql(
        "SELECT count(*) FROM parcels WHERE ST_Intersects(geom, ST_MakeEnvelope(%s, %s, %s, %s, 4490))", *box
    )
    out = gdal(gdal_env, "ogrinfo", "-ro", "-q", f"OAPIF:{base}/ogc", "parcels", "-spat", *map(str, box))
    assert out.count("OGRFeature(parcels)") == expected[0][0] > 0
    body = matched(base, "parcels", bbox=",".join(map(str, box)), limit="10000")
    assert body["numberMatched"] == body["numberReturned"] == expected[0][0]


def test_property_filter_and_paging_links(base: str) -> None:
    expected = [row[0] for row in sql("SELECT id FROM parcels WHERE use_status = '闲置' ORDER BY id")]
    first = matched(base, "parcels", use_status="闲置", limit="7")
    assert first["numberMatched"] == len(expected) and first["numberReturned"] == 7
    seen, page = [], first
    while True:
        seen += [f["id"] for f in page["features"]]
        following = [link["href"] for link in page["links"] if link["rel"] == "next"]
        if not following:
            break
        page = httpx.get(following[0]).json()
    assert seen == expected
    offset = matched(base, "parcels", use_status="闲置", limit="7", offset="7")
    assert [f["id"] for f in offset["features"]] == expected[7:14]
    assert any(link["rel"] == "prev" for link in offset["links"])
    assert "timeStamp" in first


def test_datetime_on_a_versioned_layer_uses_its_validity(base: str) -> None:
    day = sql("SELECT min(valid_from) FROM grids")[0][0]
    before = (day - dt.timedelta(days=1)).isoformat()
    assert matched(base, "grids", datetime=before)["numberMatched"] == 0
    inside = sql("SELECT count(*) FROM grids WHERE valid_from <= %s AND (valid_to IS NULL OR valid_to > %s)", day, day)
    assert matched(base, "grids", datetime=day.isoformat())["numberMatched"] == inside[0][0] > 0
    assert matched(base, "parcels", datetime="../2000-01-01T00:00:00Z")["numberMatched"] == 0  # updated_at
    bad = httpx.get(f"{base}/ogc/collections/parcels/items", params={"datetime": "yesterday"})
    assert bad.status_code == 400 and bad.json()["code"] == "datetime_invalid"


# --------------------------------------------------------------------------- Part 2: CRS


def test_crs_4490_comes_lat_lon_with_content_crs_and_the_zone_in_metres(base: str) -> None:
    lonlat = httpx.get(f"{base}/ogc/collections/parcels/items", params={"limit": "1"})
    assert lonlat.headers["content-crs"] == f"<{ogc.CRS84}>"
    here = f"{base}/ogc/collections/revenue_points/items"
    fid = sql("SELECT min(id) FROM revenue_points")[0][0]
    x, y = sql("SELECT ST_X(geom), ST_Y(geom) FROM revenue_points WHERE id = %s", fid)[0]
    plain = httpx.get(f"{here}/{fid}").json()
    assert plain["geometry"]["coordinates"] == [x, y]
    cgcs = httpx.get(f"{here}/{fid}", params={"crs": "http://www.opengis.net/def/crs/EPSG/0/4490"})
    assert cgcs.headers["content-crs"] == "<http://www.opengis.net/def/crs/EPSG/0/4490>"
    assert cgcs.json()["geometry"]["coordinates"] == [y, x]  # latitude first, as EPSG defines 4490
    zone = httpx.get(f"{here}/{fid}", params={"crs": "http://www.opengis.net/def/crs/EPSG/0/4549"})
    north, east = zone.json()["geometry"]["coordinates"]
    e, n = Transformer.from_crs(4490, 4549, always_xy=True).transform(x, y)
    assert abs(north - n) < 0.001 and abs(east - e) < 0.001  # northing first, as EPSG defines 4549
    listed = matched(base, "revenue_points", crs="http://www.opengis.net/def/crs/EPSG/0/4490", limit="10000")
    assert {tuple(f["geometry"]["coordinates"]) for f in listed["features"]} == {
        (lat, lon) for lon, lat in sql("SELECT ST_X(geom), ST_Y(geom) FROM revenue_points")
    }
    refused = httpx.get(f"{here}/{fid}", params={"crs": "http://www.opengis.net/def/crs/EPSG/0/3857"})
    assert refused.status_code == 400 and refused.json()["code"] == "crs_not_supported"


def test_bbox_crs_and_filter_crs_in_latitude_first_and_metres(base: str) -> None:
    box = (120.37, 36.29, 120.385, 36.30)
    expected = matched(base, "parcels", bbox=",".join(map(str, box)), limit="1")["numberMatched"]
    lat_lon = f"{box[1]},{box[0]},{box[3]},{box[2]}"
    cgcs = "http://www.opengis.net/def/crs/EPSG/0/4490"
    assert matched(base, "parcels", bbox=lat_lon, **{"bbox-crs": cgcs})["numberMatched"] == expected > 0
    wkt = f"POLYGON(({box[1]} {box[0]},{box[1]} {box[2]},{box[3]} {box[2]},{box[3]} {box[0]},{box[1]} {box[0]}))"
    filtered = matched(base, "parcels", filter=f"S_INTERSECTS(geometry, {wkt})", **{"filter-crs": cgcs})
    assert filtered["numberMatched"] == expected
    metres = Transformer.from_crs(4490, 4549, always_xy=True)
    (e0, e1), (n0, n1) = metres.transform([box[0], box[2]], [box[1], box[3]])
    zone = "http://www.opengis.net/def/crs/EPSG/0/4549"
    near = matched(base, "parcels", bbox=f"{n0},{e0},{n1},{e1}", **{"bbox-crs": zone})["numberMatched"]
    assert abs(near - expected) <= 3  # a transformed box's edges bend a little


# --------------------------------------------------------------------------- Part 3: more operators, refusals


@pytest.mark.parametrize(
    ("cql", "where"),
    [
        ("name LIKE '%地块%'", "name LIKE '%%地块%%'"),
        ("NOT (stage IS NULL)", "stage IS NOT NULL"),
        ("mode IS NULL OR mode = '出租'", "mode IS NULL OR mode = '出租'"),
        (
            "idle_since BETWEEN DATE('2020-01-01') AND DATE('2022-12-31')",
            "idle_since BETWEEN '2020-01-01' AND '2022-12-31'",
        ),
        (
            "S_WITHIN(geometry, BBOX(120.36, 36.28, 120.39, 36.31))",
            "ST_Within(geom, ST_MakeEnvelope(120.36, 36.28, 120.39, 36.31, 4490))",
        ),
        ("S_CONTAINS(geometry, POINT(120.38 36.30))", "ST_Contains(geom, ST_SetSRID(ST_Point(120.38, 36.30), 4490))"),
        (
            "S_DISJOINT(geometry, POLYGON((120.36 36.28,120.39 36.28,120.39 36.31,120.36 36.28)))",
            "ST_Disjoint(geom, ST_GeomFromText("
            "'POLYGON((120.36 36.28,120.39 36.28,120.39 36.31,120.36 36.28))', 4490))",
        ),
        (
            "S_TOUCHES(geometry, POINT(120.38 36.30)) OR S_OVERLAPS(geometry, BBOX(120.36, 36.28, 120.37, 36.29))",
            "ST_Touches(geom, ST_SetSRID(ST_Point(120.38, 36.30), 4490)) "
            "OR ST_Overlaps(geom, ST_MakeEnvelope(120.36, 36.28, 120.37, 36.29, 4490))",
        ),
        (
            "S_CROSSES(geometry, LINESTRING(120.36 36.28, 120.39 36.31)) AND NOT S_EQUALS(geometry, POINT(0 0))",
            "ST_Crosses(geom, ST_GeomFromText('LINESTRING(120.36 36.28, 120.39 36.31)', 4490))",
        ),
    ],
)
def test_cql2_text_operators_match_sql(base: str, cql: str, where: str) -> None:
    expected = sql(f"SELECT count(*) FROM parcels WHERE {where}")[0][0]
    assert matched(base, "parcels", filter=cql)["numberMatched"] == expected


def test_cql2_json_matches_sql(base: str) -> None:
    body = {
        "op": "and",
        "args": [
            {"op": "=", "args": [{"property": "use_status"}, "出租"]},
            {"op": "s_intersects", "args": [{"property": "geometry"}, {"bbox": [120.36, 36.28, 120.40, 36.31]}]},
        ],
    }
    import json

    expected = sql(
        "SELECT count(*) FROM parcels WHERE use_status = '出租' AND "
        "ST_Intersects(geom, ST_MakeEnvelope(120.36, 36.28, 120.40, 36.31, 4490))"
    )[0][0]
    got = matched(base, "parcels", filter=json.dumps(body, ensure_ascii=False), **{"filter-lang": "cql2-json"})
    assert got["numberMatched"] == expected > 0


@pytest.mark.parametrize(
    ("layer_id", "params", "code"),
    [
        ("zones", {"filter": "household_head LIKE '王%'"}, "property_personal"),
        ("grids", {"filter": "manager_phone LIKE '138%'"}, "property_personal"),
        ("grids", {"manager_phone": "13800000000"}, "property_personal"),
        ("parcels", {"filter": "nosuch = 1"}, "filter_unknown_property"),
        ("parcels", {"filter": "area_m2 + 1 > 2"}, "filter_unsupported"),
        ("parcels", {"filter": "use_status = "}, "filter_invalid"),
        ("parcels", {"filter": "ownership = 3"}, "filter_type_mismatch"),
        ("parcels", {"filter": "S_INTERSECTS(geometry, POLYGON((1 1, 2 2)))"}, "filter_geometry_invalid"),
        ("parcels", {"filter": "x" * 9000}, "filter_too_large"),
        ("parcels", {"filter": "use_status = 'a'", "filter-lang": "sql"}, "filter_lang_unsupported"),
        ("parcels", {"name": "x"}, "property_not_filterable"),
        ("parcels", {"bbox": "1,2,3"}, "bbox_invalid"),
        ("parcels", {"limit": "-1"}, "limit_invalid"),
        ("parcels", {"limit": "²"}, "limit_invalid"),  # a digit to str.isdigit, not to int()
        ("parcels", {"offset": "٣"}, "offset_invalid"),
        ("parcels", {"crs": "EPSG:²"}, "crs_not_supported"),
        (
            "parcels",
            {"bbox": "0,0,1e300,1e300", "bbox-crs": "http://www.opengis.net/def/crs/EPSG/0/4527"},
            "bbox_invalid",
        ),
    ],
)
def test_refusals_are_400_with_a_code(base: str, layer_id: str, params: dict[str, str], code: str) -> None:
    answer = httpx.get(f"{base}/ogc/collections/{layer_id}/items", params=params)
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == code


def test_queryables_and_schema_come_from_the_declaration(base: str) -> None:
    for layer in REGISTRY.values():
        found = httpx.get(f"{base}/ogc/collections/{layer.id}/queryables")
        assert found.headers["content-type"].startswith("application/schema+json")
        props = found.json()["properties"]
        assert set(props) == {"geometry"} | {f.name for f in layer.fields if not f.personal}
        schema = httpx.get(f"{base}/ogc/collections/{layer.id}/schema").json()["properties"]
        assert {f.name for f in layer.fields} <= set(schema)
    assert (
        httpx.get(f"{base}/ogc/collections/parcels/queryables").json()["properties"]["idle_since"]["format"] == "date"
    )


# --------------------------------------------------------------------------- Part 4


def _new_parcel(code_tail: str) -> dict[str, Any]:
    """Return a valid new parcel: a small box inside a stored one, its grid and community found from where it lies."""
    fid, x, y, community = sql(
        "SELECT id, ST_X(p), ST_Y(p), community_code FROM (SELECT id, community_code, ST_PointOnSurface(geom) p "
        "FROM parcels WHERE community_code IS NOT NULL ORDER BY area_m2 DESC LIMIT 1) s"
    )[0]
    d = 0.00005
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [[[x, y], [x + d, y], [x + d, y + d], [x, y + d], [x, y]]]},
        "properties": {
            "code": community + "01" + code_tail,
            "land_use_code": "1201",
            "ownership": "集体",
            "use_status": "闲置",
        },
    }


def test_part4_refuses_an_invalid_feature_with_the_features_apis_codes(base: str) -> None:
    bad = _new_parcel("99901")
    bad["properties"] |= {"ownership": "私有", "land_use_code": "ABC"}
    del bad["properties"]["use_status"]
    ogc_answer = httpx.post(f"{base}/ogc/collections/parcels/items", json=bad)
    api_answer = httpx.post(f"{base}/api/layers/parcels/features", json=bad)
    assert ogc_answer.status_code == api_answer.status_code == 422
    codes = sorted(e["code"] for e in ogc_answer.json()["errors"])
    assert codes == sorted(e["code"] for e in api_answer.json()["errors"])
    assert {"enum", "required"} <= set(codes)
    assert (
        httpx.post(
            f"{base}/ogc/collections/parcels/items", content=b"{", headers={"Content-Type": "application/json"}
        ).json()["code"]
        == "invalid_json"
    )


def test_part4_create_replace_update_delete_with_history(base: str) -> None:
    feature = _new_parcel("99902")
    created = httpx.post(f"{base}/ogc/collections/parcels/items", json=feature)
    assert created.status_code == 201, created.text
    fid = created.json()["id"]
    assert created.headers["location"] == f"{base}/ogc/collections/parcels/items/{fid}"
    assert sql("SELECT use_status FROM parcels WHERE id = %s", fid) == [("闲置",)]
    read = httpx.get(created.headers["location"])
    etag = read.headers["etag"]
    assert etag == created.headers["etag"]
    stale = httpx.patch(created.headers["location"], json={"type": "Feature", "properties": {"stage": "招商中"}})
    assert stale.status_code == 412 and stale.json()["code"] == "if_match_required"
    patched = httpx.patch(
        created.headers["location"],
        content=b'{"type": "Feature", "properties": {"stage": "\xe6\x8b\x9b\xe5\x95\x86\xe4\xb8\xad"}}',
        headers={"If-Match": etag, "Content-Type": "application/merge-patch+json"},
    )
    assert patched.status_code == 200, patched.text
    assert sql("SELECT stage FROM parcels WHERE id = %s", fid) == [("招商中",)]
    whole = {**feature, "properties": {**patched.json()["properties"], "use_status": "自用"}}
    replaced = httpx.put(created.headers["location"], json=whole, headers={"If-Match": patched.headers["etag"]})
    assert replaced.status_code == 200, replaced.text
    history = httpx.get(f"{base}/api/layers/parcels/features/{fid}/history").json()["changes"]
    assert len(history) == 3
    gone = httpx.delete(created.headers["location"], headers=ANY_VERSION)
    assert gone.status_code == 204
    assert httpx.get(created.headers["location"]).status_code == 404
    assert sql("SELECT count(*) FROM parcels WHERE id = %s", fid) == [(0,)]


def test_part4_takes_a_feature_in_cgcs2000_latitude_first(base: str) -> None:
    feature = _new_parcel("99903")
    ring = feature["geometry"]["coordinates"][0]
    feature["geometry"]["coordinates"] = [[[y, x] for x, y in ring]]
    crs = "<http://www.opengis.net/def/crs/EPSG/0/4490>"
    created = httpx.post(f"{base}/ogc/collections/parcels/items", json=feature, headers={"Content-Crs": crs})
    assert created.status_code == 201, created.text
    fid = created.json()["id"]
    x0 = sql("SELECT ST_XMin(geom) FROM parcels WHERE id = %s", fid)[0][0]
    assert x0 == pytest.approx(ring[0][0])
    assert httpx.delete(created.headers["location"], headers=ANY_VERSION).status_code == 204


def test_part4_needs_an_editor_and_a_token_not_a_cookie(server: tuple[str, dict[str, str]]) -> None:
    base, tokens = server
    viewer = {"Authorization": f"Bearer {tokens['viewer']}"}
    refused = httpx.post(f"{base}/ogc/collections/parcels/items", json=_new_parcel("99904"), headers=viewer)
    assert refused.status_code == 403
    cookie = httpx.post(
        f"{base}/ogc/collections/parcels/items",
        json=_new_parcel("99905"),
        headers={"Authorization": "none", "Cookie": "guatu_session=x"},
    )
    assert cookie.status_code == 403 and cookie.json()["code"] == "csrf_failed"


# --------------------------------------------------------------------------- the translation, without a server


@pytest.mark.parametrize(
    ("text", "lang", "code"),
    [
        ("(" * 300 + "use_status = 'a'" + ")" * 300, None, "filter_too_complex"),
        (" AND ".join(["NOT (use_status = 'a')"] * 30), None, "filter_too_complex"),
        ("nosuch = 1", None, "filter_unknown_property"),
        ('"name" = \'a\' OR owner IS NULL OR "地块" = 1', None, "filter_unknown_property"),
        ("use_status IN (" + ",".join(f"'{n}'" for n in range(600)) + ")", None, "filter_too_large"),
        ("S_INTERSECTS(geometry, POINT(1e400 1))", None, "filter_geometry_invalid"),
        ("S_INTERSECTS(geometry, POLYGON((0 0, 1 1, 0 0)))", None, "filter_geometry_invalid"),
        ("S_INTERSECTS(name, POINT(1 1))", None, "filter_unknown_property"),
        ("S_DWITHIN(geometry, POINT(1 1), 10, meters)", None, "filter_invalid"),
        ("A_CONTAINS(name, ('a'))", None, "filter_invalid"),
        ("use_status = 'a'; DROP TABLE parcels", None, "filter_invalid"),
        ('{"op": "and", "args": ' * 200 + "true" + "}" * 200, "cql2-json", "filter_too_complex"),
        ('{"op": "nosuchop", "args": []}', "cql2-json", "filter_invalid"),
        ("[1, 2", "cql2-json", "filter_invalid"),
        ("idle_since > 'not a date'", None, "filter_type_mismatch"),
    ],
)
def test_hostile_filters_are_refused_with_a_code(text: str, lang: str | None, code: str) -> None:
    from spatial.errors import MalformedInput

    with pytest.raises(MalformedInput) as refused:
        ogc.filter_condition(REGISTRY["parcels"], text, lang, ogc.parse_crs_uri(None, "filter-crs"))
    assert refused.value.code == code, refused.value


def test_the_translation_binds_every_value() -> None:
    """Values never enter the SQL text: a quote in a literal is a bound parameter."""
    condition = ogc.filter_condition(
        REGISTRY["parcels"],
        "name = 'x; DROP TABLE parcels; --' AND idle_since < DATE('2020-01-01')",
        None,
        ogc.parse_crs_uri(None, "filter-crs"),
    )
    compiled = str(condition.compile())
    assert "DROP" not in compiled and "x; DROP" in str(condition.compile().params)


def test_reads_keep_to_the_users_area_and_mask_personal_fields(server: tuple[str, dict[str, str]]) -> None:
    base, tokens = server
    outside = {"Authorization": f"Bearer {tokens['planner2']}"}  # a planner of another street
    elsewhere = httpx.get(f"{base}/ogc/collections/parcels/items", headers=outside).json()
    assert elsewhere["numberMatched"] == 0 and elsewhere["features"] == []
    assert "bbox" not in httpx.get(f"{base}/ogc/collections/parcels", headers=outside).json()["extent"]["spatial"]
    viewer = {"Authorization": f"Bearer {tokens['viewer']}"}  # sees the street, personal fields masked
    zones = httpx.get(f"{base}/ogc/collections/zones/items", params={"limit": "2000"}, headers=viewer).json()
    heads = [f["properties"]["household_head"] for f in zones["features"]]
    assert heads and all("*" in head for head in heads)
    assert zones["numberMatched"] == sql("SELECT count(*) FROM zones")[0][0]


def test_a_large_page_is_read_in_the_exports_lane(base: str) -> None:
    """A 10,000-feature page (read in the exports lane) answers the whole demo layer in one page."""
    body = matched(base, "parcels", limit="10000")
    assert body["numberReturned"] == sql("SELECT count(*) FROM parcels")[0][0]
    assert not [link for link in body["links"] if link["rel"] == "next"]


def test_temporal_operators_on_a_date_field_in_cql2_json(base: str) -> None:
    import json

    after = {"op": "t_after", "args": [{"property": "idle_since"}, {"date": "2022-01-01"}]}
    expected = sql("SELECT count(*) FROM parcels WHERE idle_since > DATE '2022-01-01'")[0][0]
    got = matched(base, "parcels", filter=json.dumps(after), **{"filter-lang": "cql2-json"})
    assert got["numberMatched"] == expected > 0
    on_text = {"op": "t_after", "args": [{"property": "name"}, {"date": "2022-01-01"}]}
    refused = httpx.get(
        f"{base}/ogc/collections/parcels/items", params={"filter": json.dumps(on_text), "filter-lang": "cql2-json"}
    )
    assert refused.status_code == 400 and refused.json()["code"] == "filter_unsupported"
