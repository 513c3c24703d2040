"""GIS exports read back by GDAL: every format equals the layer, filters keep their rows, personal values stay masked.

Tolerances: GeoJSON and KML carry 7 decimals of a degree (layers.exports.DECIMALS: ±5e-8°, about
half a centimetre); CSV's WKT, GeoPackage and Shapefile carry the stored doubles (compared
exactly once normalised: a Shapefile's outer rings turn clockwise, GeoJSON's counter-clockwise).
"""

from __future__ import annotations

import copy
import csv
import io
import json
import resource
import subprocess
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pyogrio
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

import shapely

from layers import features
from layers.base import REGISTRY
from layers.exports import BATCH, DECIMALS, FIELD_LIST, short_names
from layers.workbook import WKT_LABEL, sheet_name
from tests.accounts import bearer
from tests.samples import COMMUNITY, GRID, X0, Y0, polygon, sample

PARCELS = REGISTRY["parcels"]
ZONES = REGISTRY["zones"]
TOLERANCE = {"geojson": 0.6 * 10**-DECIMALS, "kml": 0.6 * 10**-DECIMALS, "csv": 0.0, "gpkg": 0.0, "shp.zip": 0.0}


def _parcel(n: int, **props: Any) -> dict[str, Any]:
    feature = sample("parcels")
    feature["properties"]["code"] = COMMUNITY + f"01{n:05d}"
    feature["properties"]["name"] = f"地块{n}·南疃"
    feature["properties"]["address"] = f"南疃路{n}号"
    feature["properties"].update(props)
    x = X0 + 0.0012 * (n - 1) + 0.000012345678
    feature["geometry"] = polygon(x, Y0 + 0.00000098765, x + 0.001, Y0 + 0.0009)
    return feature


@pytest.fixture
def stored(session: Session) -> list[dict[str, Any]]:
    """Store four parcels: idle and let, one with a formula-like reason, one with nothing optional."""
    parcels = [
        _parcel(1, idle_reason='=HYPERLINK("http://x")', owner="张三"),
        _parcel(2, use_status="出租", idle_since=None, stage=None),
        _parcel(3, idle_reason="规划调整，待开发"),
        _parcel(4, name=None, address=None, idle_reason=None, use_status="自用", idle_since=None, stage=None),
    ]
    for parcel in parcels:
        features.create_feature(session, PARCELS, copy.deepcopy(parcel))
    session.flush()
    return parcels


def _truth(session: Session, where: str = "true") -> dict[str, dict[str, Any]]:
    """Return {code: {field: value, '@geom': shapely}} of the stored parcels, read from the database."""
    names = PARCELS.field_names
    rows = session.execute(
        text(f"SELECT id, {', '.join(names)}, ST_AsBinary(geom) FROM {PARCELS.table} WHERE {where}")
    ).all()
    out = {}
    for row in rows:
        props = dict(zip(names, row[1:-1], strict=True))
        props["id"] = row[0]
        props["@geom"] = shapely.from_wkb(bytes(row[-1]))
        out[props[PARCELS.key_field]] = props
    return out


def _save(response: Any, tmp_path: Path, name: str) -> Path:
    assert response.status_code == 200, response.text[:500]
    assert "attachment" in response.headers["content-disposition"]
    path = tmp_path / name
    path.write_bytes(response.content)
    return path


def _plain(value: Any) -> Any:
    """Return VALUE as compared: dates and date-times as YYYY-MM-DD, empty as None, numbers as float."""
    if value is None or value == "" or str(value) in ("NaT", "nan", "<NA>"):  # GDAL's empties, as pandas says them
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()[:10]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return str(value)


def _compare(frame: Any, truth: dict[str, dict[str, Any]], columns: dict[str, str], tolerance: float) -> None:
    """Assert the read-back FRAME holds the TRUTH: same rows, same values in COLUMNS (field → column), same outlines."""
    assert len(frame) == len(truth)
    key = columns[PARCELS.key_field]
    for _, row in frame.iterrows():
        want = truth[str(row[key])]
        for name, column in columns.items():
            got, expected = _plain(row[column]), _plain(want[name])
            if isinstance(got, str) and isinstance(expected, float):  # CSV: every value is text
                got = float(got)
            assert got == expected, (name, row[column], want[name])
        got = row.geometry
        if got.geom_type == "Polygon":  # a Shapefile's one-part polygon reads back as a Polygon
            got = shapely.MultiPolygon([got])
        got = shapely.normalize(got)
        assert shapely.equals_exact(got, shapely.normalize(want["@geom"]), tolerance=tolerance), (got, want["@geom"])


def _ogrinfo(path: str) -> str:
    """Return what Debian's GDAL (the command line, not pyogrio's own) says of PATH."""
    done = subprocess.run(["ogrinfo", "-ro", "-al", "-so", path], capture_output=True, text=True, check=True)
    return done.stdout


def test_every_format_reads_back_as_the_layer(
    client: TestClient, session: Session, stored: list[dict[str, Any]], tmp_path: Path
) -> None:
    truth = _truth(session)
    plain = {name: name for name in PARCELS.field_names} | {"id": "id"}

    geojson = _save(client.get("/api/layers/parcels/export.geojson"), tmp_path, "p.geojson")
    frame = pyogrio.read_dataframe(geojson)
    _compare(frame, truth, plain, TOLERANCE["geojson"])
    assert all(shapely.is_ccw(g.geoms[0].exterior) for g in frame.geometry)  # RFC 7946: outer rings anticlockwise
    assert b'"crs"' not in geojson.read_bytes()  # RFC 7946 has none
    assert "Feature Count: 4" in _ogrinfo(str(geojson))

    response = client.get("/api/layers/parcels/export.csv")
    assert response.headers["content-type"].startswith("text/csv")
    body = _save(response, tmp_path, "p.csv").read_bytes()
    assert body.startswith(b"\xef\xbb\xbf")  # Excel reads UTF-8 only behind a BOM
    frame = pyogrio.read_dataframe(tmp_path / "p.csv", GEOM_POSSIBLE_NAMES="图形(WKT)", KEEP_GEOM_COLUMNS="NO")
    by_label = {f.name: f.zh for f in PARCELS.fields} | {"id": "系统编号"}
    shown = frame.copy()
    shown[by_label["idle_reason"]] = shown[by_label["idle_reason"]].str.removeprefix("'")
    _compare(shown, truth, by_label, TOLERANCE["csv"])
    rows = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))
    first = next(r for r in rows if r[by_label["code"]] == stored[0]["properties"]["code"])
    assert first[by_label["idle_reason"]].startswith("'=")  # never a formula in Excel
    inside = shapely.Point(float(first["经度"]), float(first["纬度"]))
    assert truth[first[by_label["code"]]]["@geom"].buffer(1e-7).contains(inside)  # a point on the surface

    kml = _save(client.get("/api/layers/parcels/export.kml"), tmp_path, "p.kml")
    frame = pyogrio.read_dataframe(kml)
    assert frame.crs == "EPSG:4326"  # KML is WGS 84 by definition (CGCS2000 to it: a null shift)
    clashing = {"name": "name2", "id": "id2"}  # GDAL's LIBKML renames fields clashing with KML's own <name>, id
    _compare(frame, truth, {k: clashing.get(k, v) for k, v in plain.items()}, TOLERANCE["kml"])
    assert "Feature Count: 4" in _ogrinfo(str(kml))

    gpkg = _save(client.get("/api/layers/parcels/export.gpkg"), tmp_path, "p.gpkg")
    info = pyogrio.read_info(gpkg)
    assert info["crs"] == "EPSG:4490" and info["features"] == 4
    _compare(pyogrio.read_dataframe(gpkg), truth, plain, TOLERANCE["gpkg"])
    assert 'EPSG",4490' in _ogrinfo(str(gpkg))

    response = client.get("/api/layers/parcels/export.shp.zip")
    disposition = response.headers["content-disposition"]
    assert unquote(disposition.split("filename*=UTF-8''")[1]).startswith(f"{PARCELS.zh}-")
    shp = _save(response, tmp_path, "p.zip")
    with zipfile.ZipFile(shp) as zf:
        names = zf.namelist()
        assert sorted(names) == sorted([f"parcels.{x}" for x in ("shp", "shx", "dbf", "prj", "cpg")] + [FIELD_LIST])
        assert all("/" not in n and ".." not in n for n in names)
        zf.extractall(tmp_path / "shp")
        listed = zf.read(FIELD_LIST).decode("utf-8-sig")
    short = short_names(PARCELS)
    assert all(len(s) <= 10 for s in short.values()) and len({s.lower() for s in short.values()}) == len(short)
    assert all(f"{short[f.name]},{f.name},{f.zh}" in listed for f in PARCELS.fields)
    assert (tmp_path / "shp/parcels.cpg").read_text().strip() == "UTF-8"
    srs = subprocess.run(["gdalsrsinfo", "-e", str(tmp_path / "shp/parcels.prj")], capture_output=True, text=True)
    assert "EPSG:4490" in srs.stdout, srs.stdout  # the ESRI .prj is recognised as CGCS2000
    assert (tmp_path / "shp/parcels.prj").read_text().startswith('GEOGCS["GCS_China_Geodetic_Coordinate_System_2000"')
    frame = pyogrio.read_dataframe(tmp_path / "shp/parcels.shp")
    _compare(frame, truth, {name: short[name] for name in plain}, TOLERANCE["shp.zip"])
    assert "Feature Count: 4" in _ogrinfo(str(tmp_path / "shp/parcels.shp"))

    # the Excel ledger (layers/workbook.py) read by GDAL's XLSX driver: Chinese headers, an English row
    # under them, codes as text, the outline as WKT in its own column (an Excel cell's limit: 32,767)
    xlsx = _save(client.get("/api/layers/parcels/export.xlsx"), tmp_path, "p.xlsx")
    sheet = sheet_name(PARCELS)
    assert sheet in _ogrinfo(str(xlsx))
    frame = pyogrio.read_dataframe(xlsx, layer=sheet, read_geometry=False)
    frame.columns = list(frame.iloc[0])  # GDAL takes a header of text over text as data: the first row names
    frame = frame[frame[by_label["code"]].isin(truth)]  # the English header row is not a parcel
    frame = frame.assign(geometry=[shapely.from_wkt(w) for w in frame[WKT_LABEL]])
    idle = by_label["idle_since"]
    frame[idle] = frame[idle].str.replace("/", "-")  # a date cell, as GDAL writes a date in text
    _compare(frame, truth, {k: v for k, v in by_label.items() if k != "id"}, 0.0)


def test_a_gbk_shapefile_keeps_chinese_text(
    client: TestClient, session: Session, stored: list[dict[str, Any]], tmp_path: Path
) -> None:
    shp = _save(client.get("/api/layers/parcels/export.shp.zip", params={"encoding": "gbk"}), tmp_path, "g.zip")
    with zipfile.ZipFile(shp) as zf:
        zf.extractall(tmp_path / "g")
    assert (tmp_path / "g/parcels.cpg").read_text().strip() in ("GBK", "936", "CP936")
    dbf = (tmp_path / "g/parcels.dbf").read_bytes()
    name = stored[2]["properties"]["name"]
    assert name.encode("gbk") in dbf and name.encode("utf-8") not in dbf
    frame = pyogrio.read_dataframe(tmp_path / "g/parcels.shp")
    short = short_names(PARCELS)
    assert sorted(n for n in frame[short["name"]] if isinstance(n, str)) == sorted(
        p["properties"]["name"] for p in stored if p["properties"]["name"]
    )
    assert (
        "地块3·南疃"
        in subprocess.run(
            ["ogrinfo", "-ro", "-al", str(tmp_path / "g/parcels.shp")], capture_output=True, text=True, check=True
        ).stdout
    )  # Debian's GDAL reads the .cpg too
    refused = client.get("/api/layers/parcels/export.geojson", params={"encoding": "gbk"})
    assert refused.status_code == 422 and refused.json()["code"] == "encoding_unknown"
    assert client.get("/api/layers/parcels/export.shp.zip", params={"encoding": "latin9"}).status_code == 422


def test_other_attributes_come_back_in_every_format(
    client: TestClient, session: Session, stored: list[dict[str, Any]], tmp_path: Path
) -> None:
    kept = {"备注": "临街 <b>&", "source": "三调"}  # an upload kept them; the popup shows them (其他属性)
    code = stored[0]["properties"]["code"]
    session.execute(
        text(f"UPDATE {PARCELS.table} SET extra = CAST(:kept AS jsonb) WHERE {PARCELS.key_field} = :code"),
        {"kept": json.dumps(kept, ensure_ascii=False), "code": code},
    )
    session.flush()
    geojson = client.get("/api/layers/parcels/export.geojson").json()["features"]
    assert {f["properties"]["code"]: f["properties"]["extra"] for f in geojson}[code] == kept  # lost before
    for fmt in ("csv", "kml", "gpkg", "shp.zip"):
        path = _save(client.get(f"/api/layers/parcels/export.{fmt}"), tmp_path, f"x.{fmt}")
        if fmt == "shp.zip":
            with zipfile.ZipFile(path) as zf:
                zf.extractall(tmp_path / "x")
            path = tmp_path / "x" / "parcels.shp"
        frame = pyogrio.read_dataframe(path) if fmt != "csv" else None
        if frame is None:
            rows = list(csv.reader(io.StringIO(path.read_text("utf-8-sig"))))
            column = rows[0].index("其他属性")
            found = [json.loads(r[column]) for r in rows[1:] if r[column]]
        else:
            found = [json.loads(v) for v in frame["extra"] if isinstance(v, str) and v]
        assert found == [kept], fmt


def test_a_gbk_shapefile_marks_what_gbk_cannot_write(client: TestClient, session: Session, tmp_path: Path) -> None:
    features.create_feature(session, PARCELS, _parcel(9, idle_reason="𠀀字待开发😀"))
    session.flush()
    shp = _save(client.get("/api/layers/parcels/export.shp.zip", params={"encoding": "gbk"}), tmp_path, "g.zip")
    with zipfile.ZipFile(shp) as zf:
        zf.extractall(tmp_path / "g")
        assert "?" in zf.read(FIELD_LIST).decode("utf-8-sig")  # the field list says so
    frame = pyogrio.read_dataframe(tmp_path / "g/parcels.shp")
    reasons = [r for r in frame[short_names(PARCELS)["idle_reason"]] if isinstance(r, str)]
    assert reasons == ["?字待开发?"]  # GDAL dropped them: "字待开发", as if nothing had been there


@pytest.mark.parametrize("fmt", ["geojson", "csv", "kml", "gpkg", "shp.zip"])
def test_a_filtered_export_holds_exactly_the_filtered_rows(
    client: TestClient, session: Session, stored: list[dict[str, Any]], tmp_path: Path, fmt: str
) -> None:
    idle = {c for c, p in _truth(session).items() if p[PARCELS.style.by] == "闲置"}
    assert len(idle) == 2
    path = _save(client.get(f"/api/layers/parcels/export.{fmt}", params={"status": "闲置"}), tmp_path, f"f.{fmt}")
    if fmt == "shp.zip":
        with zipfile.ZipFile(path) as zf:
            zf.extractall(tmp_path / "f")
        path = tmp_path / "f/parcels.shp"
    options = {"GEOM_POSSIBLE_NAMES": "图形(WKT)"} if fmt == "csv" else {}
    frame = pyogrio.read_dataframe(path, **options)
    column = {"csv": PARCELS.field(PARCELS.key_field).zh, "shp.zip": short_names(PARCELS)[PARCELS.key_field]}
    assert {str(c) for c in frame[column.get(fmt, PARCELS.key_field)]} == idle
    box = f"{X0 - 0.0001},{Y0 - 0.0001},{X0 + 0.0011},{Y0 + 0.001}"  # the view holds the first parcel only
    viewed = client.get(f"/api/layers/parcels/export.{fmt}", params={"bbox": box})
    path = _save(viewed, tmp_path, f"v.{fmt}")
    if fmt == "shp.zip":
        with zipfile.ZipFile(path) as zf:
            zf.extractall(tmp_path / "v")
        path = tmp_path / "v/parcels.shp"
    assert len(pyogrio.read_dataframe(path, **options)) == 1
    bad = client.get(f"/api/layers/parcels/export.{fmt}", params={"status": "没有这种"})
    assert bad.status_code == 422 and bad.json()["code"] == "filter_invalid"


def test_personal_values_are_masked_for_a_role_that_may_not_see_them(
    client: TestClient, session: Session, tokens: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged: list[tuple[str, list[int]]] = []
    monkeypatch.setattr(
        "api.routes.exports.log_personal", lambda _s, actor, _l, ids, _f, _r: logged.append((actor.username, ids))
    )
    for layer_id in ("divisions", "grids", "parcels", "zones"):
        features.create_feature(session, REGISTRY[layer_id], sample(layer_id))
    personal = next(f for f in ZONES.fields if f.personal)
    full = sample("zones")["properties"][personal.name]
    viewer = bearer(tokens["viewer"])
    for fmt in ("geojson", "csv", "kml", "gpkg", "shp.zip"):
        seen = client.get(f"/api/layers/zones/export.{fmt}")
        masked = client.get(f"/api/layers/zones/export.{fmt}", headers=viewer)
        assert seen.status_code == masked.status_code == 200, masked.text[:300]
        if fmt in ("geojson", "csv", "kml"):
            assert full in seen.text and full not in masked.text  # the whole answer: no field leaks it
            assert full[0] + "*" in masked.text
            continue
        path = _save(masked, tmp_path, f"z.{fmt}")
        if fmt == "shp.zip":
            with zipfile.ZipFile(path) as zf:
                zf.extractall(tmp_path / "z")
                assert full.encode() not in b"".join(zf.read(n) for n in zf.namelist())
            path = tmp_path / "z/zones.shp"
        else:
            assert full.encode() not in path.read_bytes()
        frame = pyogrio.read_dataframe(path)
        column = short_names(ZONES)[personal.name] if fmt == "shp.zip" else personal.name
        (value,) = list(frame[column])
        assert value != full and value.startswith(full[0]) and "*" in value
    assert {who for who, _ in logged} == {"admin"} and len(logged) == 5  # each full showing logged, masked ones not


def test_anonymous_and_unknown_are_refused(client: TestClient, stored: list[dict[str, Any]]) -> None:
    for fmt in ("geojson", "csv", "kml", "gpkg", "shp.zip"):
        anonymous = client.get(f"/api/layers/parcels/export.{fmt}", headers={"Authorization": ""})
        assert anonymous.status_code == 401, anonymous.text
        assert client.get(f"/api/layers/nope/export.{fmt}").status_code == 404
    assert client.get("/api/layers/parcels/export.exe").status_code == 404


def test_an_export_beyond_its_cap_is_refused_before_any_byte(
    client: TestClient, stored: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("layers.exports.MAX_STREAMED_ROWS", 3)
    monkeypatch.setattr("layers.exports.MAX_FILE_ROWS", 3)
    for fmt in ("geojson", "gpkg"):
        refused = client.get(f"/api/layers/parcels/export.{fmt}")
        assert refused.status_code == 422 and refused.json()["code"] == "export_too_large"
        assert client.get(f"/api/layers/parcels/export.{fmt}", params={"status": "闲置"}).status_code == 200


def _measured(client: TestClient, path: str, query: str, token: str) -> tuple[int, int, int, int, list[int]]:
    """Call the app for PATH as the server would, each chunk dropped once sent (the test client keeps the body).

    Return (bytes, chunks, peak Python allocations while it ran, rise of the process's peak RSS, and the
    allocations held as each chunk was sent).
    """
    seen = {"status": 0, "bytes": 0, "chunks": 0}
    held: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            seen["status"] = message["status"]
        elif message["type"] == "http.response.body" and message.get("body"):
            seen["bytes"] += len(message["body"])
            seen["chunks"] += 1
            held.append(tracemalloc.get_traced_memory()[0])

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"authorization", f"Bearer {token}".encode())],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    assert client.portal is not None
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    try:
        client.portal.call(client.app, scope, receive, send)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen["status"] == 200
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    return seen["bytes"], seen["chunks"], peak, rss, held


def test_a_big_export_streams_in_bounded_memory(
    client: TestClient, session: Session, tokens: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    n = 20_000
    session.execute(
        text(
            f"INSERT INTO {PARCELS.table} "
            "(code, name, land_use_code, ownership, use_status, community_code, grid_code, geom) "
            "SELECT :c || '01' || lpad(i::text, 5, '0'), '批量地块' || i, '1201', '集体', '闲置', :c, :g, "
            "ST_Multi(ST_MakeEnvelope(:x + (i % 200) * 1e-4, :y + (i / 200) * 1e-4, "
            ":x + (i % 200) * 1e-4 + 8e-5, :y + (i / 200) * 1e-4 + 8e-5, 4490)) "
            "FROM generate_series(1, :n) AS i"
        ),
        {"c": COMMUNITY, "g": GRID, "x": X0, "y": Y0, "n": n},
    )
    session.flush()
    portal = client.portal
    assert portal is not None
    figures = {}
    half = f"bbox={X0 - 0.001},{Y0 - 0.001},{X0 + 0.03},{Y0 + 0.0049}"  # the rows i < 10 000: half of them
    for fmt in ("geojson", "csv"):
        for query in ("", half):
            figures[fmt, query] = _measured(client, f"/api/layers/parcels/export.{fmt}", query, tokens["admin"])
        (size, chunks, _, _, held), (half_size, *_) = figures[fmt, ""], figures[fmt, half]
        assert chunks >= n // BATCH  # a chunk per batch, sent as produced
        assert 1.8 < size / half_size < 2.2  # twice the rows, twice the bytes
        early, late = held[: len(held) // 4], held[-len(held) // 4 :]
        assert max(late) < max(early) * 1.1 + 256_000, (early, late)  # what is held does not grow as rows pass
    with capsys.disabled():
        for (fmt, query), (size, chunks, peak, rss, _) in figures.items():
            print(
                f"\n{fmt} {'half' if query else 'all'}: {n} features, {size / 1e6:.1f} MB in {chunks} chunks, "
                f"peak Python allocations {peak / 1e6:.1f} MB, peak RSS rise {rss / 1024:.1f} MB"
            )


def test_a_layer_of_points_and_polygons_is_two_shapefiles_and_one_geopackage(
    client: TestClient, session: Session, tmp_path: Path
) -> None:
    shops = REGISTRY["shops"]
    point = sample("shops")
    outline = copy.deepcopy(point)
    outline["properties"]["code"] = point["properties"]["code"][:-1] + "2"
    outline["geometry"] = {
        "type": "MultiPolygon",
        "coordinates": [polygon(X0, Y0, X0 + 0.0002, Y0 + 0.0001)["coordinates"]],
    }
    for feature in (point, outline):
        features.create_feature(session, shops, feature)
    path = _save(client.get("/api/layers/shops/export.shp.zip"), tmp_path, "s.zip")
    with zipfile.ZipFile(path) as zf:
        zf.extractall(tmp_path / "s")
        assert {n.rsplit(".", 1)[0] for n in zf.namelist() if not n.endswith(".csv")} == {
            "shops_point",
            "shops_polygon",
        }
    key = short_names(shops)[shops.key_field]
    points = pyogrio.read_dataframe(tmp_path / "s/shops_point.shp")
    polygons = pyogrio.read_dataframe(tmp_path / "s/shops_polygon.shp")
    assert list(points[key]) == [point["properties"]["code"]] and list(polygons[key]) == [outline["properties"]["code"]]
    assert points.geometry[0].geom_type == "Point" and polygons.geometry[0].geom_type in ("Polygon", "MultiPolygon")
    gpkg = pyogrio.read_dataframe(_save(client.get("/api/layers/shops/export.gpkg"), tmp_path, "s.gpkg"))
    assert sorted(g.geom_type for g in gpkg.geometry) == ["MultiPolygon", "Point"]


@pytest.mark.parametrize("fmt", ["geojson", "gpkg", "shp.zip"])
def test_a_download_cut_short_leaves_no_file_and_frees_its_place(
    client: TestClient,
    stored: list[dict[str, Any]],
    tokens: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fmt: str,
) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    sent: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            sent.append(message["body"])
            raise OSError("the client went away")

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    path = f"/api/layers/parcels/export.{fmt}"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"authorization", f"Bearer {tokens['admin']}".encode())],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    assert client.portal is not None
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever the server makes of a broken connection
        client.portal.call(client.app, scope, receive, send)
    assert sent  # it had started sending
    assert list(tmp_path.glob("guatu-export-*")) == []  # the file removed, the cursor closed
    assert client.app.state.lanes["exports"].admitted == 0  # and its place in the lane freed
    assert client.get(path).status_code == 200  # the next one is served


@pytest.mark.parametrize("spec", ["2.3", "2.4"])
def test_a_client_that_stops_reading_lets_go_of_the_lane(monkeypatch: pytest.MonkeyPatch, spec: str) -> None:
    import anyio

    from api.routes import exports as routes

    monkeypatch.setattr(routes, "SEND_TIMEOUT_S", 0.2, raising=False)
    released: list[bool] = []

    async def rows() -> Any:
        while True:
            yield b"x" * 1000

    async def release() -> None:
        released.append(True)

    async def receive() -> Any:
        await anyio.sleep_forever()

    async def send(message: Any) -> None:
        if message["type"] == "http.response.body":
            await anyio.sleep_forever()  # the client's window is shut: it reads nothing more

    async def main() -> None:
        answer = routes._Released(rows(), release, media_type="application/geo+json")
        scope = {"type": "http", "asgi": {"spec_version": spec}, "path": "/api/layers/parcels/export.geojson"}
        with anyio.fail_after(10):  # before: held for ever, with the lane's place and a database transaction
            await answer(scope, receive, send)

    anyio.run(main)
    assert released == [True]
