"""Reading an uploaded GeoJSON file into features, with a clear error for every way it can be broken."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
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


Buffer = bytes | memoryview
"""An upload's bytes: in memory, or a read-only view of a file mapped from disk (never copied whole)."""

BLOCK = 1 << 22
"""Bytes looked at a time when scanning a whole file (memory stays at one block)."""


def _blocks(raw: Buffer, end: int | None = None) -> Iterator[tuple[int, bytes]]:
    """Yield (offset, bytes) of RAW[:END] a block at a time."""
    stop = len(raw) if end is None else end
    for start in range(0, stop, BLOCK):
        yield start, bytes(raw[start : min(stop, start + BLOCK)])


def _find_nul(raw: Buffer) -> int:
    """Return the offset of the first NUL byte in RAW, or -1."""
    for start, block in _blocks(raw):
        at = block.find(b"\x00")
        if at >= 0:
            return start + at
    return -1


def _decode(raw: Buffer) -> Buffer:
    """Return RAW without a UTF-8 BOM, or refuse bytes that are not UTF-8 (hinting GBK)."""
    if bytes(raw[: len(BOM)]) == BOM:
        raw = memoryview(raw)[len(BOM) :]
    at = _find_nul(raw)
    if at >= 0:
        raise _fail(
            "nul_bytes",
            f"文件第 {at} 字节处含有 NUL 空字符（是否为二进制文件或 UTF-16 编码？）",
            f"NUL byte at offset {at} (a binary or UTF-16 file?)",
            location=[at],
        )
    try:
        _check_utf8(raw)
    except UnicodeDecodeError as exc:
        hint_zh, hint_en = "", ""
        if _looks_gbk(raw):
            hint_zh, hint_en = "；看起来是 GBK 编码，请另存为 UTF-8", "; it looks like GBK: save it as UTF-8"
        raise _fail(
            "not_utf8",
            f"文件不是 UTF-8 编码（第 {exc.start} 字节）{hint_zh}",
            f"the file is not UTF-8 (byte {exc.start}){hint_en}",
            location=[exc.start],
        ) from None
    return raw


def _looks_gbk(raw: Buffer) -> bool:
    """Tell whether the start of RAW (what is not UTF-8) reads as GBK."""
    try:
        bytes(raw[:BLOCK]).decode("gbk")
    except UnicodeDecodeError as exc:
        return exc.start >= BLOCK - 1  # only a character cut at the block's end
    return True


def _check_utf8(raw: Buffer, block: int = BLOCK) -> None:
    """Raise UnicodeDecodeError (offsets into RAW) unless RAW is UTF-8; memory stays at one block."""
    start = 0
    while start < len(raw):
        end = min(len(raw), start + block)
        back = 0
        while end < len(raw) and back < 3 and 0x80 <= raw[end] <= 0xBF:  # never cut a character in two
            end, back = end - 1, back + 1
        try:
            bytes(raw[start:end]).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UnicodeDecodeError("utf-8", b"", start + exc.start, start + exc.end, exc.reason) from None
        start = end


def _rstripped_length(raw: Buffer) -> int:
    """Return the length of RAW without its trailing whitespace."""
    end = len(raw)
    while end > 0 and raw[end - 1] in _WHITESPACE:
        end -= 1
    return end


def _blank(raw: Buffer) -> bool:
    """Tell whether RAW holds nothing but whitespace."""
    return all(not block.strip() for _, block in _blocks(raw))


def _json_error(raw: Buffer, exc: orjson.JSONDecodeError) -> MalformedInput:
    """Return the error for unparsable JSON: truncated, NaN/Infinity, too deep, or where it broke."""
    found = _NON_STANDARD.search(raw)
    if found:
        line, col = _line_col(raw, found.start())
        return _fail(
            "json_nan",
            f"JSON 中不允许 {found.group(1).decode()}（第 {line} 行）：坐标和数值必须是有限数",
            f"{found.group(1).decode()} is not valid JSON (line {line}): numbers must be finite",
            location=[line, col],
        )
    if "depth" in exc.msg.lower() or "recursion" in exc.msg.lower():
        return _fail("nesting_too_deep", "JSON 嵌套层级过深", "JSON nested too deep")
    if exc.pos >= _rstripped_length(raw) - 1:
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


def read_geojson(raw: Buffer) -> ParsedUpload:
    """Return the features in RAW: a FeatureCollection, a single Feature or a bare geometry.

    Examples
    --------
    >>> read_geojson(b'{"type": "Point", "coordinates": [120.4, 36.3]}').features[0]["type"]
    'Feature'
    >>> read_geojson(b'\\xef\\xbb\\xbf{"type": "FeatureCollection", "features": []}').features
    []
    """
    raw = _decode(raw)
    if _blank(raw):
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


# ---------------------------------------------------------------------------------------
# Streaming: a FeatureCollection is split into its features' raw bytes in one pass (msgspec
# checks the JSON syntax of the whole file and keeps a zero-copy view per feature); the
# features are then parsed chunk by chunk. Memory stays at the raw file plus one chunk.

_WHITESPACE = b" \t\r\n"
_AT_BYTE = re.compile(r"\(byte (\d+)\)")


class _Collection(msgspec.Struct):
    type: str
    features: list[msgspec.Raw]
    crs: Any = None


@dataclass
class FeatureSource:
    """The features of an upload, handed out chunk by chunk.

    A FeatureCollection keeps only the raw bytes of each feature; anything else (a single
    Feature, a bare geometry) is held parsed.
    """

    count: int
    crs_name: str | None = None
    raws: list[msgspec.Raw] | list[bytes] | None = None
    held: list[Any] | None = None
    offset: int = 0
    """The index of the first of RAWS (a part of a collection, handed to another process)."""
    repeated: list[str] = field(default_factory=list)
    """Member names a held file (a single Feature or geometry) repeats: lost once it is parsed."""

    def part(self, first: int, stop: int) -> FeatureSource:
        """Return features FIRST..STOP-1 of a collection as a source of their own (plain bytes: picklable)."""
        assert self.raws is not None, "only a collection's features are handed out in parts"
        return FeatureSource(stop, self.crs_name, self.raw_features(first, stop), offset=first)

    def spans(self, size: int) -> Iterator[tuple[int, int]]:
        """Yield (first, stop) feature indexes of chunks of at most SIZE features."""
        for first in range(0, self.count, size):
            yield first, min(self.count, first + size)

    def feature_bytes(self, index: int) -> bytes:
        """Return the raw JSON of feature INDEX."""
        if self.raws is not None:
            return bytes(self.raws[index - self.offset])
        return orjson.dumps(self.held[index]) if self.held is not None else b"null"

    def raw_features(self, first: int, stop: int) -> list[bytes]:
        """Return the raw JSON of features FIRST..STOP-1."""
        if self.raws is not None:
            return [bytes(r) for r in self.raws[first - self.offset : stop - self.offset]]
        return [orjson.dumps(f) for f in (self.held or [])[first:stop]]

    def chunk_bytes(self, first: int, stop: int) -> bytes:
        """Return features FIRST..STOP-1 as the bytes of one JSON array."""
        if self.raws is not None:
            return b"[" + b",".join(self.raw_features(first, stop)) + b"]"
        return orjson.dumps(self.held[first:stop] if self.held is not None else [])

    def parsed(self, first: int, stop: int) -> list[Any]:
        """Return features FIRST..STOP-1 as plain JSON values."""
        if self.held is not None:
            return self.held[first:stop]
        values: list[Any] = orjson.loads(self.chunk_bytes(first, stop))
        return values


def _line_col(raw: Buffer, pos: int) -> tuple[int, int]:
    """Return the line and column (1-based) of byte POS of RAW, counting a block at a time."""
    lines, last = 0, -1
    for start, block in _blocks(raw, pos):
        lines += block.count(b"\n")
        at = block.rfind(b"\n")
        if at >= 0:
            last = start + at
    return lines + 1, pos - last


def _decode_error(raw: Buffer, exc: Exception) -> MalformedInput:
    """Return the error for RAW that msgspec could not parse: NaN, truncated, too deep or where."""
    found = _NON_STANDARD.search(raw)
    if found:
        line, col = _line_col(raw, found.start())
        return _fail(
            "json_nan",
            f"JSON 中不允许 {found.group(1).decode()}（第 {line} 行）：坐标和数值必须是有限数",
            f"{found.group(1).decode()} is not valid JSON (line {line}): numbers must be finite",
            location=[line, col],
        )
    if isinstance(exc, RecursionError):
        return _fail("nesting_too_deep", "JSON 嵌套层级过深", "JSON nested too deep")
    at = _AT_BYTE.search(str(exc))
    if "truncated" in str(exc) or at is None:
        line, col = _line_col(raw, len(raw))
        return _fail(
            "json_truncated",
            "文件不完整：JSON 在结尾处被截断（上传是否中断？）",
            "the file ends in the middle of the JSON (was the upload cut short?)",
            location=[line, col],
        )
    line, col = _line_col(raw, int(at.group(1)))
    return _fail(
        "invalid_json",
        f"不是有效的 JSON：第 {line} 行第 {col} 列",
        f"not valid JSON at line {line}, column {col}: {str(exc).split(' (byte')[0]}",
        location=[line, col],
    )


def open_geojson(raw: Buffer) -> FeatureSource:
    """Return the features of RAW, streamed when it is a FeatureCollection, with every error coded.

    Examples
    --------
    >>> source = open_geojson(b'{"type": "FeatureCollection", "features": [{"a": 1}, {"b": 2}]}')
    >>> source.count, source.parsed(0, 2)
    (2, [{'a': 1}, {'b': 2}])
    """
    raw = _decode(raw)
    if _blank(raw):
        raise _fail("body_empty", "文件为空", "the file is empty")
    try:
        collection = msgspec.json.decode(raw, type=_Collection)
    except msgspec.ValidationError:
        return _held(raw)  # not a FeatureCollection of an array: the full parse explains what it is
    except (msgspec.DecodeError, RecursionError) as exc:
        raise _decode_error(raw, exc) from None
    if collection.type != "FeatureCollection":
        return _held(raw)
    crs_name = _crs_name({"crs": collection.crs})
    return FeatureSource(len(collection.features), crs_name, raws=collection.features)


def _held(raw: Buffer) -> FeatureSource:
    """Parse RAW whole: a single Feature, a bare geometry, or a file the full parse must explain."""
    parsed = read_geojson(raw)
    repeated = repeated_members(bytes(raw)) if len(parsed.features) == 1 else []
    return FeatureSource(len(parsed.features), parsed.crs_name, held=parsed.features, repeated=repeated)


def repeated_members(raw: bytes) -> list[str]:
    """Return the member names RAW repeats within one object, at any depth (JSON keeps the last).

    Linear in the size of RAW: each object's names are counted once, not compared pairwise.

    Examples
    --------
    >>> repeated_members(b'{"type": "Feature", "properties": {"code": "1", "code": "2"}}')
    ['code']
    """
    repeated: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        as_dict = dict(items)
        if len(as_dict) < len(items):
            counts = Counter(name for name, _ in items)
            repeated.extend(sorted(name for name, n in counts.items() if n > 1))
        return as_dict

    try:
        json.loads(raw, object_pairs_hook=pairs)
    except (ValueError, RecursionError):
        return []
    return repeated


def member_count(value: Any) -> int:
    """Return how many member names VALUE (parsed JSON) holds, at any depth (no recursion: any nesting)."""
    count = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            count += len(item)
            stack.extend(v for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, dict | list))
    return count
