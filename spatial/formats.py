"""Reading the vector files surveyors bring, in whatever format, into one GeoJSON FeatureCollection.

GeoPackage, zipped Shapefile, GML, GPX, FlatGeobuf and DXF are read by GDAL (pyogrio), from
a private copy under a fixed name in a private folder: nothing the client names ever reaches
GDAL, zip members are never extracted under their own names, and only the drivers listed in
DRIVERS may answer. KML/KMZ and CSV are read here (GDAL's KML reader loses Chinese
ExtendedData names; a CSV's codes must keep their leading zeros).

The FeatureCollection keeps the file's own property names and coordinates; a CRS the file
states is given as a ``crs`` member (``EPSG:<n>``), as the upload reads it from GeoJSON.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import functools
import io
import math
import os
import posixpath
import re
import shutil
import sqlite3
import struct
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from xml.etree import ElementTree

import numpy as np
import orjson

import shapely

from spatial.errors import InvalidInput, MalformedInput, Problem, Where

HEAD = 64 * 1024
"""Bytes of a file's start that :func:`sniff` looks at."""

NAMES = {
    "geojson": "GeoJSON",
    "xlsx": "Excel (.xlsx)",
    "gpkg": "GeoPackage (.gpkg)",
    "shp-zip": "Shapefile (.zip)",
    "gpkg-zip": "GeoPackage (.zip)",
    "kml": "KML",
    "kmz": "KMZ",
    "csv": "CSV",
    "gml": "GML",
    "gpx": "GPX",
    "fgb": "FlatGeobuf (.fgb)",
    "dxf": "DXF",
    "zip": "ZIP",
    "unknown": "未知格式 unknown",
}
"""Every format an upload may be, as the report names it."""

SUFFIXES = {
    "geojson": ".geojson",
    "xlsx": ".xlsx",
    "gpkg": ".gpkg",
    "shp-zip": ".zip",
    "gpkg-zip": ".zip",
    "kml": ".kml",
    "kmz": ".kmz",
    "csv": ".csv",
    "gml": ".gml",
    "gpx": ".gpx",
    "fgb": ".fgb",
    "dxf": ".dxf",
}
"""The file name suffix a format is kept under (the archive) and handed to GDAL with."""

DRIVERS = {
    "gpkg": ("GPKG",),
    "shp-zip": ("ESRI Shapefile",),
    "gml": ("GML",),
    "gpx": ("GPX",),
    "fgb": ("FlatGeobuf",),
    "dxf": ("DXF",),
}
"""The only GDAL drivers allowed to read an upload, per format (never VRT, never a network one)."""

_EXTENSIONS = {
    ".geojson": "geojson",
    ".json": "geojson",
    ".xlsx": "xlsx",
    ".gpkg": "gpkg",
    ".zip": "zip",
    ".kml": "kml",
    ".kmz": "kmz",
    ".csv": "csv",
    ".txt": "csv",
    ".tsv": "csv",
    ".gml": "gml",
    ".gpx": "gpx",
    ".fgb": "fgb",
    ".dxf": "dxf",
}

MAX_MEMBERS = 500
"""Members a zip (Shapefile, KMZ) may hold."""
MAX_UNZIPPED = 1_000_000_000
"""Bytes a zip's members may unpack to, all together (a zip bomb is a few MB unpacking to GB)."""
MAX_KML_BYTES = 200_000_000
"""Bytes the KML inside a KMZ may unpack to (it is read in memory: never the zip's whole gigabyte)."""
MAX_FEATURES = 1_000_000
"""Features one file may hold."""
MAX_COLUMNS = 1_000
"""Columns of a CSV, or property names of a KML, a file may hold (a header of a million names is an attack)."""
MAX_CELLS = 20_000_000
"""Cells a CSV may hold (a million points of twenty columns; a file of a hundred million one-byte cells is not one)."""
MAX_DEPTH = 64
"""Nested XML elements a KML may hold (folders and MultiGeometry in a phone app's file are a few deep)."""
MAX_PLACEMARK_ELEMENTS = 500_000
"""XML elements one KML Placemark may hold (its geometry's parts, its data): memory holds one placemark at a time."""
MAX_TABLES = 2_000
"""Tables a GeoPackage may hold (a layer: its table and four of its spatial index); GDAL's opening grows as
their square."""
DETECT_BYTES = 16 * 1024 * 1024
"""Bytes of a .dbf's text looked at to tell its encoding."""
LISTED_LAYERS = 1_000
"""Layers (a KML's folders) a file's description and a refusal name at most (a KML of a million empty folders)."""
SAMPLES = 3
SAMPLE_CHARS = 60

_SHP_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg")
_CURVES = ("CIRCULARSTRING", "COMPOUNDCURVE", "CURVEPOLYGON", "MULTICURVE", "MULTISURFACE", "CURVE", "SURFACE")
_CURVY = ("gpkg", "gml", "fgb", "dxf")
"""Formats that can hold curves (GDAL hands them back linearised; the note counts them)."""


@functools.cache
def _gdal() -> Any:
    """Return pyogrio (with pyogrio.raw), imported on the first file GDAL reads, with GDAL's reading limited.

    Imported late: pyogrio brings pandas (and geopandas where installed), a second of every
    `guatu` command's start-up that a GeoJSON import never uses. An upload is never read
    through the network or another file: no /vsicurl/ URL may be opened, and a GeoPackage's
    views may not reach outside it (GDAL's default, said again).
    """
    import pyogrio
    import pyogrio.raw

    pyogrio.set_gdal_config_options(
        {
            "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".guatu-none",
            "OGR_SQLITE_ALLOW_EXTERNAL_ACCESS": "NO",
            # a DXF's blocks are not copied into every INSERT: ten blocks of ten inserts each (2.5 KB) were
            # ten million lines, read for minutes; an INSERT is read as the point where its block is placed
            "DXF_INLINE_BLOCKS": "FALSE",
        }
    )
    return pyogrio


@dataclass
class FieldInfo:
    """One field of a file as the file names it, its type, and a few of its values."""

    name: str
    type: str
    samples: list[Any] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Return the JSON of this field."""
        return {"name": self.name, "type": self.type, "samples": self.samples}


@dataclass
class ReadFile:
    """A file read into GeoJSON, with what the report says about the reading."""

    format: str
    geojson: bytes
    layers: list[str] = field(default_factory=list)
    layer: str | None = None
    encoding: str | None = None
    encoding_source: str | None = None
    """Where the encoding came from: cpg, detected, declared (the user's `encoding=`), utf-8 (the default)."""
    fields: list[FieldInfo] = field(default_factory=list)
    count: int = 0
    notes: list[dict[str, Any]] = field(default_factory=list)
    crs: str | None = None
    """The CRS the file states, as EPSG:<n>."""

    def describe(self) -> dict[str, Any]:
        """Return what the report says about the file (everything but the features)."""
        out: dict[str, Any] = {"format": self.format, "count": self.count}
        if self.layers:
            out["layers"] = self.layers[:LISTED_LAYERS]
            if len(self.layers) > LISTED_LAYERS:
                out["layers_total"] = len(self.layers)
        if self.layer is not None:
            out["layer"] = self.layer
        if self.encoding is not None:
            out["encoding"] = self.encoding
            out["encoding_source"] = self.encoding_source
        if self.crs is not None:
            out["crs"] = self.crs
        out["fields"] = [f.as_dict() for f in self.fields]
        if self.notes:
            out["notes"] = self.notes
        return out


def note(code: str, zh: str, en: str, **extra: Any) -> dict[str, Any]:
    """Return a file-level note: its code, the message in Chinese then English, and its figures."""
    return {"code": code, "message": f"{zh} ({en})", **extra}


# --------------------------------------------------------------------------- sniffing


def sniff(head: bytes, filename: str | None = None) -> str:
    """Return the format of a file from its first bytes HEAD and, failing those, its FILENAME's suffix.

    Magic bytes first (SQLite, zip members, FlatGeobuf, XML roots, JSON), then the suffix,
    then a delimited header naming coordinate columns (CSV). A file nothing identifies is
    read as GeoJSON when its name says nothing else (its errors are the GeoJSON ones), else
    it is "unknown". A zip whose members HEAD does not show is "zip" (:func:`zip_format`).

    Examples
    --------
    >>> sniff(b"SQLite format 3\\x00..."), sniff(b'{"type": "FeatureCollection"}'), sniff(b"<kml>")
    ('gpkg', 'geojson', 'kml')
    >>> sniff(b"name,lon,lat\\nA,120.1,36.2\\n"), sniff(b"\\x00\\x01junk", "a.bin")
    ('csv', 'unknown')
    """
    ext = _suffix(filename)
    if head.startswith(b"SQLite format 3\x00"):
        return "gpkg"
    if head.startswith(b"PK\x03\x04"):
        return zip_kind(_zip_names(head)) or {".kmz": "kmz", ".xlsx": "xlsx"}.get(ext, "zip")
    if head[:3] == b"fgb" and head[4:7] == b"fgb":
        return "fgb"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text[:1] in (b"{", b"["):
        return "geojson"
    if text[:1] == b"<":
        xml = text[:8192].lower()
        if b"ogrvrtdatasource" in xml or b"vrtdataset" in xml:
            return "unknown"  # a GDAL virtual file points at other files: never read
        for marker, kind in ((b"<kml", "kml"), (b"<gpx", "gpx"), (b"gml", "gml")):
            if marker in xml:
                return kind
    if re.match(rb"\s*0\s*\r?\n\s*SECTION", text[:64]):
        return "dxf"
    if ext in _EXTENSIONS:
        return _EXTENSIONS[ext]
    if _looks_like_csv(head):
        return "csv"
    return "geojson" if ext in ("", ".json", ".geojson") else "unknown"


def _suffix(filename: str | None) -> str:
    if not filename:
        return ""
    return posixpath.splitext(filename.replace("\\", "/").rsplit("/", 1)[-1])[1].lower()


def _zip_names(head: bytes) -> list[str]:
    """Return the member names of the local headers HEAD holds in full (a zip's central directory is at its end)."""
    names: list[str] = []
    at = 0
    while head[at : at + 4] == b"PK\x03\x04" and at + 30 <= len(head):
        flags, _, _, _, _, size, _, name_len, extra_len = struct.unpack("<HHHHIIIHH", head[at + 6 : at + 30])
        names.append(head[at + 30 : at + 30 + name_len].decode("utf-8", "replace"))
        if flags & 0x08 and size == 0:
            break  # the size follows the data: the next header cannot be found from here
        at += 30 + name_len + extra_len + size
    return names


def _listed(names: list[str]) -> list[str]:
    """Return NAMES without a Mac's resource forks and folders."""
    return [
        n
        for n in names
        if not n.startswith("__MACOSX/") and not posixpath.basename(n).startswith("._") and not n.endswith("/")
    ]


def zip_kind(names: list[str]) -> str | None:
    """Return what a zip holding member NAMES is: shp-zip, xlsx, kmz, gpkg-zip, or None (nothing known)."""
    listed = [n.lower() for n in _listed(names)]
    if any(n.endswith(ext) for n in listed for ext in (".shp", ".dbf", ".shx")):
        return "shp-zip"
    if any(n.startswith("xl/") for n in listed):
        return "xlsx"
    if any(n.endswith(".kml") for n in listed):
        return "kmz"
    if any(n.endswith(".gpkg") for n in listed):
        return "gpkg-zip"
    return None


def zip_format(body: Path | bytes) -> str:
    """Return what the zip BODY is from its central directory: shp-zip, xlsx, kmz, or zip (nothing known)."""
    try:
        with zipfile.ZipFile(body if isinstance(body, Path) else io.BytesIO(body)) as zf:
            return zip_kind(zf.namelist()) or "zip"
    except (zipfile.BadZipFile, OSError, ValueError):
        return "zip"


_COORDINATE_WORDS = re.compile(rb"(?i)(\xe7\xbb\x8f\xe5\xba\xa6|lon|lng|longitude|wkt|\bx\b)")  # 经度


def _looks_like_csv(head: bytes) -> bool:
    """Tell whether HEAD starts with a delimited header line naming a coordinate or WKT column."""
    first = head.lstrip(b"\xef\xbb\xbf").split(b"\n", 1)[0]
    if b"\x00" in first or not any(d in first for d in (b",", b"\t", b";")):
        return False
    return bool(_COORDINATE_WORDS.search(first)) or "经度".encode("gbk") in first


# --------------------------------------------------------------------------- errors


def unsupported(fmt: str, why: str = "") -> MalformedInput:
    """Return the error for a file of a format no upload reads."""
    accepted = "GeoJSON、Excel、GeoPackage、Shapefile (.zip)、KML、KMZ、CSV、GML、GPX、FlatGeobuf、DXF"
    return MalformedInput.one(
        "unsupported_format",
        f"无法识别或不支持的文件格式（{NAMES.get(fmt, fmt)}{'：' + why if why else ''}）。可上传：{accepted}",
        f"unrecognised or unsupported file format ({NAMES.get(fmt, fmt)}{': ' + why if why else ''}); "
        f"accepted: GeoJSON, Excel, GeoPackage, zipped Shapefile, KML, KMZ, CSV, GML, GPX, FlatGeobuf, DXF",
    )


def unreadable(fmt: str, exc: BaseException | str | None = None) -> MalformedInput:
    """Return the error for a file of format FMT that cannot be read (its reader's first words, never a path)."""
    why = exc if isinstance(exc, str) else type(exc).__name__ if exc is not None else ""
    return MalformedInput.one(
        "unreadable_file",
        f"文件无法按 {NAMES.get(fmt, fmt)} 格式读取：文件是否损坏或不完整？",
        f"the file cannot be read as {NAMES.get(fmt, fmt)} ({why}): is it damaged or incomplete?",
    )


def _gdal_reason(exc: BaseException) -> str:
    """Return GDAL's message without any file path in it (paths are the server's)."""
    text = str(exc).split("\n")[0]
    return re.sub(r"(/[^\s:'\"]+)+", "<file>", text)[:200]


# --------------------------------------------------------------------------- reading


def read_vector(
    path: Path, fmt: str, *, layer: str | None = None, encoding: str | None = None, scratch: Path | None = None
) -> ReadFile:
    """Read the file at PATH (of format FMT, as sniffed) into a GeoJSON FeatureCollection.

    LAYER picks a GeoPackage's table, a zip's Shapefile, a KML folder or a GPX layer;
    ENCODING overrides the text encoding of a Shapefile or CSV. SCRATCH: the folder where
    GDAL's private copy is made (on PATH's disk, it is a link). Raises MalformedInput
    (unsupported_format, unreadable_file, zip_unsafe, …) or InvalidInput
    (source_layer_required, source_layer_unknown, encoding_unknown).
    """
    codec = _codec(encoding) if encoding else None
    if fmt == "zip":
        fmt = zip_format(path)
        if fmt in ("zip", "xlsx"):
            raise unsupported("zip", "压缩包中没有 Shapefile 或 KML / no Shapefile or KML in the zip")
    if fmt == "csv":
        return _read_csv(path, codec)
    if fmt == "kml":
        return _read_kml(_kml_bytes(path), "kml", layer)
    if fmt not in DRIVERS and fmt not in ("kmz", "gpkg-zip"):
        raise unsupported(fmt)
    with _workdir(scratch) as work:
        if fmt == "kmz":
            return _read_kml(_utf8_xml(_unpack_kmz(path)), "kmz", layer)
        if fmt == "shp-zip":
            target, layers, chosen = _unpack_shapefile(path, work, layer)
            enc, source, notes = _dbf_encoding(work, codec)
            read = _read_ogr(target, fmt, None, enc)
            read.layers, read.layer = layers, chosen
            read.encoding, read.encoding_source = enc, source
            read.notes[:0] = notes
            return read
        if fmt == "gpkg-zip":  # a GeoPackage zipped to be mailed
            read = _read_ogr(_unpack_geopackage(path, work), "gpkg", layer, None)
            read.format = fmt
            return read
        target = work / f"upload{SUFFIXES[fmt]}"
        _link(path, target)
        return _read_ogr(target, fmt, layer, None)


@contextlib.contextmanager
def _workdir(scratch: Path | None) -> Iterator[Path]:
    """Yield a private folder in SCRATCH (else the system's temporary folder), removed afterwards."""
    try:
        folder = tempfile.mkdtemp(prefix=".read-", dir=scratch)
    except OSError:
        folder = tempfile.mkdtemp(prefix="guatu-read-")
    try:
        yield Path(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _codec(name: str) -> str:
    """Return the encoding NAME as GDAL (iconv) and Python both know it (GBK, GB18030, UTF-8, BIG5 …), or refuse it."""
    cleaned = name.strip()
    try:
        if not re.fullmatch(r"[A-Za-z0-9_ -]{2,30}", cleaned):
            raise LookupError(cleaned)
        canonical = codecs.lookup({"936": "gbk", "65001": "utf-8", "54936": "gb18030"}.get(cleaned, cleaned)).name
    except LookupError:
        raise InvalidInput.one(
            "encoding_unknown",
            f"无法识别的编码 {name[:40]!r}（可用：UTF-8、GBK、GB18030、BIG5 等）",
            f"unknown encoding {name[:40]!r} (use UTF-8, GBK, GB18030, BIG5, …)",
            field="encoding",
        ) from None
    return canonical.upper()


# ------------------------------------------------------------------ zips


def _members(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """Return ZF's members after refusing an archive too big, too crowded or naming paths outside itself."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise MalformedInput.one(
            "zip_too_big",
            f"压缩包内文件过多（{len(infos)} 个，上限 {MAX_MEMBERS}）",
            f"the zip holds {len(infos)} members, more than {MAX_MEMBERS}",
        )
    if sum(i.file_size for i in infos) > MAX_UNZIPPED:
        raise MalformedInput.one(
            "zip_too_big",
            f"压缩包解压后超过 {MAX_UNZIPPED // 1_000_000} MB",
            f"the zip unpacks to more than {MAX_UNZIPPED // 1_000_000} MB",
        )
    for info in infos:
        name = info.filename.replace("\\", "/")
        if name.startswith("/") or ".." in name.split("/") or ":" in name or "\x00" in name:
            raise MalformedInput.one(
                "zip_unsafe",
                f"压缩包中的文件名 {name[:80]!r} 指向压缩包之外，已拒绝",
                f"the zip member name {name[:80]!r} points outside the archive; refused",
            )
    return infos


def _extract(zf: zipfile.ZipFile, info: zipfile.ZipInfo, out: IO[bytes]) -> None:
    """Copy member INFO into OUT, never more than the size it declares (a lying header stops here)."""
    left = info.file_size
    with zf.open(info) as stream:
        while chunk := stream.read(min(1 << 20, left + 1)):
            left -= len(chunk)
            if left < 0:
                raise MalformedInput.one(
                    "zip_unsafe", "压缩包成员大小与声明不符", "a zip member is larger than declared"
                )
            out.write(chunk)


def _open_zip(path: Path, fmt: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise unreadable(fmt, exc) from None


def _choose(layers: list[str], layer: str | None, fmt: str) -> str:
    """Return the layer to read: the one asked for, or the only one; refuse a choice missing or unknown."""
    shown = "、".join(layers[:20])
    if layer is not None:
        if layer not in layers:
            raise InvalidInput(
                Problem(
                    "source_layer_unknown",
                    f"文件中没有图层 {layer[:80]!r}，可选：{shown}",
                    f"the file has no layer {layer[:80]!r}; it has: {', '.join(layers[:20])}",
                    Where(field="layer"),
                    {"layers": layers[:LISTED_LAYERS]},
                )
            )
        return layer
    if len(layers) == 1:
        return layers[0]
    if not layers:
        raise unreadable(fmt, "no layer")
    raise InvalidInput(
        Problem(
            "source_layer_required",
            f"文件中有 {len(layers)} 个图层（{shown}），请用 layer 参数选择要上传的一个",
            f"the file holds {len(layers)} layers ({', '.join(layers[:20])}): choose one with layer=",
            Where(field="layer"),
            {"layers": layers[:LISTED_LAYERS]},
        )
    )


def _unpack_shapefile(path: Path, work: Path, layer: str | None) -> tuple[Path, list[str], str]:
    """Extract the chosen Shapefile's parts from the zip at PATH as WORK/data.*; return the .shp, layers, choice."""
    with _open_zip(path, "shp-zip") as zf:
        groups: dict[str, dict[str, zipfile.ZipInfo]] = {}
        for info in _members(zf):
            if info.filename not in _listed([info.filename]):
                continue
            stem, ext = posixpath.splitext(_shown(info))
            if ext.lower() in _SHP_PARTS:
                groups.setdefault(stem, {})[ext.lower()] = info
        stems = sorted(s for s, parts in groups.items() if ".shp" in parts)
        if not stems:
            if groups:
                raise _incomplete(sorted(groups)[0], [".shp"])
            raise unsupported("zip", "压缩包中没有 .shp 文件 / no .shp in the zip")
        names = [posixpath.basename(s) for s in stems]
        if len(set(names)) < len(names):
            names = stems  # the same name in two folders: the folders tell them apart
        chosen = _choose(names, layer, "shp-zip")
        parts = groups[stems[names.index(chosen)]]
        missing = [ext for ext in (".shx", ".dbf") if ext not in parts]
        if missing:
            raise _incomplete(chosen, missing)
        for ext, info in parts.items():
            with (work / f"data{ext}").open("wb") as out:
                _extract(zf, info, out)
    return work / "data.shp", names, chosen


def _shown(info: zipfile.ZipInfo) -> str:
    """Return a member's name as its maker meant it: a zip made on a Chinese Windows names members in GBK."""
    name = info.filename.replace("\\", "/")
    if info.flag_bits & 0x800:
        return name
    try:
        raw = name.encode("cp437")
    except UnicodeEncodeError:
        return name
    for encoding in ("utf-8", "gbk"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return name


def _incomplete(name: str, missing: list[str]) -> MalformedInput:
    return MalformedInput.one(
        "shp_incomplete",
        f"Shapefile {posixpath.basename(name)[:80]} 缺少 {'、'.join(missing)} 文件：请把同名的 .shp、.shx、.dbf"
        f"（及 .prj、.cpg）一起压缩上传",
        f"the Shapefile {posixpath.basename(name)[:80]} lacks its {', '.join(missing)}: zip the .shp, .shx, .dbf "
        f"(and .prj, .cpg) of the same name together",
    )


def _unpack_geopackage(path: Path, work: Path) -> Path:
    """Extract the one GeoPackage of the zip at PATH as WORK/upload.gpkg."""
    with _open_zip(path, "gpkg-zip") as zf:
        listed = set(_listed(zf.namelist()))
        found = [i for i in _members(zf) if i.filename.lower().endswith(".gpkg") and i.filename in listed]
        if len(found) != 1:
            raise unsupported("gpkg-zip", f"{len(found)} 个 .gpkg / {len(found)} .gpkg files: zip one")
        target = work / "upload.gpkg"
        with target.open("wb") as out:
            _extract(zf, found[0], out)
    return target


def _unpack_kmz(path: Path) -> bytes:
    """Return the main KML of the KMZ at PATH (doc.kml, else the first .kml at the top)."""
    with _open_zip(path, "kmz") as zf:
        kmls = [i for i in _members(zf) if i.filename.lower().endswith(".kml") and i.filename in _listed([i.filename])]
        if not kmls:
            raise unreadable("kmz", "no .kml inside")
        kmls.sort(key=lambda i: (i.filename.lower() != "doc.kml", i.filename.count("/"), i.filename))
        if kmls[0].file_size > MAX_KML_BYTES:
            raise MalformedInput.one(
                "zip_too_big",
                f"KMZ 中的 KML 解压后超过 {MAX_KML_BYTES // 1_000_000} MB",
                f"the KML inside the KMZ unpacks to more than {MAX_KML_BYTES // 1_000_000} MB",
            )
        out = io.BytesIO()
        _extract(zf, kmls[0], out)
        return out.getvalue()


_XML_ENCODING = re.compile(rb"""^(\s*<\?xml[^>]*?encoding\s*=\s*["'])([A-Za-z0-9_.:-]+)(["'])""")


def _kml_bytes(path: Path) -> bytes:
    return _utf8_xml(path.read_bytes())


def _utf8_xml(raw: bytes) -> bytes:
    """Return the XML RAW in UTF-8: a KML declared GBK (which the XML parser cannot read) is recoded."""
    found = _XML_ENCODING.match(raw[:200])
    if found is None:
        return raw
    declared = found.group(2).decode("ascii").lower().replace("_", "-")
    if declared in ("utf-8", "utf8", "us-ascii", "ascii", "utf-16", "iso-8859-1", "latin-1"):
        return raw
    try:
        text = raw.decode(_codec(declared))
    except (InvalidInput, UnicodeDecodeError):
        raise unreadable("kml", f"not {declared[:20]}") from None
    return found.group(1) + b"UTF-8" + found.group(3) + text.encode("utf-8")[len(found.group(0)) :]


# ------------------------------------------------------------------ Shapefile encodings


_CPG = {
    "UTF-8": "UTF-8",
    "UTF8": "UTF-8",
    "65001": "UTF-8",
    "GBK": "GBK",
    "CP936": "GBK",
    "936": "GBK",
    "ANSI 936": "GBK",
    "GB2312": "GBK",
    "GB18030": "GB18030",
    "54936": "GB18030",
}


def _dbf_text(dbf: Path) -> bytes:
    """Return the text a .dbf holds (its field names and records), up to DETECT_BYTES."""
    with dbf.open("rb") as handle:
        header = handle.read(32)
        if len(header) < 32:
            return b""
        header_len = struct.unpack("<H", header[8:10])[0]
        descriptors = handle.read(max(0, header_len - 32))
        names = b" ".join(descriptors[at : at + 11].split(b"\x00", 1)[0] for at in range(0, len(descriptors) - 31, 32))
        return names + b" " + handle.read(DETECT_BYTES)


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        codecs.getincrementaldecoder(encoding)().decode(data, final=False)
    except (UnicodeDecodeError, LookupError):
        return False
    return True


def _detect(data: bytes) -> str | None:
    """Return the encoding DATA (not plain ASCII) reads in: UTF-8, else GBK, else GB18030; or None."""
    for encoding in ("UTF-8", "GBK", "GB18030"):
        if _decodes(data, encoding):
            return encoding
    return None


def _dbf_encoding(work: Path, declared: str | None) -> tuple[str, str, list[dict[str, Any]]]:
    """Return the encoding of WORK/data.dbf, where it came from, and notes (a .cpg found wrong)."""
    if declared:
        return declared, "declared", []
    cpg = work / "data.cpg"
    stated_text = cpg.read_bytes()[:64].decode("ascii", "replace").strip() if cpg.exists() else None
    stated = _CPG.get(stated_text.upper()) if stated_text else None
    notes: list[dict[str, Any]] = []
    if stated_text and stated is None:
        with contextlib.suppress(InvalidInput):
            stated = _codec(stated_text)
        if stated is None:
            notes.append(
                note(
                    "cpg_unknown",
                    f".cpg 中的编码 {stated_text[:40]!r} 无法识别，已自动判断",
                    f"the .cpg names an unknown encoding {stated_text[:40]!r}; detected instead",
                )
            )
    data = _dbf_text(work / "data.dbf")
    if data.isascii():
        return (stated, "cpg", notes) if stated else ("UTF-8", "utf-8", notes)
    detected = _detect(data)
    if stated and _decodes(data, stated) and not (stated != "UTF-8" and detected == "UTF-8"):
        return stated, "cpg", notes
    if detected is None:
        notes.append(
            note(
                "encoding_guessed",
                "文本既不是 UTF-8 也不是 GBK：请用 encoding 参数声明编码",
                "the text is neither UTF-8 nor GBK: declare its encoding with encoding=",
            )
        )
        return stated or "ISO-8859-1", "cpg" if stated else "detected", notes
    if stated:
        notes.append(
            note(
                "cpg_wrong",
                f".cpg 声明编码为 {stated_text}，但文本实为 {detected}，已按 {detected} 读取",
                f"the .cpg says {stated_text} but the text is {detected}: read as {detected}",
                stated=stated_text,
                detected=detected,
            )
        )
    return detected, "detected", notes


# ------------------------------------------------------------------ GDAL


_OGR_TYPES = {
    "OFTString": "string",
    "OFTInteger": "integer",
    "OFTInteger64": "integer",
    "OFTReal": "real",
    "OFTDate": "date",
    "OFTDateTime": "datetime",
    "OFTTime": "time",
    "OFTBinary": "binary",
    "OFTStringList": "list",
    "OFTIntegerList": "list",
    "OFTInteger64List": "list",
    "OFTRealList": "list",
}


def _crs_label(crs: str | None) -> tuple[str | None, list[dict[str, Any]]]:
    """Return the EPSG label of CRS (what GDAL says of a file's CRS), and a note when it names none."""
    if not crs:
        return None, []
    if re.fullmatch(r"EPSG:\d{4,6}", crs):
        return crs, []
    from pyproj import CRS

    try:
        epsg = CRS.from_user_input(crs).to_epsg(min_confidence=70)
    except Exception:  # noqa: BLE001 - pyproj's own errors: an unreadable CRS is noted, not fatal
        epsg = None
    if epsg is not None:
        return f"EPSG:{epsg}", []
    return None, [
        note(
            "crs_unrecognised",
            "文件声明的坐标系无法对应到 EPSG 编号，请用 crs 参数声明坐标系",
            "the file's CRS matches no EPSG code: declare the CRS with crs=",
        )
    ]


def _gpkg_unsafe(why: tuple[str, str]) -> MalformedInput:
    return MalformedInput.one(
        "gpkg_unsafe",
        f"GeoPackage 含{why[0]}，已拒绝：请在 QGIS 中将图层导出为新的 GeoPackage 再上传",
        f"the GeoPackage holds {why[1]}: refused; export the layer to a new GeoPackage (QGIS) and upload that",
    )


def _check_sqlite(target: Path) -> None:
    """Refuse a GeoPackage (an SQLite file) that reading could make run for ever or read without bound.

    Its schema is read here first, never executed: a view (a recursive one never ends, and
    GDAL reads its own tables through any view put in their place), a virtual table other than
    the spatial index (R*Tree), a generated column (an expression computed on every read) or
    more than MAX_TABLES tables is refused before GDAL opens the file. A file SQLite cannot
    read is left to GDAL, which says so.
    """
    try:
        with contextlib.closing(sqlite3.connect(f"{target.as_uri()}?mode=ro&immutable=1", uri=True)) as con:
            schema = "SELECT type, tbl_name, sql FROM sqlite_master WHERE type IN ('table', 'view')"
            rows = con.execute(schema).fetchall()
            if len(rows) > MAX_TABLES:
                many = len(rows)
                raise _gpkg_unsafe((f" {many} 个表（上限 {MAX_TABLES}）", f"{many} tables, more than {MAX_TABLES}"))
            for kind, name, sql in rows:
                if kind == "view":
                    raise _gpkg_unsafe(("视图", "a view"))
                text = str(sql or "").lstrip().upper()
                if text.startswith("CREATE VIRTUAL TABLE") and not re.search(r"\bUSING\s+RTREE(_I32)?\s*\(", text):
                    raise _gpkg_unsafe(("虚拟表", "a virtual table"))
                if not text.startswith("CREATE VIRTUAL TABLE"):
                    hidden = con.execute("SELECT count(*) FROM pragma_table_xinfo(?) WHERE hidden IN (2, 3)", (name,))
                    if hidden.fetchone()[0]:
                        raise _gpkg_unsafe(("计算列", "a generated column"))
    except sqlite3.Error:
        return


def _read_ogr(target: Path, fmt: str, layer: str | None, encoding: str | None) -> ReadFile:
    """Read one layer of the file at TARGET (a private copy) with GDAL."""
    pyogrio = _gdal()

    if fmt == "gpkg":
        _check_sqlite(target)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            listed = pyogrio.list_layers(target)
            names = [str(row[0]) for row in listed]
            chosen = None if fmt == "shp-zip" else _choose(_candidates(target, fmt, listed), layer, fmt)
            info = pyogrio.read_info(target, layer=chosen, encoding=encoding)
        except (InvalidInput, MalformedInput):
            raise
        except Exception as exc:  # noqa: BLE001 - GDAL's errors: every one means "cannot be read"
            raise unreadable(fmt, _gdal_reason(exc)) from None
        if info.get("driver") not in DRIVERS[fmt]:
            raise unsupported(fmt, str(info.get("driver"))[:40])
        if int(info.get("features") or 0) > MAX_FEATURES:
            raise MalformedInput.one(
                "too_many_features",
                f"文件中的要素超过 {MAX_FEATURES} 个，请分批上传",
                f"the file holds more than {MAX_FEATURES} features: upload it in parts",
            )
        try:
            meta, _, geoms, columns = pyogrio.raw.read(target, layer=chosen, encoding=encoding, datetime_as_string=True)
        except Exception as exc:  # noqa: BLE001 - GDAL's errors: every one means "cannot be read"
            raise unreadable(fmt, _gdal_reason(exc)) from None
    measured = any("Measured (M)" in str(w.message) for w in caught)
    try:
        shapes = shapely.from_wkb(np.asarray(geoms, dtype=object)) if geoms is not None else None
    except Exception as exc:  # noqa: BLE001 - a geometry GEOS cannot read: the file is damaged
        raise unreadable(fmt, _gdal_reason(exc)) from None
    count = len(columns[0]) if columns else len(shapes) if shapes is not None else 0
    if shapes is None:
        shapes = np.full(count, None, dtype=object)
    notes: list[dict[str, Any]] = []
    crs, crs_notes = _crs_label(meta.get("crs"))
    notes += crs_notes
    curved = _count_curves(target, chosen, fmt) if fmt in _CURVY and chosen else 0
    if curved:
        notes.append(
            note(
                "curves_linearised",
                f"{curved} 个要素含曲线（圆弧等），已转为折线",
                f"{curved} features hold curves (arcs …): converted to straight segments",
                count=curved,
            )
        )
    shapes, more = _flatten(shapes, measured)
    notes += more
    props, fields, dropped = _columns(list(meta["fields"]), list(meta.get("ogr_types") or []), columns)
    notes += dropped
    geojson = _collection(shapes, props, count, crs)
    return ReadFile(
        format=fmt,
        geojson=geojson,
        layers=names if fmt != "shp-zip" else [],
        layer=chosen if fmt != "shp-zip" else None,
        fields=fields,
        count=count,
        notes=notes,
        crs=crs,
    )


def _candidates(target: Path, fmt: str, listed: Any) -> list[str]:
    """Return the layers a user may mean: those with geometry (a GPX: its waypoints, routes or tracks with any)."""
    pyogrio = _gdal()

    names = [str(row[0]) for row in listed]
    spatial = [str(row[0]) for row in listed if row[1] is not None] or names
    if fmt == "dxf":  # the drawing itself, never its block definitions (GDAL's "blocks" layer)
        spatial = [n for n in spatial if n != "blocks"] or spatial
    if fmt == "gpx":
        spatial = [n for n in spatial if n not in ("route_points", "track_points")]
        counted = {n: pyogrio.read_info(target, layer=n, force_feature_count=True).get("features") for n in spatial}
        spatial = [n for n in spatial if int(counted[n] or 0) > 0] or spatial
    return spatial


def _count_curves(target: Path, layer: str, fmt: str) -> int:
    """Return how many features of LAYER hold curves (GDAL reads them linearised; its SQL still sees them)."""
    pyogrio = _gdal()

    if '"' in layer:
        return 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "M values are not supported": noted by the reading itself
            out = pyogrio.raw.read(
                target, sql=f'SELECT OGR_GEOMETRY FROM "{layer}"', sql_dialect="OGRSQL", read_geometry=False
            )
    except Exception:  # noqa: BLE001 - the note is a courtesy: never a reason to refuse
        return 0
    kinds = out[3][0] if out[3] else []
    return sum(1 for k in kinds if k and str(k).upper() in _CURVES)


def _flatten(shapes: Any, measured: bool) -> tuple[Any, list[dict[str, Any]]]:
    """Return SHAPES in two dimensions, with notes on the Z and M values dropped."""
    notes: list[dict[str, Any]] = []
    present = shapely.is_geometry(shapes)
    if measured:
        notes.append(
            note(
                "m_dropped",
                f"{int(present.sum())} 个要素的 M 值（测量值）已舍去",
                f"the M (measure) values of {int(present.sum())} features were dropped",
                count=int(present.sum()),
            )
        )
    with_z = int(np.sum(shapely.has_z(shapes) & present))
    if with_z:
        shapes = shapely.force_2d(shapes)
        notes.append(
            note(
                "z_dropped",
                f"{with_z} 个要素的 Z 值（高程）已舍去，只保留平面坐标",
                f"the Z (height) values of {with_z} features were dropped: only x/y are kept",
                count=with_z,
            )
        )
    return shapes, notes


def _plain(value: Any, integer: bool) -> Any:
    """Return a column's VALUE as JSON holds it (None for missing)."""
    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return int(value) if integer and value.is_integer() else value
    if isinstance(value, np.ndarray):
        return [_plain(v, False) for v in value.tolist()]
    if isinstance(value, str) and value == "NaT":
        return None
    return value


def _columns(
    names: list[str], types: list[str], columns: Any
) -> tuple[list[dict[str, Any]], list[FieldInfo], list[dict[str, Any]]]:
    """Return each feature's properties, the fields described, and notes on fields dropped (binary)."""
    count = len(columns[0]) if columns else 0
    props: list[dict[str, Any]] = [{} for _ in range(count)]
    fields: list[FieldInfo] = []
    dropped: list[str] = []
    for position, name in enumerate(names):
        kind = _OGR_TYPES.get(types[position] if position < len(types) else "", "string")
        if kind == "binary":
            dropped.append(name)
            continue
        integer = kind == "integer"
        values = [_plain(v, integer) for v in columns[position]]
        for row, value in zip(props, values, strict=True):
            row[name] = value
        fields.append(FieldInfo(name, kind, _samples(values)))
    notes = []
    if dropped:
        notes.append(
            note(
                "binary_fields_dropped",
                f"二进制字段 {'、'.join(dropped)} 无法上传，已忽略",
                f"binary fields {', '.join(dropped)} cannot be uploaded: ignored",
                fields=dropped,
            )
        )
    return props, fields, notes


def _samples(values: list[Any]) -> list[Any]:
    shown: list[Any] = []
    for value in values:
        if value is None or value == "":
            continue
        value = value[:SAMPLE_CHARS] if isinstance(value, str) else value
        if value not in shown:
            shown.append(value)
            if len(shown) == SAMPLES:
                break
    return shown


def _collection(shapes: Any, props: list[dict[str, Any]], count: int, crs: str | None) -> bytes:
    """Return the FeatureCollection of SHAPES (GEOS geometries or None) and PROPS."""
    drawn = shapely.to_geojson(shapes) if count else []
    features = [
        {
            "type": "Feature",
            "properties": props[i] if i < len(props) else {},
            "geometry": orjson.Fragment(drawn[i]) if drawn[i] is not None else None,
        }
        for i in range(count)
    ]
    out: dict[str, Any] = {"type": "FeatureCollection"}
    if crs is not None:
        out["crs"] = {"type": "name", "properties": {"name": crs}}
    out["features"] = features
    return orjson.dumps(out)


# ------------------------------------------------------------------ text: encodings, typed columns


def _decode_text(raw: bytes, declared: str | None, fmt: str) -> tuple[str, str, str]:
    """Return RAW as text, its encoding and where that came from (declared, utf-8, detected)."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if declared:
        try:
            return raw.decode(declared), declared, "declared"
        except UnicodeDecodeError as exc:
            raise unreadable(fmt, f"not {declared} at byte {exc.start}") from None
    try:
        return raw.decode("utf-8"), "UTF-8", "utf-8"
    except UnicodeDecodeError:
        pass
    for encoding in ("GBK", "GB18030"):
        try:
            return raw.decode(encoding), encoding, "detected"
        except UnicodeDecodeError:
            continue
    raise unreadable(fmt, "neither UTF-8 nor GBK: declare encoding=")


_NUMBER = re.compile(r"[+-]?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")


def _typed(values: list[str | None]) -> tuple[list[Any], str]:
    """Return a text column's VALUES typed, for its description: numbers when every value is one.

    Codes keep their leading zeros and long codes stay text. The features themselves carry
    the text as written (whether 1201 is a count or a land-use code, only the layer knows).
    """
    present = [v for v in values if v not in (None, "")]
    if not present:
        return [None for _ in values], "string"
    if all(_NUMBER.fullmatch(v) for v in present):
        if all(re.fullmatch(r"[+-]?\d{1,9}", v) for v in present):
            return [int(v) if v not in (None, "") else None for v in values], "integer"
        if not all(re.fullmatch(r"[+-]?\d+", v) for v in present):
            return [float(v) if v not in (None, "") else None for v in values], "real"
    return [v if v not in (None, "") else None for v in values], "string"


# ------------------------------------------------------------------ CSV


def _key(label: str) -> str:
    return re.sub(r"[\s_()（）\[\]]", "", label).lower()


_LON = ("经度", "lon", "lng", "long", "longitude", "x", "x坐标", "东坐标", "横坐标", "easting")
_LAT = ("纬度", "lat", "latitude", "y", "y坐标", "北坐标", "纵坐标", "northing")
_WKT = ("wkt", "geometry", "geom", "thegeom", "shape", "图形", "几何", "图形wkt", "空间信息")


def _read_csv(path: Path, declared: str | None) -> ReadFile:
    """Read a CSV of points (lon/lat columns) or shapes (a WKT column)."""
    text, encoding, source = _decode_text(path.read_bytes(), declared, "csv")
    if "\x00" in text:
        raise unreadable("csv", "NUL bytes")
    first = text.split("\n", 1)[0]
    delimiter = max((",", "\t", ";", "|"), key=first.count)
    csv.field_size_limit(max(csv.field_size_limit(), 64 * 1024 * 1024))  # a WKT polygon is long
    rows: list[list[str]] = []
    counted = 0
    try:
        for line in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter):
            if not any(cell.strip() for cell in line):
                continue
            if len(line) > MAX_COLUMNS:
                raise _too_many_columns(len(line))
            counted += len(line)
            if counted > MAX_CELLS:  # a cell of "1," costs its row far more in memory than in the file
                raise MalformedInput.one(
                    "too_many_cells",
                    f"CSV 的单元格超过 {MAX_CELLS} 个（行数 × 列数），请分批上传",
                    f"the CSV holds more than {MAX_CELLS} cells (rows × columns): upload it in parts",
                )
            rows.append(line)
    except csv.Error as exc:
        raise unreadable("csv", str(exc)[:100]) from None
    if not rows:
        raise unreadable("csv", "empty")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    if len(header) > MAX_COLUMNS:
        raise _too_many_columns(len(header))
    if len(body) > MAX_FEATURES:
        raise MalformedInput.one(
            "too_many_features",
            f"文件中的要素超过 {MAX_FEATURES} 个，请分批上传",
            f"the file holds more than {MAX_FEATURES} features: upload it in parts",
        )
    names, notes = _header_names(header)
    keys = [_key(n) for n in names]
    wkt = next((i for i, k in enumerate(keys) if k in _WKT), None)
    lon = next((i for a in _LON for i, k in enumerate(keys) if k == a), None)
    lat = next((i for a in _LAT for i, k in enumerate(keys) if k == a), None)
    if wkt is None and (lon is None or lat is None):
        raise InvalidInput.one(
            "csv_no_geometry",
            f"CSV 中没有坐标列：需要“经度”“纬度”（或 lon/lat、lng、x/y）两列，或一列 WKT 图形；"
            f"表头为 {'、'.join(names[:20])}",
            "the CSV has no coordinate columns: it needs lon/lat (经度/纬度, lng, x/y) columns or a WKT column",
            field="columns",
        )
    geometry_columns = {wkt} if wkt is not None else {lon, lat}
    shapes, bad = _csv_shapes(body, wkt, lon, lat)
    if bad:
        notes.append(
            note(
                "bad_coordinates",
                f"{len(bad)} 行的坐标或 WKT 无法读取（第 {'、'.join(str(r) for r in bad[:10])} 行），这些要素没有图形",
                f"{len(bad)} rows have unreadable coordinates or WKT (rows {', '.join(str(r) for r in bad[:10])}); "
                f"they have no geometry",
                rows=bad[:100],
            )
        )
    kept = [i for i in range(len(names)) if i not in geometry_columns]
    props: list[dict[str, Any]] = [{} for _ in body]
    fields = []
    for i in range(len(names)):
        if i not in kept:
            continue
        cells = [(r[i].strip() or None) if i < len(r) else None for r in body]
        values, kind = _typed(cells)
        for row, cell in zip(props, cells, strict=True):
            row[names[i]] = cell  # the text as written: the layer's field types say what it means
        fields.append(FieldInfo(names[i], kind, _samples(values)))
    shapes, flat = _flatten(np.asarray(shapes, dtype=object), measured=False)
    notes += flat
    return ReadFile(
        format="csv",
        geojson=_collection(shapes, props, len(body), None),
        encoding=encoding,
        encoding_source=source,
        fields=fields,
        count=len(body),
        notes=notes,
    )


def _too_many_columns(found: int) -> MalformedInput:
    return MalformedInput.one(
        "too_many_columns",
        f"文件的列（字段）过多：{found} 个，上限 {MAX_COLUMNS}",
        f"the file holds {found} columns (fields), more than {MAX_COLUMNS}",
    )


def _header_names(header: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """Return HEADER's names made unique (a blank one named by its column), with a note if any was renamed."""
    names: list[str] = []
    taken: set[str] = set()
    renamed: list[str] = []
    for position, name in enumerate(header):
        fixed = name or f"column_{position + 1}"
        while fixed in taken:
            fixed = f"{fixed}_{position + 1}"
        if fixed != name:
            renamed.append(fixed)
        names.append(fixed)
        taken.add(fixed)
    notes = []
    if renamed:
        notes.append(
            note(
                "columns_renamed",
                f"表头有空白或重复的列名，已改为 {'、'.join(renamed[:10])}",
                f"blank or repeated column names were renamed {', '.join(renamed[:10])}",
            )
        )
    return names, notes


def _csv_shapes(
    rows: list[list[str]], wkt: int | None, lon: int | None, lat: int | None
) -> tuple[list[Any], list[int]]:
    """Return each row's geometry (None when blank or unreadable) and the sheet rows (1-based) unreadable."""
    shapes: list[Any] = []
    bad: list[int] = []
    for number, row in enumerate(rows, start=2):
        shape = None
        try:
            if wkt is not None:
                cell = row[wkt].strip() if wkt < len(row) else ""
                shape = shapely.from_wkt(cell) if cell else None
            else:
                x = row[lon].strip() if lon is not None and lon < len(row) else ""
                y = row[lat].strip() if lat is not None and lat < len(row) else ""
                if x or y:
                    fx, fy = float(x), float(y)
                    if not (math.isfinite(fx) and math.isfinite(fy)):
                        raise ValueError("not finite")
                    shape = shapely.Point(fx, fy)
        except (ValueError, shapely.errors.GEOSException):
            bad.append(number)
            shape = None
        shapes.append(shape)
    return shapes, bad


# ------------------------------------------------------------------ KML


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _coords(text: str | None, separator: str = ",") -> list[tuple[float, ...]]:
    """Return the tuples of a KML coordinates text ("lon,lat[,alt] …")."""
    out = []
    for token in (text or "").split() if separator == "," else [text or ""]:
        parts = token.split(separator) if separator == "," else token.split()
        values = tuple(float(p) for p in parts if p != "")
        if len(values) < 2 or not all(math.isfinite(v) for v in values):
            raise ValueError("bad coordinate")
        out.append(values[:3])
    return out


def _kml_geometry(element: ElementTree.Element) -> Any:
    """Return the shapely geometry of a KML geometry ELEMENT (Point, LineString, Polygon, MultiGeometry, gx:Track)."""
    kind = _local(element.tag)
    if kind == "Point":
        return shapely.Point(_coords(_child_text(element, "coordinates"))[0])
    if kind in ("LineString", "LinearRing"):
        return shapely.LineString(_coords(_child_text(element, "coordinates")))
    if kind == "Track":
        points = [_coords(c.text, " ")[0] for c in element if _local(c.tag) == "coord"]
        return shapely.LineString(points)
    if kind == "Polygon":
        outer, inner = None, []
        for child in element:
            ring = next((r for r in child.iter() if _local(r.tag) == "LinearRing"), None)
            if ring is None:
                continue
            coords = _coords(_child_text(ring, "coordinates"))
            if _local(child.tag) == "outerBoundaryIs":
                outer = coords
            elif _local(child.tag) == "innerBoundaryIs":
                inner.append(coords)
        if outer is None:
            raise ValueError("polygon without outer ring")
        return shapely.Polygon(outer, inner)
    if kind in ("MultiGeometry", "MultiTrack"):
        parts = [_kml_geometry(c) for c in element if _local(c.tag) in _KML_GEOMETRIES]
        kinds = {p.geom_type for p in parts}
        if kinds == {"Point"}:
            return shapely.MultiPoint(parts)
        if kinds == {"LineString"}:
            return shapely.MultiLineString(parts)
        if kinds <= {"Polygon", "MultiPolygon"} and kinds:
            return shapely.MultiPolygon([g for p in parts for g in getattr(p, "geoms", [p])])
        return shapely.GeometryCollection(parts)
    raise ValueError(kind)


_KML_GEOMETRIES = {"Point", "LineString", "LinearRing", "Polygon", "MultiGeometry", "Track", "MultiTrack"}


def _child_text(element: ElementTree.Element, name: str) -> str | None:
    for child in element:
        if _local(child.tag) == name:
            return child.text
    return None


def _placemark(element: ElementTree.Element) -> tuple[dict[str, str | None], Any, bool]:
    """Return a Placemark's properties (name, description, ExtendedData), its geometry, and whether it is broken."""
    props: dict[str, str | None] = {}
    geometry, bad = None, False
    for child in element:
        kind = _local(child.tag)
        if kind in ("name", "description"):
            props[kind] = (child.text or "").strip() or None
        elif kind == "ExtendedData":
            for item in child.iter():
                tag = _local(item.tag)
                if tag == "Data" and item.get("name"):
                    props[str(item.get("name"))] = (_child_text(item, "value") or "").strip() or None
                elif tag == "SimpleData" and item.get("name"):
                    props[str(item.get("name"))] = (item.text or "").strip() or None
        elif kind in _KML_GEOMETRIES and geometry is None:
            try:
                geometry = _kml_geometry(child)
            except (ValueError, IndexError, shapely.errors.GEOSException):
                bad = True
    return props, geometry, bad


def _read_kml(raw: bytes, fmt: str, layer: str | None) -> ReadFile:
    """Read the Placemarks of a KML (folders are its layers: all of them unless LAYER names one)."""
    placemarks: list[tuple[str, dict[str, str | None], Any]] = []
    folders: list[str] = []
    path: list[str] = []  # the names of the folders open
    open_tags: list[str] = []
    open_elements: list[ElementTree.Element] = []
    held = 0  # elements of the placemark being read, kept until it ends
    bad: list[int] = []
    try:
        for event, element in ElementTree.iterparse(io.BytesIO(raw), events=("start", "end")):
            kind = _local(element.tag)
            if event == "start":
                open_tags.append(kind)
                open_elements.append(element)
                if len(open_tags) > MAX_DEPTH:
                    raise unreadable(fmt, f"XML nested more than {MAX_DEPTH} deep")
                if "Placemark" in open_tags:
                    held += 1
                    if held > MAX_PLACEMARK_ELEMENTS:
                        raise unreadable(fmt, f"a Placemark of more than {MAX_PLACEMARK_ELEMENTS} elements")
                if kind == "Folder":
                    path.append(f"folder {len(folders) + 1}")
                    folders.append("/".join(path))
                continue
            open_tags.pop()
            open_elements.pop()
            if "Placemark" not in open_tags and open_elements and len(open_elements[-1]):
                # read and done with: the tree never holds the file, only the placemark being read.
                # (The parser may have read ahead: the child removed may be a later sibling, still
                # whole and still referenced by the events to come; every one is removed once.)
                del open_elements[-1][-1]
            if kind == "name" and open_tags and open_tags[-1] == "Folder":
                path[-1] = (element.text or "").strip() or path[-1]
                folders[-1] = "/".join(path)
            elif kind == "Folder":
                path.pop()
                element.clear()
            elif kind == "Placemark":
                if len(placemarks) >= MAX_FEATURES:
                    raise MalformedInput.one(
                        "too_many_features",
                        f"文件中的要素超过 {MAX_FEATURES} 个，请分批上传",
                        f"the file holds more than {MAX_FEATURES} features: upload it in parts",
                    )
                props, geometry, broken = _placemark(element)
                if broken:
                    bad.append(len(placemarks))
                placemarks.append(("/".join(path), props, geometry))
                element.clear()
                held = 0
    except ElementTree.ParseError as exc:
        raise unreadable(fmt, f"XML: {str(exc)[:80]}") from None
    if layer is not None:
        if layer not in folders:
            _choose(folders, layer, fmt)
        placemarks = [p for p in placemarks if p[0] == layer or p[0].startswith(layer + "/")]
    notes: list[dict[str, Any]] = []
    if layer is None and len(folders) > 1:
        notes.append(
            note(
                "kml_folders_merged",
                f"KML 的 {len(folders)} 个文件夹（{'、'.join(folders[:10])}）合并上传；只要其中一个请用 layer 参数",
                f"the KML's {len(folders)} folders were read together; choose one with layer=",
                folders=folders[:100],
            )
        )
    if bad:
        notes.append(
            note(
                "bad_coordinates",
                f"{len(bad)} 个地标的坐标无法读取，这些要素没有图形",
                f"{len(bad)} placemarks have unreadable coordinates; they have no geometry",
                features=bad[:100],
            )
        )
    names: dict[str, None] = {}
    for _, props, _ in placemarks:
        for n in props:
            if n not in names:
                names[n] = None
                if len(names) > MAX_COLUMNS:
                    raise _too_many_columns(len(names))
    fields = []
    for name in names:
        values, kind = _typed([props.get(name) for _, props, _ in placemarks])
        fields.append(FieldInfo(name, "string" if name in ("name", "description") else kind, _samples(values)))
    props_out = [props for _, props, _ in placemarks]  # each placemark's own: the text as written
    shapes, flat = _flatten(np.asarray([g for _, _, g in placemarks], dtype=object), measured=False)
    notes += flat
    return ReadFile(
        format=fmt,
        geojson=_collection(shapes, props_out, len(placemarks), "EPSG:4326"),
        layers=folders,
        layer=layer,
        fields=fields,
        count=len(placemarks),
        notes=notes,
        crs="EPSG:4326",
    )
