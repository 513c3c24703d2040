"""Uploads in every format a surveyor brings: GeoPackage, zipped Shapefile, KML/KMZ, CSV, and hostile ones.

Fixtures are made here with GDAL itself (ogr2ogr from GeoJSON or CSV), as a desktop GIS would
make them; the real files of ../shared/data go through the endpoint when they are there.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from layers.base import REGISTRY
from spatial import formats
from tests.samples import COMMUNITY, X0, Y0, sample

OGR2OGR = shutil.which("ogr2ogr")
needs_gdal = pytest.mark.skipif(OGR2OGR is None, reason="ogr2ogr (gdal-bin) is not installed")
DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.exists(), reason="../shared/data is not beside this checkout")
UPLOADS = "/api/layers/{layer}/uploads"


def ogr2ogr(*args: str | Path) -> None:
    """Run GDAL's ogr2ogr (the real client a surveyor's desktop GIS is built on)."""
    assert OGR2OGR is not None
    done = subprocess.run([OGR2OGR, *map(str, args)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def post(client: TestClient, name: str, body: bytes, into: str = "shops", **params: Any) -> Any:
    """Upload BODY as a multipart file called NAME into layer INTO (PARAMS: the query, `layer` the file's own)."""
    files = {"file": (name, io.BytesIO(body), "application/octet-stream")}
    return client.post(UPLOADS.format(layer=into), files=files, params=params)


def shop(i: int, **changes: Any) -> dict[str, Any]:
    """Return a valid shop whose property names all fit a Shapefile's 10 characters."""
    feature = sample("shops")
    props = feature["properties"]
    props.pop("asking_rent")
    props.pop("community_code")  # 14 characters: a Shapefile would cut it to community_
    props.update(code=f"{COMMUNITY}21{i:05d}", **changes)
    feature["geometry"]["coordinates"] = [X0 + 0.0003 * i, Y0 + 0.0002]
    return feature


def parcel(i: int) -> dict[str, Any]:
    feature = sample("parcels")
    feature["properties"]["code"] = f"{COMMUNITY}01{i:05d}"
    x, y = X0 + 0.002 * i, Y0
    ring = [[x, y], [x + 0.001, y], [x + 0.001, y + 0.0009], [x, y + 0.0009], [x, y]]
    feature["geometry"] = {"type": "Polygon", "coordinates": [ring]}
    return feature


def geojson_file(tmp_path: Path, features: list[dict[str, Any]], name: str = "in.geojson") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}, ensure_ascii=False))
    return path


def codes(entries: list[dict[str, Any]]) -> set[str]:
    return {p["code"] for e in entries for p in e.get("problems", ())}


def stored(session: Session, layer_id: str, field: str) -> dict[str, Any]:
    layer = REGISTRY[layer_id]
    rows = session.execute(text(f"SELECT {layer.key_field}, {field} FROM {layer.table}")).all()
    return dict(rows)


def zipped(folder: Path) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for part in sorted(folder.iterdir()):
            zf.write(part, part.name)
    return out.getvalue()


# --------------------------------------------------------------------------- sniffing


@pytest.mark.parametrize(
    ("head", "name", "expected"),
    [
        (b"SQLite format 3\x00rest", None, "gpkg"),
        (b'\xef\xbb\xbf  {"type": "FeatureCollection"}', None, "geojson"),
        (b'<?xml version="1.0"?>\n<kml xmlns="http://www.opengis.net/kml/2.2">', None, "kml"),
        (b'<?xml version="1.0"?><gpx version="1.1">', "track.xml", "gpx"),
        (b"<?xml version='1.0'?><OGRVRTDataSource><OGRVRTLayer>", "x.kml", "unknown"),
        ("名称,经度,纬度\n甲,120.1,36.2\n".encode(), None, "csv"),
        ("名称,经度,纬度\n甲,120.1,36.2\n".encode("gbk"), None, "csv"),
        (b"name;x;y\n", None, "csv"),
        (b"a,b\n1,2\n", "points.csv", "csv"),
        (b"fgb\x03fgb\x00....", None, "fgb"),
        (b"  0\nSECTION\n  2\nHEADER", None, "dxf"),
        (b"\x00\x01\x02garbage", "data.bin", "unknown"),
        (b"\x00\x01\x02garbage", None, "geojson"),  # no name: the GeoJSON reader says what is wrong
        (b"\x00\x01\x02garbage", "parcels.gpkg", "gpkg"),
    ],
)
def test_sniff_by_magic_then_suffix_then_csv(head: bytes, name: str | None, expected: str) -> None:
    assert formats.sniff(head, name) == expected


def test_sniff_tells_zips_apart_by_their_members() -> None:
    def zip_of(*names: str) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as zf:
            for n in names:
                zf.writestr(n, b"x")
        return out.getvalue()

    assert formats.sniff(zip_of("a/地块.dbf", "a/地块.shp")) == "shp-zip"
    assert formats.sniff(zip_of("doc.kml", "files/icon.png")) == "kmz"
    assert formats.sniff(zip_of("[Content_Types].xml", "xl/workbook.xml")) == "xlsx"
    assert formats.sniff(zip_of("readme.txt")) == "zip"
    assert formats.zip_format(zip_of("readme.txt")) == "zip"


# --------------------------------------------------------------------------- GeoPackage


@needs_gdal
def test_geopackage_commits_with_its_layer_and_format_recorded(
    client: TestClient, session: Session, tmp_path: Path, archive_in_tmp: Path
) -> None:
    gpkg = tmp_path / "survey.gpkg"
    ogr2ogr("-f", "GPKG", gpkg, geojson_file(tmp_path, [parcel(1), parcel(2)]), "-nln", "地块", "-a_srs", "EPSG:4490")
    body = gpkg.read_bytes()
    response = post(client, "survey.gpkg", body, into="parcels")
    assert response.status_code == 201, response.text
    result = response.json()
    assert result["options"]["format"] == "gpkg" and result["options"]["layer"] == "地块"
    assert result["options"]["crs"] == "EPSG:4490"
    assert result["report"]["summary"]["new"] == 2
    described = result["report"]["file"]
    assert described["layers"] == ["地块"] and described["count"] == 2
    assert {"code", "land_use_code"} <= {f["name"] for f in described["fields"]}
    assert stored(session, "parcels", "land_use_code")[f"{COMMUNITY}0100001"] == "1201"
    assert list(archive_in_tmp.rglob(f"{result['sha256']}.gpkg")), "the file is kept under its own suffix"
    again = post(client, "survey.gpkg", body, into="parcels")
    assert again.json()["id"] == result["id"]  # the same bytes and options: the first result
    mailed = io.BytesIO()
    with zipfile.ZipFile(mailed, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(gpkg, "调查/survey.gpkg")
    zipped_gpkg = post(client, "survey.zip", mailed.getvalue(), into="parcels", dry_run="true")
    assert zipped_gpkg.status_code == 200, zipped_gpkg.text
    assert zipped_gpkg.json()["options"]["format"] == "gpkg-zip"
    assert zipped_gpkg.json()["report"]["summary"]["unchanged"] == 2


@needs_gdal
def test_geopackage_curves_are_linearised_with_a_note(client: TestClient, tmp_path: Path) -> None:
    props = {k: v for k, v in parcel(1)["properties"].items() if v is not None}
    x, y = X0, Y0
    arc = (
        f"CURVEPOLYGON(COMPOUNDCURVE(CIRCULARSTRING({x} {y},{x + 0.0005} {y + 0.0005},{x + 0.001} {y}),"
        f"({x + 0.001} {y},{x} {y})))"
    )
    csv_path = tmp_path / "curves.csv"
    header = ["WKT", *props]
    rows = [header, [arc, *(str(v) for v in props.values())]]
    csv_path.write_text("\n".join(",".join(f'"{c}"' for c in r) for r in rows) + "\n", encoding="utf-8")
    gpkg = tmp_path / "curves.gpkg"
    ogr2ogr(
        *("-f", "GPKG", gpkg, csv_path, "-nlt", "CURVEPOLYGON", "-a_srs", "EPSG:4490", "-nln", "curves"),
        *("-oo", "KEEP_GEOM_COLUMNS=NO"),
    )
    response = post(client, "curves.gpkg", gpkg.read_bytes(), into="parcels", dry_run="true")
    assert response.status_code == 200, response.text
    report = response.json()["report"]
    assert not codes(report["features"]), report["features"]
    notes = {n["code"]: n for n in report["file"]["notes"]}
    assert notes["curves_linearised"]["count"] == 1
    assert report["summary"]["rejected"] == 0 and report["summary"]["new"] == 1
    drawn = report["features"][0]["geometry"]
    ring = drawn["coordinates"][0] if drawn["type"] == "Polygon" else drawn["coordinates"][0][0]
    assert len(ring) > 10  # the arc became many straight segments


@needs_gdal
def test_geopackage_with_z_m_and_nulls(client: TestClient, tmp_path: Path) -> None:
    props = parcel(1)["properties"]
    x, y = X0, Y0
    ring = f"{x} {y} 5 1,{x + 0.001} {y} 5 2,{x + 0.001} {y + 0.001} 5 3,{x} {y} 5 4"
    csv_path = tmp_path / "zm.csv"
    lines = [
        "WKT,code,land_use_code,ownership,use_status,name",
        f'"POLYGON ZM(({ring}))",{props["code"]},1201,集体,闲置,',
        f",{COMMUNITY}0199999,1201,集体,闲置,无图形",
    ]
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    gpkg = tmp_path / "zm.gpkg"
    ogr2ogr(
        *("-f", "GPKG", gpkg, csv_path, "-nlt", "POLYGONZM", "-a_srs", "EPSG:4490", "-nln", "zm"),
        *("-oo", "KEEP_GEOM_COLUMNS=NO"),
    )
    response = post(client, "zm.gpkg", gpkg.read_bytes(), into="parcels", dry_run="true")
    assert response.status_code == 200, response.text
    report = response.json()["report"]
    notes = {n["code"]: n for n in report["file"]["notes"]}
    assert notes["z_dropped"]["count"] == 1 and notes["m_dropped"]["count"] == 1
    first, second = report["features"]
    assert first["status"] == "new"
    assert second["status"] == "rejected" and codes([second])  # a null geometry: refused with its code
    names = {f["name"]: f for f in report["file"]["fields"]}
    assert names["name"]["samples"] == ["无图形"]  # the first feature's null name is no sample


@needs_gdal
def test_a_geopackage_of_several_layers_asks_which(client: TestClient, tmp_path: Path) -> None:
    gpkg = tmp_path / "two.gpkg"
    ogr2ogr("-f", "GPKG", gpkg, geojson_file(tmp_path, [parcel(1)], "a.geojson"), "-nln", "地块", "-a_srs", "EPSG:4490")
    ogr2ogr("-f", "GPKG", "-update", gpkg, geojson_file(tmp_path, [parcel(2)], "b.geojson"), "-nln", "其他")
    body = gpkg.read_bytes()
    asked = post(client, "two.gpkg", body, into="parcels", dry_run="true")
    assert asked.status_code == 422 and asked.json()["code"] == "source_layer_required"
    assert "地块" in asked.json()["message"] and "其他" in asked.json()["message"]
    chosen = post(client, "two.gpkg", body, into="parcels", dry_run="true", layer="其他")
    assert chosen.status_code == 200, chosen.text
    assert chosen.json()["report"]["features"][0]["key"] == f"{COMMUNITY}0100002"
    unknown = post(client, "two.gpkg", body, into="parcels", layer="没有")
    assert unknown.status_code == 422 and unknown.json()["code"] == "source_layer_unknown"


# --------------------------------------------------------------------------- Shapefile


GBK_4490 = ("-lco", "ENCODING=GBK", "-a_srs", "EPSG:4490")


def _gbk_shapefile(tmp_path: Path, features: list[dict[str, Any]], name: str = "商铺") -> Path:
    folder = tmp_path / "shp"
    folder.mkdir()
    ogr2ogr("-f", "ESRI Shapefile", folder / f"{name}.shp", geojson_file(tmp_path, features), *GBK_4490)
    assert (folder / f"{name}.prj").exists()
    return folder


@needs_gdal
def test_a_gbk_shapefile_without_cpg_commits_with_correct_chinese(
    client: TestClient, session: Session, tmp_path: Path, archive_in_tmp: Path
) -> None:
    folder = _gbk_shapefile(tmp_path, [shop(1), shop(2, name="二号商铺")])
    (folder / "商铺.cpg").unlink()
    body = zipped(folder)
    assert formats.sniff(body[: formats.HEAD], "商铺.zip") == "shp-zip"
    response = post(client, "商铺.zip", body)
    assert response.status_code == 201, response.text
    result = response.json()
    assert result["options"]["format"] == "shp-zip"
    assert (result["options"]["encoding"], result["options"]["encoding_source"]) == ("GBK", "detected")
    assert result["report"]["file"]["crs"] == "EPSG:4490"  # from the .prj
    names = stored(session, "shops", "name")
    assert names[f"{COMMUNITY}2100002"] == "二号商铺" and names[f"{COMMUNITY}2100001"] == "南疃路12号商铺"
    assert set(stored(session, "shops", "status").values()) == {"闲置"}
    assert list(archive_in_tmp.rglob(f"{result['sha256']}.zip"))


@needs_gdal
def test_a_wrong_cpg_is_caught_and_chinese_field_names_read(client: TestClient, tmp_path: Path) -> None:
    feature = shop(1)
    feature["properties"]["备注"] = "临街"  # a Chinese field name the layer does not have
    folder = _gbk_shapefile(tmp_path, [feature])
    (folder / "商铺.cpg").write_text("UTF-8")
    body = zipped(folder)
    response = post(client, "wrong.zip", body, dry_run="true")
    assert response.status_code in (200, 422), response.text
    result = response.json()
    assert (result["options"]["encoding"], result["options"]["encoding_source"]) == ("GBK", "detected")
    notes = {n["code"]: n for n in result["report"]["file"]["notes"]}
    assert notes["cpg_wrong"]["stated"] == "UTF-8" and notes["cpg_wrong"]["detected"] == "GBK"
    fields = {f["name"]: f["samples"] for f in result["report"]["file"]["fields"]}
    assert fields["备注"] == ["临街"] and fields["name"] == ["南疃路12号商铺"]
    unknown = [p for e in result["report"]["features"] for p in e.get("problems", ()) if p["code"] == "unknown_field"]
    assert not unknown or any("备注" in p["message"] for p in unknown)
    declared = post(client, "wrong.zip", body, dry_run="true", encoding="GBK")
    assert declared.json()["options"]["encoding_source"] == "declared"
    garbled = post(client, "wrong.zip", body, dry_run="true", encoding="latin-1")
    assert "南疃路12号商铺" not in json.dumps(garbled.json()["report"]["file"]["fields"], ensure_ascii=False)
    refused = post(client, "wrong.zip", body, dry_run="true", encoding="no-such-codec")
    assert refused.status_code == 422 and refused.json()["code"] == "encoding_unknown"


@needs_gdal
def test_a_zip_of_two_shapefiles_asks_which_and_a_zip_without_shp_says_what_lacks(
    client: TestClient, tmp_path: Path
) -> None:
    folder = _gbk_shapefile(tmp_path, [shop(1)])
    ogr2ogr("-f", "ESRI Shapefile", folder / "其他.shp", geojson_file(tmp_path, [shop(2)], "b.geojson"))
    body = zipped(folder)
    asked = post(client, "two.zip", body, dry_run="true")
    assert asked.status_code == 422 and asked.json()["code"] == "source_layer_required"
    chosen = post(client, "two.zip", body, dry_run="true", layer="其他")
    assert chosen.status_code == 200, chosen.text
    assert chosen.json()["report"]["features"][0]["key"] == f"{COMMUNITY}2100002"
    for part in folder.glob("*.shp"):
        part.unlink()
    missing = post(client, "noshp.zip", zipped(folder))
    assert missing.status_code == 400 and missing.json()["code"] == "shp_incomplete"
    assert ".shp" in missing.json()["message"]


def test_hostile_zips_are_refused_before_anything_is_extracted(client: TestClient) -> None:
    def archive(entries: list[tuple[str, bytes]]) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in entries:
                zf.writestr(name, data)
        return out.getvalue()

    traversal = archive([("../../etc/a.shp", b"x"), ("../../etc/a.dbf", b"x"), ("../../etc/a.shx", b"x")])
    response = post(client, "evil.zip", traversal)
    assert response.status_code == 400 and response.json()["code"] == "zip_unsafe"

    crowded = archive([(f"{i}.shp", b"") for i in range(formats.MAX_MEMBERS + 1)])
    response = post(client, "crowded.zip", crowded)
    assert response.status_code == 400 and response.json()["code"] == "zip_too_big"

    # a bomb: the central directory claims a member unpacks to 2 GB
    bomb = bytearray(archive([("a.shp", b"\x00" * 1000), ("a.shx", b""), ("a.dbf", b"")]))
    central = bomb.index(b"PK\x01\x02")
    bomb[central + 24 : central + 28] = struct.pack("<I", 2_000_000_000)
    response = post(client, "bomb.zip", bytes(bomb))
    assert response.status_code == 400 and response.json()["code"] == "zip_too_big"

    plain = archive([("readme.txt", b"hello")])
    response = post(client, "plain.zip", plain)
    assert response.status_code == 400 and response.json()["code"] == "unsupported_format"


@needs_gdal
def test_a_geopackage_that_reading_would_never_end_is_refused_first(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    def made(name: str, *statements: str) -> bytes:
        path = tmp_path / name
        ogr2ogr("-f", "GPKG", path, geojson_file(tmp_path, [shop(1)]), "-nln", "shops")
        with sqlite3.connect(path) as con:
            for statement in statements:
                con.execute(statement)
        return path.read_bytes()

    endless = made(  # GDAL counted its rows for ever (a worker of the uploads lane held, memory growing)
        "endless.gpkg",
        "CREATE VIEW v AS WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT x AS fid, x FROM r",
        "INSERT INTO gpkg_contents (table_name, data_type, identifier) VALUES ('v', 'attributes', 'v')",
        "DELETE FROM gpkg_contents WHERE table_name = 'shops'",
        "DELETE FROM gpkg_geometry_columns WHERE table_name = 'shops'",
        "DROP TABLE shops",  # the view is then the file's only layer, read without asking
    )
    generated = made("generated.gpkg", "CREATE TABLE g (fid INTEGER PRIMARY KEY, big AS (zeroblob(900000000)))")
    virtual = made("virtual.gpkg", "CREATE VIRTUAL TABLE f USING fts4(body)")
    for name, body, layer in (
        ("endless.gpkg", endless, None),
        ("generated.gpkg", generated, "shops"),
        ("virtual.gpkg", virtual, "shops"),
    ):
        response = post(client, name, body, dry_run="true", **({"layer": layer} if layer else {}))
        assert response.status_code == 400 and response.json()["code"] == "gpkg_unsafe", response.text
    monkeypatch.setattr(formats, "MAX_TABLES", 40)  # 2,000 in use: 4,000 tables took GDAL 9 s, 40,000 a quarter hour
    crowded = made("crowded.gpkg", *[f"CREATE TABLE t{i} (x)" for i in range(40)])
    response = post(client, "crowded.gpkg", crowded, dry_run="true")
    assert response.status_code == 400 and response.json()["code"] == "gpkg_unsafe", response.text
    trigger = made("trigger.gpkg", "CREATE TRIGGER t AFTER INSERT ON shops BEGIN DELETE FROM shops; END")
    assert post(client, "trigger.gpkg", trigger, dry_run="true").status_code == 200  # a trigger runs on no read


def _nested_blocks_dxf(levels: int, fan: int) -> bytes:
    """Return a DXF whose block i inserts block i-1 FAN times: its one INSERT draws FAN**LEVELS lines."""
    out = ["0", "SECTION", "2", "HEADER", "9", "$ACADVER", "1", "AC1009", "0", "ENDSEC", "0", "SECTION", "2", "BLOCKS"]
    line = ["0", "LINE", "8", "0", "10", str(X0), "20", str(Y0), "11", str(X0 + 0.001), "21", str(Y0)]
    out += ["0", "BLOCK", "2", "B0", "70", "0", "10", "0", "20", "0", "30", "0", "3", "B0", *line, "0", "ENDBLK"]
    for i in range(1, levels + 1):
        out += ["0", "BLOCK", "2", f"B{i}", "70", "0", "10", "0", "20", "0", "30", "0", "3", f"B{i}"]
        for _ in range(fan):
            out += ["0", "INSERT", "8", "0", "2", f"B{i - 1}", "10", "0", "20", "0"]
        out += ["0", "ENDBLK"]
    out += ["0", "ENDSEC", "0", "SECTION", "2", "ENTITIES", *line]
    out += ["0", "INSERT", "8", "0", "2", f"B{levels}", "10", str(X0), "20", str(Y0), "0", "ENDSEC", "0", "EOF"]
    return ("\n".join(out) + "\n").encode()


@needs_gdal
def test_a_dxf_of_nested_blocks_is_read_without_drawing_them_all(client: TestClient) -> None:
    bomb = _nested_blocks_dxf(9, 10)  # 3 KB: a billion lines when every INSERT is drawn (minutes, then memory)
    response = post(client, "bomb.dxf", bomb, into="revenue_points", dry_run="true")
    assert response.status_code in (200, 422), response.text
    described = response.json()["report"]["file"]
    assert described["format"] == "dxf" and described["layer"] == "entities" and described["count"] == 2


def test_garbage_and_vsi_names_never_reach_gdal(client: TestClient) -> None:
    junk = bytes(range(256)) * 8
    response = post(client, "data.bin", junk)
    assert response.status_code == 400 and response.json()["code"] == "unsupported_format"
    response = post(client, "parcels.gpkg", junk)
    assert response.status_code == 400 and response.json()["code"] == "unreadable_file"
    assert "GeoPackage" in response.json()["message"]
    fake = b"SQLite format 3\x00" + b"\x00" * 200
    response = post(client, "/vsicurl/http://127.0.0.1:1/x.gpkg", fake)
    assert response.status_code == 400 and response.json()["code"] == "unreadable_file"
    assert "vsicurl" not in response.json()["message"]
    vrt = b'<OGRVRTDataSource><OGRVRTLayer name="x"><SrcDataSource>/etc/passwd</SrcDataSource></OGRVRTLayer>'
    response = post(client, "x.vrt", vrt + b"</OGRVRTDataSource>")
    assert response.status_code == 400 and response.json()["code"] == "unsupported_format"


# --------------------------------------------------------------------------- KML / KMZ

PHONE_KML = """<?xml version="1.0" encoding="UTF-8"?>
<kml xmlns="http://www.opengis.net/kml/2.2" xmlns:gx="http://www.google.com/kml/ext/2.2">
<Document>
  <name>两步路 2024-05-01 踏勘</name>
  <Schema name="shop" id="shop">
    <SimpleField name="code" type="string"/><SimpleField name="floor" type="int"/>
  </Schema>
  <Folder>
    <name>商铺</name>
    <Placemark>
      <name>南疃路12号商铺</name>
      <ExtendedData>
        <SchemaData schemaUrl="#shop"><SimpleData name="code">{code1}</SimpleData>
        <SimpleData name="floor">1</SimpleData></SchemaData>
        <Data name="ownership"><value>不明</value></Data>
        <Data name="status"><value>闲置</value></Data>
      </ExtendedData>
      <Point><coordinates>{x1},{y},35.2</coordinates></Point>
    </Placemark>
    <Placemark>
      <name>二号商铺</name>
      <ExtendedData>
        <SchemaData schemaUrl="#shop"><SimpleData name="code">{code2}</SimpleData>
        <SimpleData name="floor">2</SimpleData></SchemaData>
        <Data name="ownership"><value>不明</value></Data>
        <Data name="status"><value>闲置</value></Data>
      </ExtendedData>
      <Point><coordinates>{x2},{y},35.9</coordinates></Point>
    </Placemark>
  </Folder>
  <Folder>
    <name>轨迹</name>
    <Placemark>
      <name>踏勘轨迹</name><description>手机记录</description>
      <gx:Track><when>2024-05-01T08:00:00Z</when>
        <gx:coord>{x1} {y} 30</gx:coord><gx:coord>{x2} {y} 31</gx:coord></gx:Track>
    </Placemark>
  </Folder>
</Document>
</kml>
"""


def _phone_kml() -> bytes:
    return PHONE_KML.format(
        code1=f"{COMMUNITY}2100001", code2=f"{COMMUNITY}2100002", x1=X0, x2=X0 + 0.0003, y=Y0 + 0.0002
    ).encode()


def test_a_phone_apps_kml_folder_commits_and_the_whole_file_is_described(client: TestClient, session: Session) -> None:
    whole = post(client, "踏勘.kml", _phone_kml(), dry_run="true")
    assert whole.status_code == 200, whole.text
    assert whole.json()["report"]["summary"]["rejected"] == 1  # the track is no shop; the folder of shops is
    assert codes(whole.json()["report"]["features"][2:]) >= {"geometry_type_not_allowed"}
    assert whole.json()["report"]["fields"]["extra"]  # the app's own fields, kept as other attributes
    described = whole.json()["report"]["file"]
    assert described["format"] == "kml" and described["layers"] == ["商铺", "轨迹"] and described["count"] == 3
    assert {n["code"] for n in described["notes"]} >= {"kml_folders_merged", "z_dropped"}
    fields = {f["name"]: f for f in described["fields"]}
    assert fields["floor"]["type"] == "integer" and fields["ownership"]["samples"] == ["不明"]
    assert fields["description"]["samples"] == ["手机记录"]
    shops = post(client, "踏勘.kml", _phone_kml(), layer="商铺")
    assert shops.status_code == 201, shops.text
    assert shops.json()["options"]["crs"] == "EPSG:4326" and shops.json()["options"]["layer"] == "商铺"
    assert stored(session, "shops", "floor") == {f"{COMMUNITY}2100001": 1, f"{COMMUNITY}2100002": 2}


def test_a_kmz_is_read_from_its_doc_kml(client: TestClient, session: Session) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("doc.kml", _phone_kml())
        zf.writestr("files/icon.png", b"\x89PNG")
    response = post(client, "踏勘.kmz", out.getvalue(), layer="商铺")
    assert response.status_code == 201, response.text
    assert response.json()["options"]["format"] == "kmz"
    assert stored(session, "shops", "name")[f"{COMMUNITY}2100002"] == "二号商铺"


def test_a_kml_declared_gbk_is_recoded(client: TestClient) -> None:
    raw = _phone_kml().decode().replace('encoding="UTF-8"', 'encoding="GBK"').encode("gbk")
    response = post(client, "gbk.kml", raw, dry_run="true", layer="商铺")
    assert response.status_code == 200, response.text
    names = {f["name"]: f["samples"] for f in response.json()["report"]["file"]["fields"]}
    assert names["name"] == ["南疃路12号商铺", "二号商铺"]


def test_a_broken_kml_is_unreadable() -> None:
    with pytest.raises(Exception) as caught:
        formats._read_kml(b"<kml><Document><Placemark>", "kml", None)
    assert getattr(caught.value, "code", None) == "unreadable_file"


def test_a_deeply_nested_kml_is_refused_not_a_crash(client: TestClient) -> None:
    point = f"<Point><coordinates>{X0},{Y0}</coordinates></Point>"
    nested = "<MultiGeometry>" * 5000 + point + "</MultiGeometry>" * 5000  # recursion in Python: a 500 before
    body = f'<kml xmlns="http://www.opengis.net/kml/2.2"><Placemark><name>a</name>{nested}</Placemark></kml>'
    response = post(client, "deep.kml", body.encode(), dry_run="true")
    assert response.status_code == 400 and response.json()["code"] == "unreadable_file", response.text
    folders = "<Folder><name>f</name>" * 20_000 + "</Folder>" * 20_000  # each folder's path: quadratic before
    response = post(client, "folders.kml", f"<kml>{folders}</kml>".encode(), dry_run="true")
    assert response.status_code == 400 and response.json()["code"] == "unreadable_file", response.text
    depth = formats.MAX_DEPTH - 5  # kml, Document, then the folders, Placemark, Point, coordinates
    kept = "<Folder>" * depth + f"<Placemark>{point}</Placemark>" + "</Folder>" * depth
    assert formats._read_kml(f"<kml><Document>{kept}</Document></kml>".encode(), "kml", None).count == 1


def test_a_kml_of_junk_elements_is_read_without_holding_them() -> None:
    import tracemalloc

    placemark = f"<Placemark><name>a</name><Point><coordinates>{X0},{Y0}</coordinates></Point></Placemark>"
    raw = f"<kml><Document>{'<a/>' * 300_000}{placemark}</Document></kml>".encode()
    tracemalloc.start()
    try:
        read = formats._read_kml(raw, "kml", None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert read.count == 1
    assert peak < 10 * len(raw), peak  # the tree held every element before: about 30 times the file


def test_a_kml_of_countless_folders_is_described_briefly(client: TestClient) -> None:
    placemark = f"<Placemark><name>a</name><Point><coordinates>{X0},{Y0}</coordinates></Point></Placemark>"
    body = f"<kml><Document>{'<Folder/>' * 50_000}{placemark}</Document></kml>".encode()
    response = post(client, "folders.kml", body, dry_run="true")
    assert response.status_code in (200, 422), response.text
    described = response.json()["report"]["file"]  # kept in the upload's record: every folder's name was in it
    assert len(described["layers"]) == formats.LISTED_LAYERS and described["layers_total"] == 50_000
    asked = post(client, "folders.kml", body, dry_run="true", layer="no such folder")
    assert asked.status_code == 422 and len(asked.json()["details"]["layers"]) == formats.LISTED_LAYERS


def test_a_kmz_whose_kml_unpacks_too_big_is_refused(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("doc.kml", _phone_kml() + b" " * 100_000)
    monkeypatch.setattr(formats, "MAX_KML_BYTES", 100_000)  # 200 MB in use: read in memory, never the zip's 1 GB
    response = post(client, "big.kmz", out.getvalue(), dry_run="true")
    assert response.status_code == 400 and response.json()["code"] == "zip_too_big", response.text


# --------------------------------------------------------------------------- CSV


def _shop_rows(encoding: str) -> bytes:
    lines = ["编码,name,ownership,status,floor,floor_area,经度,纬度"]
    for i in (1, 2):
        lines.append(f"{COMMUNITY}21{i:05d},{i}号铺,不明,闲置,{i},85.5,{X0 + 0.0003 * i},{Y0 + 0.0002}")
    return ("\n".join(lines) + "\n").replace("编码", "code").encode(encoding)


def test_a_csv_of_lon_lat_points_commits_typed(client: TestClient, session: Session) -> None:
    response = post(client, "points.csv", _shop_rows("utf-8"))
    assert response.status_code == 201, response.text
    result = response.json()
    assert result["options"]["format"] == "csv"
    assert (result["options"]["encoding"], result["options"]["encoding_source"]) == ("UTF-8", "utf-8")
    fields = {f["name"]: f["type"] for f in result["report"]["file"]["fields"]}
    assert fields == {"code": "string", "name": "string", "ownership": "string", "status": "string"} | {
        "floor": "integer",
        "floor_area": "real",
    }  # the coordinate columns became the geometry; the 12-digit code stays text
    assert stored(session, "shops", "floor_area")[f"{COMMUNITY}2100002"] == 85.5


def test_a_csv_number_column_named_by_its_label_is_read_as_a_number(client: TestClient, session: Session) -> None:
    """A CSV's text is read as a number where the column maps (here by its Chinese label) to a number field."""
    body = _shop_rows("utf-8").replace(b",floor,floor_area,", "，楼层,建筑面积(m²),".replace("，", ",").encode())
    response = post(client, "labels.csv", body)
    assert response.status_code == 201, response.text
    assert response.json()["report"]["fields"]["mapped"] == {"楼层": "floor", "建筑面积(m²)": "floor_area"}
    assert stored(session, "shops", "floor_area")[f"{COMMUNITY}2100002"] == 85.5
    assert stored(session, "shops", "floor")[f"{COMMUNITY}2100001"] == 1


def test_a_gbk_csv_without_a_name_is_recognised_and_decoded(client: TestClient, session: Session) -> None:
    response = client.post(UPLOADS.format(layer="shops"), content=_shop_rows("gbk"))
    assert response.status_code == 201, response.text
    assert (response.json()["options"]["encoding"], response.json()["options"]["encoding_source"]) == (
        "GBK",
        "detected",
    )
    assert stored(session, "shops", "name")[f"{COMMUNITY}2100001"] == "1号铺"


def test_a_csv_with_a_wkt_column_and_bad_rows(client: TestClient) -> None:
    props = parcel(1)["properties"]
    x, y = X0, Y0
    wkt = f"POLYGON(({x} {y},{x + 0.001} {y},{x + 0.001} {y + 0.0009},{x} {y + 0.0009},{x} {y}))"
    lines = [
        "WKT,code,land_use_code,ownership,use_status",
        f'"{wkt}",{props["code"]},1201,集体,闲置',
        f'"POLYGON((1 2, oops",{COMMUNITY}0100009,1201,集体,闲置',
    ]
    response = post(client, "parcels.csv", ("\n".join(lines) + "\n").encode(), into="parcels", dry_run="true")
    assert response.status_code == 200, response.text
    report = response.json()["report"]
    assert report["features"][0]["status"] == "new"
    assert report["features"][1]["status"] == "rejected"
    notes = {n["code"]: n for n in report["file"]["notes"]}
    assert notes["bad_coordinates"]["rows"] == [3]
    assert {f["name"] for f in report["file"]["fields"]} == {"code", "land_use_code", "ownership", "use_status"}
    assert {f["name"]: f["type"] for f in report["file"]["fields"]}["land_use_code"] == "integer"  # described so
    assert report["features"][0]["status"] == "new"  # yet read as the code it is for this layer
    no_coordinates = post(client, "list.csv", b"code,name\n1,a\n")
    assert no_coordinates.status_code == 422 and no_coordinates.json()["code"] == "csv_no_geometry"


def test_a_csv_or_kml_of_too_many_columns_is_refused(client: TestClient, tmp_path: Path) -> None:
    columns = 20_000  # one header line of 20,000 names took 7 s, 200,000 hours (names made unique in a list)
    header = "lon,lat," + ",".join("" for _ in range(columns))
    response = post(client, "wide.csv", f"{header}\n{X0},{Y0}\n".encode(), dry_run="true")
    assert response.status_code == 400 and response.json()["code"] == "too_many_columns", response.text
    data = "".join(f'<Data name="f{i}"><value>1</value></Data>' for i in range(formats.MAX_COLUMNS + 1))
    kml = f"<kml><Placemark><ExtendedData>{data}</ExtendedData></Placemark></kml>"
    response = post(client, "wide.kml", kml.encode(), dry_run="true")
    assert response.status_code == 400 and response.json()["code"] == "too_many_columns", response.text
    wide_row = f"lon,lat\n{X0},{Y0}," + ",".join("1" for _ in range(columns)) + "\n"  # the header short, a row long
    response = post(client, "row.csv", wide_row.encode(), dry_run="true")
    assert response.status_code == 400 and response.json()["code"] == "too_many_columns", response.text
    fine = "lon,lat," + ",".join(f"c{i}" for i in range(formats.MAX_COLUMNS - 2))
    (tmp_path / "fine.csv").write_text(f"{fine}\n{X0},{Y0}\n")
    assert len(formats.read_vector(tmp_path / "fine.csv", "csv").fields) == formats.MAX_COLUMNS - 2


def test_the_kept_report_never_shows_a_personal_sample_in_full(client: TestClient) -> None:
    grid = sample("grids")["properties"]
    lines = [
        "网格编码,网格名称,网格类型,社区代码,生效日期,网格员电话,LXFS,备注2,WKT",
        f"{grid['code']},{grid['name']},{grid['kind']},{COMMUNITY},2024-01-01,5551234,"
        f'8675309,13912345678,"POLYGON(({X0} {Y0},{X0 + 0.001} {Y0},{X0 + 0.001} {Y0 + 0.001},{X0} {Y0}))"',
    ]
    body = ("\n".join(lines) + "\n").encode()
    response = post(client, "grids.csv", body, into="grids", dry_run="true", mapping='{"LXFS": "manager_phone"}')
    assert response.status_code in (200, 422), response.text
    for answer in (response.json(), client.get(f"/api/uploads/{response.json()['id']}").json()):
        samples = {f["name"]: f["samples"] for f in answer["report"]["file"]["fields"]}
        kept = json.dumps(answer["report"]["file"], ensure_ascii=False)
        for secret in ("5551234", "8675309", "13912345678"):  # by its label, by the mapping, by its value
            assert secret not in kept, kept
        assert samples["网格员电话"] == ["5*****4"] and samples["备注2"] == ["1*********8"]
        assert samples["网格名称"] == [grid["name"]]  # the rest as read


def test_a_csv_of_too_many_cells_is_refused_as_it_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formats, "MAX_CELLS", 10_000)  # 20 million in use: 200 MB of "1," was 100 million cells
    header = "lon,lat," + ",".join(f"c{i}" for i in range(98))
    rows = "\n".join(f"{X0},{Y0}," + ",".join("1" for _ in range(98)) for _ in range(101))
    (tmp_path / "cells.csv").write_text(f"{header}\n{rows}\n")
    with pytest.raises(Exception) as caught:
        formats.read_vector(tmp_path / "cells.csv", "csv")
    assert getattr(caught.value, "code", None) == "too_many_cells"
    (tmp_path / "fewer.csv").write_text(f"{header}\n" + "\n".join(rows.split("\n")[:98]) + "\n")
    assert formats.read_vector(tmp_path / "fewer.csv", "csv").count == 98


def test_a_csv_keeps_leading_zeros_of_codes() -> None:
    values, kind = formats._typed(["0101", "1201", None])
    assert kind == "string" and values == ["0101", "1201", None]
    assert formats._typed(["1", "-2", ""]) == ([1, -2, None], "integer")
    assert formats._typed(["1.5", "2"]) == ([1.5, 2.0], "real")
    assert formats._typed(["370214001009"])[1] == "string"  # a long code is text, not a number


# --------------------------------------------------------------------------- the CRS a file states


@needs_gdal
def test_the_users_crs_wins_over_the_files_with_a_note(client: TestClient, tmp_path: Path) -> None:
    gpkg = tmp_path / "stated.gpkg"
    ogr2ogr("-f", "GPKG", gpkg, geojson_file(tmp_path, [parcel(1)]), "-a_srs", "EPSG:4326", "-nln", "p")
    response = post(client, "stated.gpkg", gpkg.read_bytes(), into="parcels", dry_run="true", crs="CGCS2000")
    assert response.status_code == 200, response.text
    notes = {n["code"]: n for n in response.json()["report"]["file"]["notes"]}
    assert notes["crs_conflict"]["file_crs"] == "EPSG:4326" and response.json()["options"]["crs"] == "EPSG:4490"
    plain = post(client, "stated.gpkg", gpkg.read_bytes(), into="parcels", dry_run="true")
    assert plain.json()["options"]["crs"] == "EPSG:4326"
    assert "notes" not in plain.json()["report"]["file"]


# --------------------------------------------------------------------------- real files


@needs_data
def test_the_momepy_geopackage_asks_for_a_layer_then_lies_outside_the_extent(
    client: TestClient, tmp_path: Path
) -> None:
    source = DATA / "momepy-bubenec" / "bubenec.gpkg"
    body = source.read_bytes()
    asked = post(client, "bubenec.gpkg", body, into="parcels", dry_run="true")
    assert asked.status_code == 422 and asked.json()["code"] == "source_layer_required"
    assert all(name in asked.json()["message"] for name in ("buildings", "plots", "tessellation", "streets"))
    plots = post(client, "bubenec.gpkg", body, into="parcels", dry_run="true", layer="plots")
    assert plots.status_code == 200, plots.text
    result = plots.json()
    assert result["options"]["crs"] == "EPSG:3857" and result["report"]["file"]["count"] == 407
    assert codes(result["report"]["features"]) >= {"required"}  # Prague's cadastre has other fields
    assert result["report"]["fields"]["extra"] and not result["report"]["fields"]["mapped"]
    lon, lat = result["report"]["features"][0]["geometry"]["coordinates"][0][0]
    assert 14.3 < lon < 14.5 and 50.0 < lat < 50.2  # read from web-mercator metres, as the file states
    if OGR2OGR is None:
        return
    fitted = tmp_path / "plots.gpkg"  # the same plots with this layer's fields: only the place is wrong
    sql = (
        "SELECT geom, printf('370214001009%07d', fid) AS code, '1201' AS land_use_code, "
        "'集体' AS ownership, '闲置' AS use_status FROM plots"
    )
    ogr2ogr("-f", "GPKG", fitted, source, "-dialect", "SQLite", "-sql", sql, "-nln", "plots")
    outside = post(client, "plots.gpkg", fitted.read_bytes(), into="parcels", dry_run="true")
    assert outside.status_code == 200, outside.text
    assert codes(outside.json()["report"]["features"]) == {"outside_extent"}


@needs_data
def test_the_harbin_grids_and_taiwan_villages_get_their_verdicts(client: TestClient, tmp_path: Path) -> None:
    grids = DATA / "harbin-songbei-grids" / "songbei_4_grids.redacted.geojson"
    response = post(client, grids.name, grids.read_bytes(), into="grids", dry_run="true")
    assert response.status_code in (200, 422), response.text
    found = codes(response.json()["report"]["features"])
    assert found >= {"required", "code_format"}  # no layer (级别) given; codes of 16 characters, a letter last
    assert "Shape_Area" in response.json()["report"]["fields"]["extra"]  # the file's own fields are kept
    villages = DATA / "g0v-twgeojson" / "derived" / "twVillage1982_chiayi_subset.geojson"
    response = post(client, villages.name, villages.read_bytes(), into="divisions", dry_run="true")
    assert response.status_code in (200, 422), response.text
    found = codes(response.json()["report"]["features"])
    assert "required" in found and "unknown_field" not in found  # mapped or kept, never refused for a name
    if OGR2OGR is not None:  # the same villages as a GeoPackage: the same verdict through GDAL
        gpkg = tmp_path / "villages.gpkg"
        ogr2ogr("-f", "GPKG", gpkg, villages, "-nln", "villages")
        again = post(client, "villages.gpkg", gpkg.read_bytes(), into="divisions", dry_run="true")
        assert again.status_code in (200, 422), again.text
        assert again.json()["report"]["file"]["count"] == response.json()["report"]["summary"]["total"]
        assert codes(again.json()["report"]["features"]) == found


# --------------------------------------------------------------------------- the rest GDAL reads


@needs_gdal
def test_flatgeobuf_and_gpx_through_gdal(client: TestClient, session: Session, tmp_path: Path) -> None:
    fgb = tmp_path / "shops.fgb"
    ogr2ogr("-f", "FlatGeobuf", fgb, geojson_file(tmp_path, [shop(1), shop(2)]), "-a_srs", "EPSG:4490")
    assert formats.sniff(fgb.read_bytes()[: formats.HEAD]) == "fgb"
    response = post(client, "shops.fgb", fgb.read_bytes())
    assert response.status_code == 201, response.text
    assert response.json()["options"]["format"] == "fgb" and len(stored(session, "shops", "name")) == 2
    points = [{"type": "Feature", "properties": {"name": "井"}, "geometry": {"type": "Point", "coordinates": [X0, Y0]}}]
    gpx = tmp_path / "walk.gpx"
    ogr2ogr("-f", "GPX", gpx, geojson_file(tmp_path, points, "w.geojson"), "-nln", "waypoints")
    response = post(client, "walk.gpx", gpx.read_bytes(), dry_run="true")
    assert response.status_code == 200, response.text
    described = response.json()["report"]["file"]
    assert described["format"] == "gpx" and described["layer"] == "waypoints" and described["count"] == 1
    assert "name" in {f["name"] for f in described["fields"]}


def test_layer_and_encoding_enter_the_options_key_only_when_set() -> None:
    from layers.uploads import UploadOptions

    shops = REGISTRY["shops"]
    plain = UploadOptions().key(shops)
    assert plain == UploadOptions(filename="a.gpkg").key(shops)  # the name is no option
    assert UploadOptions(source_layer="地块").key(shops) != plain
    assert UploadOptions(encoding="GBK").key(shops) not in (plain, UploadOptions(source_layer="GBK").key(shops))
