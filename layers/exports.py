"""A layer's filtered ledger in GIS formats: GeoJSON, CSV and KML streamed, GeoPackage and Shapefile as files.

Rows come from the same query as the Excel export (:func:`layers.workbook.select_sql`): the
map's filter, the user's area (row-level security), personal fields as the user may see them
(masked by the database's ``guatu_shown_<layer>`` function, never by this module).

The text formats are produced as the rows arrive from a server-side cursor, a batch at a time
(:meth:`Export.chunks`): memory holds one batch whatever the size of the county. GeoPackage
and Shapefile are written by pyogrio (GDAL), a batch at a time in append mode, into a temporary
directory the caller removes once sent (:meth:`Export.write_file`).

Precision: GeoJSON and KML carry :data:`DECIMALS` decimals of a degree (about 1 cm); WKT (CSV),
GeoPackage and Shapefile the stored doubles. GeoJSON follows RFC 7946 (longitude/latitude of
CGCS2000, taken as WGS 84 as the RFC's clients do: they differ by centimetres; exterior rings
counter-clockwise); KML is in WGS 84 by its definition (PostGIS transforms). A Shapefile's rings
are written clockwise outside by GDAL, as the format wants.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from xml.sax.saxutils import escape, quoteattr

import orjson
from sqlalchemy import text
from sqlalchemy.orm import Session

from layers.access import Actor, personal_fields
from layers.base import EXTRA, EXTRA_EN, EXTRA_ZH, Field, Layer
from layers.stats import Filter
from layers.workbook import (
    AREA_M2_LABEL,
    ID_LABEL,
    LAT_LABEL,
    LON_LABEL,
    WKT_LABEL,
    Sheet,
    count_rows,
    select_sql,
)
from spatial.errors import InvalidInput

FormatId = Literal["geojson", "csv", "kml", "gpkg", "shp.zip"]
Encoding = Literal["utf-8", "gbk"]

DECIMALS = 7
"""Decimals of a degree in GeoJSON and KML coordinates (1e-7° ≈ 1 cm)."""
BATCH = 1000
"""Rows read from the cursor and written at a time."""
MAX_STREAMED_ROWS = 2_000_000
"""Rows a streamed export (GeoJSON, CSV, KML) holds at most: a county's parcels (about a million) fit;
memory does not grow with it, only the time the database and the lane spend."""
MAX_FILE_ROWS = 1_000_000
"""Rows a GeoPackage or Shapefile holds at most: it is written to the server's disk before it is sent,
and a Shapefile's .dbf stops at 2 GB (a million parcels with their fields is about 1 GB)."""
SHP_NAME_LENGTH = 10
"""Characters a dBASE field name holds."""
SHP_TEXT_BYTES = 254
"""Bytes a dBASE text value holds: longer ones are cut (in the field list: 字段说明)."""
FIELD_LIST = "字段说明.csv"
"""The field list inside a Shapefile's zip: short name → field, Chinese and English label."""
BOM = "\ufeff".encode()
_FAMILY = {
    "point": "Point",
    "multipoint": "MultiPoint",
    "linestring": "MultiLineString",
    "multilinestring": "MultiLineString",
    "polygon": "MultiPolygon",
    "multipolygon": "MultiPolygon",
}
"""The geometry type a file holds for each stored type (polygons and lines as multi, as stored)."""
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""A CSV cell starting so is a formula to Excel: it is written behind a quote (') and stays text."""


@dataclass(frozen=True)
class Format:
    """An export format: its file extension, media type, name, and whether it is streamed as produced."""

    id: FormatId
    zh: str
    en: str
    media_type: str
    streamed: bool


FORMATS: dict[str, Format] = {
    f.id: f
    for f in (
        Format("geojson", "GeoJSON", "GeoJSON (RFC 7946)", "application/geo+json", True),
        Format("csv", "CSV 表格", "CSV (WKT, lon/lat)", "text/csv; charset=utf-8", True),
        Format("kml", "KML (奥维/Google 地球)", "KML", "application/vnd.google-earth.kml+xml", True),
        Format("gpkg", "GeoPackage", "GeoPackage", "application/geopackage+sqlite3", False),
        Format("shp.zip", "Shapefile (zip)", "Shapefile (zipped)", "application/zip", False),
    )
}


def _geometry(fmt: FormatId) -> tuple[str, ...]:
    """Return the geometry expressions the rows of FMT end with."""
    if fmt == "geojson":
        return (f"ST_AsGeoJSON(ST_ForcePolygonCCW(geom), {DECIMALS}, 0)",)
    if fmt == "kml":
        return (f"ST_AsKML(geom, {DECIMALS})",)
    if fmt == "csv":
        return ("ST_AsText(geom)", "ST_X(ST_PointOnSurface(geom))", "ST_Y(ST_PointOnSurface(geom))")
    return ("ST_AsBinary(geom)",)


def short_names(layer: Layer) -> dict[str, str]:
    """Return {column: its dBASE name}: at most 10 characters, unique without regard to case.

    The columns are the fields, ``area_m2`` for a layer with an area, ``id`` and ``extra``.
    """
    out: dict[str, str] = {}
    taken: set[str] = set()
    for name in _columns(layer):
        short = name[:SHP_NAME_LENGTH]
        n = 1
        while short.lower() in taken:
            suffix = str(n)
            short = name[: SHP_NAME_LENGTH - len(suffix)] + suffix
            n += 1
        taken.add(short.lower())
        out[name] = short
    return out


def _columns(layer: Layer) -> list[str]:
    """Return the attribute columns of a GIS export: the fields, the area, the id, the other attributes (JSON)."""
    return [*layer.field_names, *(["area_m2"] if layer.has_area else []), "id", EXTRA]


def _value(f: Field | None, value: Any) -> Any:
    """Return VALUE as JSON, CSV and KML write it (dates as YYYY-MM-DD, areas to the centimetre)."""
    if value is None:
        return None
    if isinstance(value, dt.date):
        return value.isoformat()
    if f is None and isinstance(value, float):
        return round(value, 2)
    return value


@dataclass
class Export:
    """One layer's filtered rows in one format, for one user: produced once (a stream or a file)."""

    layer: Layer
    flt: Filter
    fmt: FormatId
    actor: Actor | None
    encoding: Encoding = "utf-8"
    rows: int = 0
    shown_full: list[int] = field(default_factory=list)
    """Ids of the features written with personal values in full (logged by the caller)."""

    @property
    def format(self) -> Format:
        """Return the format's description."""
        return FORMATS[self.fmt]

    @property
    def cap(self) -> int:
        """Return the rows this export may hold."""
        return MAX_STREAMED_ROWS if self.format.streamed else MAX_FILE_ROWS

    def count(self, session: Session) -> int:
        """Return how many rows the export will hold; refuse one beyond its cap (export_too_large, 422)."""
        return count_rows(session, [Sheet(self.layer, self.flt)], self.cap)[self.layer.id]

    def _full(self) -> bool:
        return bool(personal_fields(self.layer)) and self.actor is not None and self.actor.sees_personal()

    def batches(self, session: Session) -> Iterator[list[tuple[int, dict[str, Any], list[Any]]]]:
        """Yield the rows in batches as (id, {column: value}, [geometry values]), from a server-side cursor."""
        sql, params = select_sql(self.layer, self.flt, _geometry(self.fmt))
        names = self.layer.field_names
        geometry = len(_geometry(self.fmt))
        full = self._full()
        result = session.execute(text(sql).execution_options(yield_per=BATCH), params)
        try:
            for part in result.partitions(BATCH):
                batch = []
                for row in part:
                    fid, _version, *values = row
                    props = dict(zip(names, values[: len(names)], strict=True))
                    if self.layer.has_area:
                        props["area_m2"] = values[len(names)]
                    props["id"] = fid
                    props[EXTRA] = values[len(names) + int(self.layer.has_area)]  # JSON text, or None
                    batch.append((int(fid), props, list(values[len(values) - geometry :])))
                    if full:
                        self.shown_full.append(int(fid))
                self.rows += len(batch)
                yield batch
        finally:
            result.close()

    # ------------------------------------------------------------ streamed formats

    def chunks(self, session: Session) -> Iterator[bytes]:
        """Yield the export's bytes: a head, one chunk per batch of rows, a tail."""
        head, row, sep, tail = {
            "geojson": (self._geojson_head, self._geojson_row, b",\n", b"\n]}\n"),
            "csv": (self._csv_head, self._csv_row, b"", b""),
            "kml": (self._kml_head, self._kml_row, b"", b"</Folder>\n</Document>\n</kml>\n"),
        }[self.fmt]
        yield head()
        first = True
        for batch in self.batches(session):
            parts = [row(fid, props, geom) for fid, props, geom in batch]
            if parts:
                yield (b"" if first else sep) + sep.join(parts)
                first = False
        yield tail

    def _geojson_head(self) -> bytes:
        return b'{"type":"FeatureCollection","features":[\n'

    def _geojson_row(self, fid: int, props: dict[str, Any], geom: list[Any]) -> bytes:
        properties = {k: self._out(k, v) for k, v in props.items()}
        if properties[EXTRA] is not None:
            properties[EXTRA] = orjson.Fragment(properties[EXTRA])  # an object, as the file brought it
        return b'{"type":"Feature","id":%d,"geometry":%s,"properties":%s}' % (
            fid,
            geom[0].encode(),
            orjson.dumps(properties),
        )

    def _csv_labels(self) -> list[str]:
        labels = [self.layer.field(n).zh for n in self.layer.field_names]
        if self.layer.has_area:
            labels.append(AREA_M2_LABEL)
        return [*labels, ID_LABEL, EXTRA_ZH, WKT_LABEL, LON_LABEL, LAT_LABEL]

    def _csv_line(self, cells: list[Any]) -> bytes:
        out = io.StringIO()
        csv.writer(out, lineterminator="\r\n").writerow(cells)
        return out.getvalue().encode()

    def _csv_head(self) -> bytes:
        return BOM + self._csv_line(self._csv_labels())

    def _csv_row(self, fid: int, props: dict[str, Any], geom: list[Any]) -> bytes:
        cells: list[Any] = []
        for name in _columns(self.layer):
            value = self._out(name, props[name])
            if isinstance(value, str) and value.startswith(FORMULA_START):
                value = "'" + value
            cells.append("" if value is None else value)
        wkt, lon, lat = geom
        cells += [wkt, f"{lon:.{DECIMALS}f}", f"{lat:.{DECIMALS}f}"]
        return self._csv_line(cells)

    def _kml_head(self) -> bytes:
        kinds = {"int": "int", "float": "double"}
        fields = "".join(
            f'<SimpleField name="{name}" type="{kinds.get(self._kind(name), "string")}">'
            f"<displayName>{escape(self._label(name))}</displayName></SimpleField>"
            for name in _columns(self.layer)
        )
        title = escape(f"{self.layer.zh} {self.layer.en}")
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n<kml xmlns="http://www.opengis.net/kml/2.2">\n<Document>\n'
            f"<name>{title}</name>\n<Schema name={quoteattr(self.layer.id)} id={quoteattr(self.layer.id)}>{fields}"
            f"</Schema>\n<Folder><name>{title}</name>\n"
        ).encode()

    def _out(self, name: str, value: Any) -> Any:
        """Return the value of column NAME as the text formats write it."""
        return _value(self.layer.field(name) if name in self.layer.field_names else None, value)

    def _kind(self, name: str) -> str:
        if name == "id":
            return "int"
        if name == "area_m2":
            return "float"
        if name == EXTRA:
            return "json"
        return self.layer.field(name).kind

    def _label(self, name: str) -> str:
        if name == "id":
            return f"{ID_LABEL} id"
        if name == "area_m2":
            return f"{AREA_M2_LABEL} area m²"
        if name == EXTRA:
            return f"{EXTRA_ZH} {EXTRA_EN}"
        f = self.layer.field(name)
        return f"{f.zh} {f.en}"

    def _kml_row(self, fid: int, props: dict[str, Any], geom: list[Any]) -> bytes:
        data = "".join(
            f'<SimpleData name="{name}">{escape(str(self._out(name, value)))}</SimpleData>'
            for name, value in props.items()
            if value is not None
        )
        name = escape(str(props.get(self.layer.key_field) or fid))
        return (
            f'<Placemark id="f{fid}"><name>{name}</name><ExtendedData><SchemaData schemaUrl="#{self.layer.id}">'
            f"{data}</SchemaData></ExtendedData>{geom[0]}</Placemark>\n"
        ).encode()

    # ------------------------------------------------------------ files

    def write_file(self, session: Session, check: Callable[[], None]) -> Path:
        """Write the export into a temporary file (a .gpkg, or a .zip of the Shapefile); return its path.

        CHECK is called between batches (it raises to stop: the client went away). The caller
        removes the file once sent; on any failure nothing is left behind. A Shapefile holds one
        kind of geometry: a layer storing points and polygons gets one per kind (``<id>_point``…).
        """
        folder = Path(tempfile.mkdtemp(prefix="guatu-export-"))
        try:
            names = short_names(self.layer) if self.fmt == "shp.zip" else {c: c for c in _columns(self.layer)}
            written: set[str] = set()
            for batch in self.batches(session):
                check()
                for part, rows in self._parts(batch).items():
                    self._append(folder, part, rows, names, part in written)
                    written.add(part)
            check()
            if not written:  # no rows: the file still says what it would hold
                for part in self._families():
                    self._append(folder, part, [], names, False)
            if self.fmt == "gpkg":
                return self._moved(folder / f"{self.layer.id}.gpkg", folder)
            return self._zipped(folder, names)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def _families(self) -> dict[str, str]:
        """Return {file part: geometry type} of the file(s): one part unless a Shapefile must split kinds."""
        kinds = {_FAMILY[kind.lower()] for kind in self.layer.stored}
        if self.fmt == "gpkg" or len(kinds) == 1:
            return {self.layer.id: kinds.pop() if len(kinds) == 1 else "Unknown"}
        return {f"{self.layer.id}_{kind.lower().removeprefix('multi')}": kind for kind in sorted(kinds)}

    def _parts(self, batch: list[tuple[int, dict[str, Any], list[Any]]]) -> dict[str, list[Any]]:
        """Return BATCH's rows by file part, their geometries read from WKB."""
        import shapely

        families = self._families()
        parts: dict[str, list[Any]] = {}
        for fid, props, geom in batch:
            shape = shapely.from_wkb(bytes(geom[0]))
            if len(families) == 1:
                part = next(iter(families))
            else:
                kind = _FAMILY[shape.geom_type.lower()]
                part = next(p for p, k in families.items() if k == kind)
            parts.setdefault(part, []).append((fid, props, shape))
        return parts

    def _append(self, folder: Path, part: str, rows: list[Any], names: dict[str, str], append: bool) -> None:
        """Write ROWS into file PART in FOLDER (created unless APPEND), columns named NAMES."""
        import numpy as np
        import pyogrio.raw

        import shapely

        data, masks = [], []
        for column in _columns(self.layer):
            values = [props[column] for _, props, _ in rows]
            missing = np.array([v is None for v in values], dtype=bool)
            kind = self._kind(column)
            if kind == "date":
                array = np.array([v.isoformat() if v is not None else "NaT" for v in values], dtype="datetime64[D]")
                mask = None
            elif kind == "int":
                array, mask = np.array([v or 0 for v in values], dtype="int64"), missing
            elif kind == "float":
                array, mask = np.array([np.nan if v is None else float(v) for v in values], dtype="float64"), None
            elif (
                self.fmt == "shp.zip" and self.encoding == "gbk"
            ):  # what GBK lacks (𠀀, emoji) shows as ?, never vanishes
                array = np.array([None if v is None else _in_gbk(str(v)) for v in values], dtype=object)
                mask = None
            else:
                array, mask = np.array([None if v is None else str(v) for v in values], dtype=object), None
            data.append(array)
            masks.append(mask)
        suffix = "gpkg" if self.fmt == "gpkg" else "shp"
        options: dict[str, Any] = {"driver": "GPKG"} if self.fmt == "gpkg" else {"driver": "ESRI Shapefile"}
        if self.fmt == "shp.zip":
            options["encoding"] = "GBK" if self.encoding == "gbk" else "UTF-8"
        pyogrio.raw.write(
            folder / f"{part if self.fmt == 'shp.zip' else self.layer.id}.{suffix}",
            shapely.to_wkb([shape for _, _, shape in rows]) if rows else np.array([], dtype=object),
            data,
            [names[c] for c in _columns(self.layer)],
            field_mask=masks,
            layer=part,
            geometry_type=self._families()[part],
            crs="EPSG:4490",
            promote_to_multi=self._families()[part].startswith("Multi"),
            append=append,
            **options,
        )

    def _moved(self, target: Path, folder: Path) -> Path:
        """Move the single file TARGET out of FOLDER into a temporary file of its own; remove FOLDER."""
        fd, name = tempfile.mkstemp(prefix="guatu-export-", suffix=target.suffix)
        os.close(fd)
        shutil.move(target, name)
        shutil.rmtree(folder, ignore_errors=True)
        return Path(name)

    def _zipped(self, folder: Path, names: dict[str, str]) -> Path:
        """Zip the Shapefile's parts in FOLDER with its field list; remove FOLDER; return the zip."""
        fd, name = tempfile.mkstemp(prefix="guatu-export-", suffix=".zip")
        os.close(fd)
        try:
            with zipfile.ZipFile(name, "w", zipfile.ZIP_DEFLATED) as zf:
                for part in sorted(folder.iterdir()):
                    zf.write(part, part.name)  # the layer's id and a fixed extension: no path of anyone's choosing
                zf.writestr(FIELD_LIST, self._field_list(names))
        except BaseException:
            os.unlink(name)
            raise
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return Path(name)

    def _field_list(self, names: dict[str, str]) -> bytes:
        """Return the field list 字段说明: each dBASE name, the field, its labels, kind and what to know."""
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\r\n")
        w.writerow(["字段 dbf name", "原字段 field", "中文名", "English", "类型 kind", "说明 notes"])
        personal = set(personal_fields(self.layer))
        for column, short in names.items():
            notes = []
            if column in personal:
                notes.append("个人信息：无权限者已打码 personal: masked unless the role sees it")
            if column == EXTRA:
                notes.append("上传文件带来的其他字段，JSON other fields the uploaded file brought, as JSON")
            if self._kind(column) in ("text", "code", "enum", "json"):
                notes.append(f"超过 {SHP_TEXT_BYTES} 字节截断 cut beyond {SHP_TEXT_BYTES} bytes")
            label = self._label(column)
            zh, _, en = label.partition(" ")
            w.writerow([short, column, zh, en, self._kind(column), "；".join(notes)])
        w.writerow([])
        w.writerow(["坐标系 CRS", "EPSG:4490 CGCS2000", "", "", "", ""])
        gbk = ("GBK (936)", "GBK 没有的字（生僻字、表情）写为 ? characters GBK lacks are written ?")
        w.writerow(["编码 encoding", *(gbk if self.encoding == "gbk" else ("UTF-8", "")), "", "", ""])
        return BOM + out.getvalue().encode()


def _in_gbk(value: str) -> str:
    """Return VALUE with each character GBK cannot write as ? (GDAL's recoding dropped them without a word)."""
    return value.encode("gbk", "replace").decode("gbk")


def export_for(layer: Layer, flt: Filter, fmt: str, actor: Actor | None, encoding: str = "utf-8") -> Export:
    """Return the export of LAYER in FMT; refuse an unknown format or encoding (422)."""
    if fmt not in FORMATS:
        raise InvalidInput.one(
            "format_unknown", f"不支持的导出格式：{fmt}", f"unknown export format: {fmt}", field="format"
        )
    if encoding.lower() not in ("utf-8", "utf8", "gbk"):
        raise InvalidInput.one(
            "encoding_unknown",
            f"不支持的编码：{encoding}（可选 utf-8、gbk）",
            f"unknown encoding: {encoding} (utf-8 or gbk)",
            field="encoding",
        )
    if encoding.lower() == "gbk" and fmt != "shp.zip":
        raise InvalidInput.one(
            "encoding_unknown",
            "仅 Shapefile 可选 GBK 编码",
            "only a Shapefile may be written in GBK",
            field="encoding",
        )
    chosen: Encoding = "gbk" if encoding.lower() == "gbk" else "utf-8"
    return Export(layer, flt, fmt, actor, chosen)  # type: ignore[arg-type]
