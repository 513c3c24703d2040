"""Geometry at the door: GeoJSON to shapely, type and validity checks, geodesic area.

Every check raises :class:`~spatial.errors.InvalidInput` with a stable code and, where it
helps, the coordinate of the problem. Nothing is repaired here: repair is asked for
explicitly elsewhere.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

import shapely
from pyproj import Geod
from shapely.geometry.base import BaseGeometry

from spatial.errors import InvalidInput

STORAGE_SRID = 4490
"""CGCS2000 geographic, lon/lat order in code."""

GEOD = Geod(ellps="GRS80")
"""The CGCS2000 ellipsoid (GRS80 shares its flattening)."""


MAX_VERTICES = 100_000

_MULTI = {"Point": "MultiPoint", "LineString": "MultiLineString", "Polygon": "MultiPolygon"}
_REASON_AT = re.compile(r"^(?P<what>[^\[]+)\[(?P<x>[-\d.eE+]+) (?P<y>[-\d.eE+]+)\]")
_REASON_CODES = {
    "self-intersection": "self_intersection",
    "ring self-intersection": "ring_self_intersection",
    "too few points in geometry component": "too_few_points",
    "interior is disconnected": "interior_disconnected",
    "hole lies outside shell": "hole_outside_shell",
    "nested holes": "nested_holes",
    "nested shells": "nested_shells",
    "duplicate rings": "duplicate_rings",
    "invalid coordinate": "invalid_coordinate",
    "ring is not closed": "ring_not_closed",
}


def mu_from_m2(area_m2: float) -> float:
    """Return AREA_M2 in 亩 (1 亩 = 2000/3 m²), computed as the database computes it.

    Examples
    --------
    >>> mu_from_m2(10_000.0)
    15.0
    """
    return area_m2 * 3 / 2000


def geodesic_area(geom: BaseGeometry) -> float:
    """Return the area of GEOM in m² on the CGCS2000 ellipsoid, whatever its winding.

    Examples
    --------
    >>> from shapely.geometry import box
    >>> round(geodesic_area(box(120.396, 36.307, 120.397115, 36.3079)))
    10001
    """
    if geom.is_empty or geom.geom_type not in ("Polygon", "MultiPolygon"):
        return 0.0
    polygons = geom.geoms if geom.geom_type == "MultiPolygon" else [geom]
    total = 0.0
    for poly in polygons:
        total += abs(GEOD.geometry_area_perimeter(shapely.geometry.polygon.orient(poly))[0])
    return total


def _field_error(code: str, zh: str, en: str, **where: Any) -> InvalidInput:
    return InvalidInput.one(code, zh, en, field="geometry", **where)


_DEPTH = {"Point": 0, "MultiPoint": 1, "LineString": 1, "MultiLineString": 2, "Polygon": 2, "MultiPolygon": 3}
"""How many array levels stand above the positions of each GeoJSON geometry type."""


def _check_position(pos: Any) -> None:
    """Refuse a position that is not 2 or 3 finite numbers."""
    if not isinstance(pos, list) or not 2 <= len(pos) <= 3:
        raise _field_error(
            "geometry_malformed",
            "坐标点应为 [经度, 纬度] 或 [经度, 纬度, 高程]",
            "a position must be [lon, lat] or [lon, lat, height]",
        )
    for value in pos:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _field_error("invalid_coordinate", "坐标不是数字", "coordinate is not a number")
        if not math.isfinite(value):
            raise _field_error("invalid_coordinate", "坐标不是有限数值 (NaN/Infinity)", "coordinate is NaN or infinite")


def _check_structure(coords: Any, depth: int, gtype: str) -> None:
    """Refuse coordinates whose nesting does not match GTYPE; check every position."""
    if depth == 0:
        _check_position(coords)
        return
    if not isinstance(coords, list):
        raise _field_error(
            "geometry_malformed",
            f"{gtype} 的坐标嵌套层级不正确",
            f"{gtype} coordinates are not nested as GeoJSON requires",
        )
    for item in coords:
        _check_structure(item, depth - 1, gtype)


def parse_geojson_geometry(obj: Any) -> BaseGeometry:
    """Return the shapely geometry of a GeoJSON geometry object, or raise with a code.

    Examples
    --------
    >>> parse_geojson_geometry({"type": "Point", "coordinates": [120.4, 36.3]}).wkt
    'POINT (120.4 36.3)'
    """
    if obj is None:
        raise _field_error("geometry_missing", "缺少几何图形", "geometry is missing")
    if not isinstance(obj, Mapping) or not isinstance(obj.get("type"), str):
        raise _field_error("geometry_malformed", "几何图形格式错误", "geometry must be a GeoJSON object with a type")
    gtype = obj["type"]
    if gtype == "GeometryCollection":
        raise _field_error(
            "geometry_type_not_allowed",
            "不支持几何集合 (GeometryCollection)",
            "GeometryCollection is not accepted",
        )
    if gtype not in _DEPTH:
        raise _field_error("geometry_type_unknown", f"未知的几何类型 {gtype!r}", f"unknown geometry type {gtype!r}")
    coords = obj.get("coordinates")
    if coords is None:
        raise _field_error("geometry_malformed", "几何图形缺少坐标", "geometry has no coordinates")
    _check_structure(coords, _DEPTH[gtype], gtype)
    if gtype == "Polygon":
        _check_rings(coords)
    elif gtype == "MultiPolygon":
        for part in coords:
            _check_rings(part)
    try:
        # Z is dropped on storage; dropping it here first closes rings in x/y, as the bulk path does
        geom = shapely.geometry.shape({"type": gtype, "coordinates": _flat_2d(coords, _DEPTH[gtype])})
    except (ValueError, TypeError, IndexError, AttributeError, shapely.errors.GEOSException) as exc:
        raise _field_error("geometry_malformed", "几何坐标结构错误", f"geometry coordinates malformed: {exc}") from None
    if geom.is_empty:
        raise _field_error("geometry_empty", "几何图形为空", "geometry is empty")
    return geom


def _flat_2d(coords: Any, depth: int) -> Any:
    """Return COORDS (nested DEPTH levels above the positions) with every position cut to x, y."""
    if depth == 0:
        return coords[:2]
    return [_flat_2d(item, depth - 1) for item in coords]


def _check_rings(rings: Any) -> None:
    """Refuse polygon rings that are unclosed or have fewer than four positions."""
    if not isinstance(rings, list) or not rings:
        raise _field_error("geometry_malformed", "面的坐标格式错误", "polygon coordinates malformed")
    for ring in rings:
        if not isinstance(ring, list) or len(ring) < 4:
            raise _field_error(
                "ring_too_short",
                "面的环至少需要4个坐标点（首尾相同）",
                "a polygon ring needs at least 4 positions (first = last)",
            )
        if list(ring[0][:2]) != list(ring[-1][:2]):
            raise _field_error(
                "ring_not_closed",
                "面的环未闭合：首尾坐标不一致",
                "polygon ring is not closed: first and last positions differ",
                location=[float(v) for v in ring[0][:2]],
            )


def check_lonlat_range(geom: BaseGeometry) -> None:
    """Refuse coordinates outside longitude −180…180 / latitude −90…90."""
    xmin, ymin, xmax, ymax = geom.bounds
    if xmin < -180 or xmax > 180 or ymin < -90 or ymax > 90:
        raise _field_error(
            "coordinate_out_of_range",
            "坐标超出经纬度范围（是否为投影坐标或经纬度颠倒？）",
            "coordinates outside longitude/latitude range (projected metres or swapped axes?)",
            location=[xmin, ymin],
        )


def validity_problem(geom: BaseGeometry) -> tuple[str, str, list[float] | None] | None:
    """Return (code, GEOS reason, location) when GEOM is invalid, else None.

    Examples
    --------
    >>> bowtie = shapely.Polygon([(0, 0), (1, 1), (1, 0), (0, 1), (0, 0)])
    >>> validity_problem(bowtie)
    ('self_intersection', 'Self-intersection[0.5 0.5]', [0.5, 0.5])
    """
    if shapely.is_valid(geom):
        return None
    reason = shapely.is_valid_reason(geom)
    match = _REASON_AT.match(reason)
    what = (match.group("what") if match else reason).strip().lower()
    location = [float(match.group("x")), float(match.group("y"))] if match else None
    return _REASON_CODES.get(what, "geometry_invalid"), reason, location


def prepare_for_storage(geom: BaseGeometry, *, allowed: Iterable[str], stored: Iterable[str]) -> BaseGeometry:
    """Check GEOM against a layer's rules and return it ready to store.

    Z values are dropped, single parts are promoted to multi where the column is multi,
    and polygon winding is normalised (exterior counter-clockwise) — never a reason to
    reject. ALLOWED are the GeoJSON types a layer accepts, STORED the types its column
    holds. Invalid geometry is refused with its GEOS reason and location.
    """
    allowed = tuple(allowed)
    if geom.geom_type not in allowed:
        raise _field_error(
            "geometry_type_not_allowed",
            f"几何类型 {geom.geom_type} 不符合本图层要求（允许：{'、'.join(allowed)}）",
            f"geometry type {geom.geom_type} not allowed here (allowed: {', '.join(allowed)})",
        )
    if shapely.get_num_coordinates(geom) > MAX_VERTICES:
        raise _field_error(
            "too_many_vertices",
            f"顶点数超过上限 {MAX_VERTICES}",
            f"more than {MAX_VERTICES} vertices",
        )
    if shapely.has_z(geom):
        geom = shapely.force_2d(geom)
    check_lonlat_range(geom)
    problem = validity_problem(geom)
    if problem:
        code, reason, location = problem
        raise _field_error(code, f"几何图形无效：{reason}", f"invalid geometry: {reason}", location=location)
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        geom = shapely.orient_polygons(geom)
    stored = tuple(stored)
    if geom.geom_type not in stored and _MULTI.get(geom.geom_type) in stored:
        geom = getattr(shapely.geometry, _MULTI[geom.geom_type])([geom])
    return geom


# ---------------------------------------------------------------------------------------
# Many at once: the common case of a big upload (polygons or points that are fine) is
# built and checked with vectorised shapely; whatever this path is unsure of it leaves to
# the one-by-one checks above, which give the exact reason.

_POSITION_DEPTH = {"Point": 2, "Polygon": 4, "MultiPolygon": 5}
"""Bracket depth of a position when a chunk's coordinates are joined into one JSON array."""

_NUMERIC = np.zeros(256, bool)
for _char in b"0123456789.-+eE,[] \t\r\n":
    _NUMERIC[_char] = True

_POSITION = list[float]
_DECODERS: dict[str, Any] = {
    "Point": msgspec.json.Decoder(list[_POSITION]),
    "Polygon": msgspec.json.Decoder(list[list[list[_POSITION]]]),
    "MultiPolygon": msgspec.json.Decoder(list[list[list[list[_POSITION]]]]),
}


@dataclass
class Built:
    """Geometries built from many features' coordinates: None where the one-by-one path must look."""

    geoms: Any  # object array, None where not built
    had_z: Any  # bool array
    raw_bounds: tuple[float, float, float, float] | None  # of the coordinates as given


@dataclass
class _Flat:
    """Coordinates of many geometries of one type, flattened: positions, then ring/part/geometry sizes."""

    keep: Any  # which inputs are in (the others go one by one)
    given: Any  # positions × (2 | 3), as given
    ring_sizes: Any
    rings_per_part: Any
    parts_per_geom: Any


def _flatten_text(gtype: str, raws: list[bytes]) -> _Flat | None:
    """Flatten the raw JSON coordinates of many geometries with numpy; None unless all are plain.

    Reads the bracket structure and the numbers of the whole chunk at once, then checks that
    every position has the same 2 or 3 numbers and every ring is closed with 4 positions or more.
    """
    text = b"[" + b",".join(raws) + b"]"
    data = np.frombuffer(text, np.uint8)
    if not _NUMERIC[data].all():
        return None
    brackets = np.flatnonzero((data == 0x5B) | (data == 0x5D))
    opens = data[brackets] == 0x5B
    depth = np.cumsum(np.where(opens, 1, -1))
    level = _POSITION_DEPTH[gtype]
    if depth.min() < 0 or depth[-1] != 0 or depth.max() != level:
        return None
    position_open = brackets[opens & (depth == level)]
    geometry_open = brackets[opens & (depth == 2)]
    if geometry_open.size != len(raws):
        return None
    commas = np.flatnonzero(data == 0x2C)
    comma_depth = depth[np.searchsorted(brackets, commas) - 1]
    inner = commas[comma_depth == level]
    dims = np.bincount(np.searchsorted(position_open, inner) - 1, minlength=position_open.size) + 1
    if dims.size == 0 or dims.min() != dims.max() or dims[0] not in (2, 3):
        return None
    try:
        values = np.fromstring(text.translate(None, b"[]"), dtype=np.float64, sep=",")  # noqa: NPY201
    except ValueError:
        return None
    if values.size != dims.sum() or not np.isfinite(values).all():
        return None
    given = values.reshape(-1, int(dims[0]))
    n = len(raws)
    if gtype == "Point":
        ones = np.ones(n, np.int64)
        return _Flat(np.arange(n), given, ones, ones, ones)
    ring_open = brackets[opens & (depth == level - 1)]
    part_open = brackets[opens & (depth == level - 2)]
    ring_sizes = np.diff(np.append(np.searchsorted(position_open, ring_open), position_open.size))
    rings_per_part = np.diff(np.append(np.searchsorted(ring_open, part_open), ring_open.size))
    parts_per_geom = np.diff(np.append(np.searchsorted(part_open, geometry_open), part_open.size))
    if ring_sizes.size == 0 or ring_sizes.min() < 4:
        return None  # a ring needs 4 positions or more
    if rings_per_part.min(initial=1) < 1 or parts_per_geom.min(initial=1) < 1:
        return None  # an empty polygon or multipolygon
    first = np.append(0, np.cumsum(ring_sizes)[:-1])
    last = first + ring_sizes - 1
    if not (given[first, :2] == given[last, :2]).all():
        return None
    return _Flat(np.arange(n), given, ring_sizes, rings_per_part, parts_per_geom)


def _flatten_lists(gtype: str, raws: list[bytes]) -> _Flat | None:
    """Flatten decoded coordinate lists, leaving out (for the one-by-one path) any that are odd."""
    try:
        coordinates = _DECODERS[gtype].decode(b"[" + b",".join(raws) + b"]")
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None  # one of them is odd: all go one by one, which names the odd one
    keep: list[int] = []
    flat: list[Any] = []
    ring_sizes: list[int] = []
    rings_per_part: list[int] = []
    parts_per_geom: list[int] = []
    for i, coords in enumerate(coordinates):
        if gtype == "Point":
            keep.append(i)
            flat.append(coords)
            continue
        parts = coords if gtype == "MultiPolygon" else [coords]
        sizes: list[int] = []
        good = bool(parts)
        for rings in parts:
            if not rings:
                good = False
                break
            for ring in rings:
                if len(ring) < 4 or ring[0][:2] != ring[-1][:2]:
                    good = False
                    break
                sizes.append(len(ring))
            if not good:
                break
        if not good:
            continue
        keep.append(i)
        ring_sizes.extend(sizes)
        rings_per_part.extend(len(rings) for rings in parts)
        parts_per_geom.append(len(parts))
        for rings in parts:
            for ring in rings:
                flat.extend(ring)
    if not keep:
        return None
    try:
        given = np.array(flat, dtype=np.float64)
    except ValueError:  # positions of mixed dimensions: one by one
        return None
    if given.ndim != 2 or given.shape[1] not in (2, 3) or not np.isfinite(given).all():
        return None
    ones = np.ones(len(keep), np.int64)
    if gtype == "Point":
        return _Flat(np.array(keep), given, ones, ones, ones)
    return _Flat(np.array(keep), given, np.array(ring_sizes), np.array(rings_per_part), np.array(parts_per_geom))


def build_many(
    gtype: str,
    raws: list[bytes],
    *,
    convert: Callable[[Any], Any],
    allowed: Iterable[str],
    stored: Iterable[str],
) -> Built:
    """Build and check geometries of one GeoJSON type from their raw JSON `coordinates`.

    CONVERT maps an n×2|3 array of coordinates as given to CGCS2000 lon/lat (n×2). A
    geometry is returned only when it passes every rule :func:`prepare_for_storage`
    applies, ready to store (oriented, promoted to multi); anything else is None, for the
    one-by-one path.
    """
    n = len(raws)
    geoms = np.full(n, None, dtype=object)
    had_z = np.zeros(n, bool)
    allowed, stored = tuple(allowed), tuple(stored)
    if gtype not in allowed or gtype not in _DECODERS:
        return Built(geoms, had_z, None)
    multi = gtype == "MultiPolygon" or ("Multi" + gtype in stored and gtype not in stored)
    if gtype == "MultiPolygon" and not multi:
        return Built(geoms, had_z, None)
    flat = _flatten_text(gtype, raws) or _flatten_lists(gtype, raws)
    if flat is None:
        return Built(geoms, had_z, None)
    lonlat = np.ascontiguousarray(convert(flat.given), dtype=np.float64)
    if gtype == "Point":
        built = shapely.points(lonlat)
        vertices = np.ones(flat.keep.size, np.int64)
    else:
        ring_offsets = np.append(0, np.cumsum(flat.ring_sizes))
        part_offsets = np.append(0, np.cumsum(flat.rings_per_part))
        geom_offsets = np.append(0, np.cumsum(flat.parts_per_geom))
        offsets: tuple[Any, ...] = (ring_offsets, part_offsets, geom_offsets) if multi else (ring_offsets, part_offsets)
        kind = shapely.GeometryType.MULTIPOLYGON if multi else shapely.GeometryType.POLYGON
        built = shapely.from_ragged_array(kind, lonlat, offsets)
        vertices = np.add.reduceat(flat.ring_sizes, part_offsets[geom_offsets[:-1]])
    bounds = shapely.bounds(built)
    fine = (
        (vertices <= MAX_VERTICES)
        & (bounds[:, 0] >= -180)
        & (bounds[:, 2] <= 180)
        & (bounds[:, 1] >= -90)
        & (bounds[:, 3] <= 90)
        & shapely.is_valid(built)
    )
    if gtype != "Point":
        built = shapely.orient_polygons(built)
    geoms[flat.keep[fine]] = built[fine]
    had_z[flat.keep] = flat.given.shape[1] == 3
    low, high = flat.given[:, :2].min(axis=0), flat.given[:, :2].max(axis=0)
    return Built(geoms, had_z, (float(low[0]), float(low[1]), float(high[0]), float(high[1])))
