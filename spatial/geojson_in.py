"""Reading an uploaded GeoJSON file into features, with a clear error for every way it can be broken."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from spatial.errors import MalformedInput, Problem, Where

BOM = b"\xef\xbb\xbf"
GEOMETRY_TYPES = {
    "Point",
    "MultiPoint",
    "LineString",
    "MultiLineString",
    "Polygon",
    "MultiPolygon",
    "GeometryCollection",
}
_NON_STANDARD = re.compile(rb"(?<![\"\w])(NaN|-?Infinity)(?![\"\w])")


@dataclass
class ParsedUpload:
    """The features of an upload, the `crs` member it carried, and notes about the reading."""

    features: list[Any]
    crs_name: str | None = None
    notes: list[Problem] = field(default_factory=list)


def _fail(code: str, zh: str, en: str, **where: Any) -> MalformedInput:
    return MalformedInput(Problem(code, zh, en, Where(**where)))


def _decode(raw: bytes) -> bytes:
    """Return RAW without a UTF-8 BOM, or refuse bytes that are not UTF-8 (hinting GBK)."""
    if raw.startswith(BOM):
        raw = raw[len(BOM) :]
    if b"\x00" in raw:
        at = raw.index(b"\x00")
        raise _fail(
            "nul_bytes",
            f"文件第 {at} 字节处含有 NUL 空字符（是否为二进制文件或 UTF-16 编码？）",
            f"NUL byte at offset {at} (a binary or UTF-16 file?)",
            location=[at],
        )
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        hint_zh, hint_en = "", ""
        try:
            raw.decode("gbk")
            hint_zh, hint_en = "；看起来是 GBK 编码，请另存为 UTF-8", "; it looks like GBK: save it as UTF-8"
        except UnicodeDecodeError:
            pass
        raise _fail(
            "not_utf8",
            f"文件不是 UTF-8 编码（第 {exc.start} 字节）{hint_zh}",
            f"the file is not UTF-8 (byte {exc.start}){hint_en}",
            location=[exc.start],
        ) from None
    return raw


def _json_error(raw: bytes, exc: orjson.JSONDecodeError) -> MalformedInput:
    """Return the error for unparsable JSON: truncated, NaN/Infinity, too deep, or where it broke."""
    found = _NON_STANDARD.search(raw)
    if found:
        line = raw.count(b"\n", 0, found.start()) + 1
        return _fail(
            "json_nan",
            f"JSON 中不允许 {found.group(1).decode()}（第 {line} 行）：坐标和数值必须是有限数",
            f"{found.group(1).decode()} is not valid JSON (line {line}): numbers must be finite",
            location=[line, found.start() - raw.rfind(b"\n", 0, found.start())],
        )
    if "depth" in exc.msg.lower() or "recursion" in exc.msg.lower():
        return _fail("nesting_too_deep", "JSON 嵌套层级过深", "JSON nested too deep")
    if exc.pos >= len(raw.rstrip()) - 1:
        return _fail(
            "json_truncated",
            "文件不完整：JSON 在结尾处被截断（上传是否中断？）",
            "the file ends in the middle of the JSON (was the upload cut short?)",
            location=[exc.lineno, exc.colno],
        )
    return _fail(
        "invalid_json",
        f"不是有效的 JSON：第 {exc.lineno} 行第 {exc.colno} 列",
        f"not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
        location=[exc.lineno, exc.colno],
    )


def _crs_name(obj: Mapping[str, Any]) -> str | None:
    crs = obj.get("crs")
    if not isinstance(crs, Mapping):
        return None
    props = crs.get("properties")
    name = props.get("name") if isinstance(props, Mapping) else None
    return name if isinstance(name, str) else None


def read_geojson(raw: bytes) -> ParsedUpload:
    """Return the features in RAW: a FeatureCollection, a single Feature or a bare geometry.

    Examples
    --------
    >>> read_geojson(b'{"type": "Point", "coordinates": [120.4, 36.3]}').features[0]["type"]
    'Feature'
    >>> read_geojson(b'\\xef\\xbb\\xbf{"type": "FeatureCollection", "features": []}').features
    []
    """
    raw = _decode(raw)
    if not raw.strip():
        raise _fail("body_empty", "文件为空", "the file is empty")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _json_error(raw, exc) from None
    kind = data.get("type") if isinstance(data, Mapping) else None
    kind = kind if isinstance(kind, str) else None
    if kind == "FeatureCollection":
        features = data.get("features")
        if not isinstance(features, list):
            raise _fail(
                "features_not_array",
                "FeatureCollection 的 features 应为数组",
                "a FeatureCollection's features must be an array",
                field="features",
            )
        return ParsedUpload(features, _crs_name(data))
    if kind == "Feature":
        return ParsedUpload([data], _crs_name(data))
    if kind in GEOMETRY_TYPES:
        feature = {"type": "Feature", "geometry": data, "properties": {}}
        return ParsedUpload([feature], _crs_name(data))
    shown = type(data).__name__ if not isinstance(data, Mapping) else repr(data.get("type"))[:40]
    raise _fail(
        "wrong_top_level_type",
        f"顶层应为 FeatureCollection、Feature 或几何对象，收到 {shown}",
        f"the top level must be a FeatureCollection, a Feature or a geometry, got {shown}",
        field="type",
    )
