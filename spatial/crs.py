"""Coordinate systems at the door: declared CRS to CGCS2000 lon/lat, with the usual mistakes caught.

Surveyors bring WGS84 (= CGCS2000 within GPS error), GCJ-02 from 高德/腾讯-based apps,
BD-09 from 百度, and Gauss-Kruger metres from QGIS or survey offices, with or without the
zone prefix and often with X = northing. :func:`parse_crs` reads a declaration,
:func:`crs_problems` spots a declaration that cannot be right for the coordinates (with a
hint naming the likely CRS) and :func:`to_storage` converts to EPSG:4490 lon/lat.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import numpy.typing as npt

import shapely
from pyproj import CRS, Transformer
from shapely.geometry.base import BaseGeometry

from spatial.errors import Problem, Where
from spatial.geometry import STORAGE_SRID

Axis = Literal["xy", "yx"]
Kind = Literal["epsg", "gcj02", "bd09"]
Array = npt.NDArray[np.float64]

CHINA_EXTENT = (73.0, 3.0, 136.0, 54.0)
"""Where lon/lat data for a Chinese deployment can lie (minlon, minlat, maxlon, maxlat)."""

_ALIASES: dict[str, tuple[Kind, int | None]] = {
    "wgs84": ("epsg", 4326),
    "wgs-84": ("epsg", 4326),
    "crs84": ("epsg", 4326),
    "cgcs2000": ("epsg", 4490),
    "gcj02": ("gcj02", None),
    "gcj-02": ("gcj02", None),
    "火星坐标": ("gcj02", None),
    "bd09": ("bd09", None),
    "bd-09": ("bd09", None),
    "百度坐标": ("bd09", None),
}
_EPSG_IN_TEXT = re.compile(r"(?:EPSG)?[^0-9]*?(\d{4,5})$", re.IGNORECASE)


@dataclass(frozen=True)
class DeclaredCrs:
    """What the uploader says the coordinates are, and which axis comes first."""

    kind: Kind
    epsg: int | None = None
    axis: Axis = "xy"

    @property
    def label(self) -> str:
        """Return a short name for reports."""
        name = {"gcj02": "GCJ-02", "bd09": "BD-09"}.get(self.kind) or f"EPSG:{self.epsg}"
        return name + (" (Y,X)" if self.axis == "yx" else "")

    @property
    def geographic(self) -> bool:
        """Tell whether the coordinates are degrees (lon/lat)."""
        return self.kind != "epsg" or _crs(self.epsg or STORAGE_SRID).is_geographic


def _crs_error(text: str) -> Problem:
    return Problem(
        "crs_unknown",
        f"无法识别的坐标系 {text[:60]!r}（可用：WGS84、CGCS2000、GCJ-02、BD-09 或 EPSG:编号）",
        f"unknown CRS {text[:60]!r} (use WGS84, CGCS2000, GCJ-02, BD-09 or EPSG:<code>)",
        Where(field="crs"),
    )


@lru_cache(maxsize=256)
def _crs(epsg: int) -> CRS:
    return CRS.from_epsg(epsg)


def parse_crs(text: str | None, axis: Axis = "xy") -> DeclaredCrs | Problem:
    """Return the declared CRS named by TEXT (None means CGCS2000), or a problem.

    Examples
    --------
    >>> parse_crs("GCJ-02").label, parse_crs("EPSG:4549", "yx").label
    ('GCJ-02', 'EPSG:4549 (Y,X)')
    >>> parse_crs("urn:ogc:def:crs:EPSG::4490").epsg, parse_crs("CRS84").epsg
    (4490, 4326)
    """
    if text is None or not text.strip():
        return DeclaredCrs("epsg", STORAGE_SRID, axis)
    key = text.strip().lower().replace(" ", "")
    if key in _ALIASES:
        kind, epsg = _ALIASES[key]
        return DeclaredCrs(kind, epsg, axis)
    if key.endswith("crs84"):
        return DeclaredCrs("epsg", 4326, axis)
    match = _EPSG_IN_TEXT.search(text.strip())
    if not match:
        return _crs_error(text)
    try:
        crs = _crs(int(match.group(1)))
    except Exception:  # noqa: BLE001 - pyproj raises its own CRSError subclasses; all mean "unknown"
        return _crs_error(text)
    if not (crs.is_geographic or crs.is_projected):
        return _crs_error(text)
    return DeclaredCrs("epsg", int(match.group(1)), axis)


# --------------------------------------------------------------------------- GCJ-02 / BD-09

_A = 6378245.0  # Krasovsky 1940 semi-major axis, as the GCJ-02 offset uses
_EE = 0.00669342162296594323  # its first eccentricity squared
_BD = math.pi * 3000.0 / 180.0


def _offset(lon: Array, lat: Array) -> tuple[Array, Array]:
    """Return the GCJ-02 shift (dlon, dlat) in degrees at WGS84 (LON, LAT)."""
    x, y = lon - 105.0, lat - 35.0
    wave = (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
    dlat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * np.sqrt(np.abs(x)) + wave
    dlat += (20.0 * np.sin(y * np.pi) + 40.0 * np.sin(y / 3.0 * np.pi)) * 2.0 / 3.0
    dlat += (160.0 * np.sin(y / 12.0 * np.pi) + 320.0 * np.sin(y * np.pi / 30.0)) * 2.0 / 3.0
    dlon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * np.sqrt(np.abs(x)) + wave
    dlon += (20.0 * np.sin(x * np.pi) + 40.0 * np.sin(x / 3.0 * np.pi)) * 2.0 / 3.0
    dlon += (150.0 * np.sin(x / 12.0 * np.pi) + 300.0 * np.sin(x / 30.0 * np.pi)) * 2.0 / 3.0
    rad = lat / 180.0 * np.pi
    magic = 1.0 - _EE * np.sin(rad) ** 2
    sqrt_magic = np.sqrt(magic)
    dlat = (dlat * 180.0) / ((_A * (1.0 - _EE)) / (magic * sqrt_magic) * np.pi)
    dlon = (dlon * 180.0) / (_A / sqrt_magic * np.cos(rad) * np.pi)
    return dlon, dlat


def wgs84_to_gcj02(lon: Array, lat: Array) -> tuple[Array, Array]:
    """Return GCJ-02 coordinates of WGS84 (LON, LAT) (the public closed form).

    Examples
    --------
    >>> lon, lat = wgs84_to_gcj02(np.array([120.396]), np.array([36.307]))
    >>> round(float(lon[0]) - 120.396, 5), round(float(lat[0]) - 36.307, 5)
    (0.00516, 0.00035)
    """
    dlon, dlat = _offset(lon, lat)
    return lon + dlon, lat + dlat


def gcj02_to_bd09(lon: Array, lat: Array) -> tuple[Array, Array]:
    """Return BD-09 coordinates of GCJ-02 (LON, LAT)."""
    z = np.sqrt(lon * lon + lat * lat) + 0.00002 * np.sin(lat * _BD)
    theta = np.arctan2(lat, lon) + 0.000003 * np.cos(lon * _BD)
    return z * np.cos(theta) + 0.0065, z * np.sin(theta) + 0.006


def _invert(forward: object, lon: Array, lat: Array, tolerance: float = 1e-10) -> tuple[Array, Array]:
    """Solve forward(x) = (LON, LAT) by fixed-point iteration (the offsets are small and smooth).

    Each point stops on its own once it has converged, so a point's result never depends on
    which other points are converted with it (an upload converted in chunks, or one by one,
    stores the same coordinates).
    """
    assert callable(forward)
    x, y = lon.astype(np.float64, copy=True), lat.astype(np.float64, copy=True)
    active = np.ones(x.shape, bool)
    for _ in range(30):
        if not active.any():
            break
        fx, fy = forward(x[active], y[active])
        ex, ey = fx - lon[active], fy - lat[active]
        x[active], y[active] = x[active] - ex, y[active] - ey
        done = (np.abs(ex) < tolerance) & (np.abs(ey) < tolerance)
        active[np.flatnonzero(active)[done]] = False
    return x, y


def gcj02_to_wgs84(lon: Array, lat: Array) -> tuple[Array, Array]:
    """Return WGS84 coordinates of GCJ-02 (LON, LAT), iterated to ~1e-10° (about 0.01 mm)."""
    return _invert(wgs84_to_gcj02, lon, lat)


def bd09_to_wgs84(lon: Array, lat: Array) -> tuple[Array, Array]:
    """Return WGS84 coordinates of BD-09 (LON, LAT)."""
    gcj_lon, gcj_lat = _invert(gcj02_to_bd09, lon, lat)
    return gcj02_to_wgs84(gcj_lon, gcj_lat)


# --------------------------------------------------------------------------- detection


@dataclass(frozen=True)
class GaussKruger:
    """A CGCS2000 Gauss-Kruger CRS: its central meridian and whether eastings carry the zone."""

    epsg: int
    central_meridian: float
    zone_prefix: int | None
    width: int


@lru_cache(maxsize=1)
def gauss_kruger_family() -> dict[int, GaussKruger]:
    """Return the CGCS2000 Gauss-Kruger CRSs (EPSG:4491–4554), read from PROJ's database."""
    family = {}
    for epsg in range(4491, 4555):
        crs = _crs(epsg)
        params = {p.name: p.value for p in crs.coordinate_operation.params} if crs.coordinate_operation else {}
        false_easting = float(params.get("False easting", 500_000.0))
        prefix = int(false_easting // 1_000_000) or None
        width = 3 if "3-degree" in crs.name else 6
        family[epsg] = GaussKruger(epsg, float(params.get("Longitude of natural origin", 0.0)), prefix, width)
    return family


def _twin(epsg: int, *, prefixed: bool) -> int | None:
    """Return the family member with the same central meridian and zone width, (not) prefixed."""
    me = gauss_kruger_family().get(epsg)
    if me is None:
        return None
    for other in gauss_kruger_family().values():
        same = other.central_meridian == me.central_meridian and other.width == me.width
        if same and (other.zone_prefix is not None) == prefixed:
            return other.epsg
    return None


def _zone_member(prefix: int) -> int | None:
    """Return the EPSG code of the prefixed zone PREFIX (3° zones 25–45, 6° zones 13–23)."""
    for member in gauss_kruger_family().values():
        if member.zone_prefix == prefix:
            return member.epsg
    return None


def _problem(code: str, zh: str, en: str) -> Problem:
    return Problem(code, zh, en, Where(field="crs"))


def crs_problems(bounds: tuple[float, float, float, float], declared: DeclaredCrs) -> list[Problem]:
    """Return why DECLARED cannot describe coordinates with these BOUNDS (as given), if it can't.

    BOUNDS are (minx, miny, maxx, maxy) of the raw coordinates, first axis first.
    """
    minx, miny, maxx, maxy = bounds
    if declared.axis == "yx":
        minx, miny, maxx, maxy = miny, minx, maxy, maxx
    if declared.geographic:
        lon_ok = CHINA_EXTENT[0] <= minx and maxx <= CHINA_EXTENT[2]
        lat_ok = CHINA_EXTENT[1] <= miny and maxy <= CHINA_EXTENT[3]
        swapped_ok = CHINA_EXTENT[0] <= miny and maxy <= CHINA_EXTENT[2]
        swapped_ok = swapped_ok and CHINA_EXTENT[1] <= minx and maxx <= CHINA_EXTENT[3]
        if not (lon_ok and lat_ok) and swapped_ok:
            return [
                _problem(
                    "axis_swapped",
                    "坐标像是“纬度, 经度”顺序：GeoJSON 要求经度在前，请把轴顺序设为 Y,X（纬度在前）",
                    "coordinates look like lat,lon: GeoJSON wants lon first; declare the axis order as Y,X",
                )
            ]
        if max(abs(minx), abs(maxx)) > 180 or max(abs(miny), abs(maxy)) > 90:
            return [_projected_as_degrees(minx, miny, maxx, maxy)]
        return []
    member = gauss_kruger_family().get(declared.epsg or 0)
    if member is None:
        return []

    def northing(lo: float, hi: float) -> bool:
        return 1_000_000 <= lo and hi < 10_000_000  # 1,000–10,000 km from the equator

    if northing(minx, maxx) and not northing(miny, maxy):
        return [
            _problem(
                "axis_swapped",
                "第一个坐标像是北坐标（X），第二个像是东坐标（Y）：请把轴顺序设为 Y,X（北坐标在前）",
                "the first coordinate looks like a northing and the second like an easting: declare Y,X order",
            )
        ]
    if member.zone_prefix is None and minx >= 10_000_000:
        zone = int(minx // 1_000_000)
        hint = _zone_member(zone)
        return [
            _problem(
                "zone_prefix_unexpected",
                f"东坐标带有带号 {zone}（8位），但 EPSG:{member.epsg} 不带带号"
                + (f"；应声明为 EPSG:{hint}" if hint else ""),
                f"eastings carry zone prefix {zone} but EPSG:{member.epsg} has none"
                + (f"; declare EPSG:{hint}" if hint else ""),
            )
        ]
    if member.zone_prefix is not None and maxx < 1_000_000:
        hint = _twin(member.epsg, prefixed=False)
        return [
            _problem(
                "zone_prefix_missing",
                f"东坐标没有带号，但 EPSG:{member.epsg} 要求带号 {member.zone_prefix}"
                + (f"；应声明为 EPSG:{hint}" if hint else ""),
                f"eastings lack the zone prefix EPSG:{member.epsg} expects"
                + (f"; declare EPSG:{hint}" if hint else ""),
            )
        ]
    return []


def _projected_as_degrees(minx: float, miny: float, maxx: float, maxy: float) -> Problem:
    """Return the problem for metres declared as degrees, naming the likely Gauss-Kruger CRS."""
    hint = ""
    easting, northing = (minx + maxx) / 2, (miny + maxy) / 2
    if 1_000_000 <= northing < 10_000_000:
        if easting >= 10_000_000:
            epsg = _zone_member(int(easting // 1_000_000))
            hint = f"，像是带带号的高斯-克吕格投影坐标（如 EPSG:{epsg}）" if epsg else ""
        elif 100_000 < easting < 900_000:
            hint = "，像是不带带号的 CGCS2000 高斯-克吕格投影坐标（EPSG:4534–4554，按中央经线选择）"
    return _problem(
        "crs_projected_as_degrees",
        f"声明为经纬度，但坐标是以米为单位的投影坐标{hint}",
        "declared as degrees but the coordinates are projected metres" + (" (Gauss-Kruger?)" if hint else ""),
    )


# --------------------------------------------------------------------------- conversion


@lru_cache(maxsize=64)
def _transformer(epsg: int) -> Transformer:
    return Transformer.from_crs(_crs(epsg), _crs(STORAGE_SRID), always_xy=True)


def _convert(coords: Array, declared: DeclaredCrs) -> Array:
    """Return COORDS (n×2, axis order as declared) as CGCS2000 lon/lat."""
    if declared.axis == "yx":
        coords = coords[:, ::-1]
    x, y = coords[:, 0].astype(np.float64), coords[:, 1].astype(np.float64)
    if declared.kind == "gcj02":
        x, y = gcj02_to_wgs84(x, y)
    elif declared.kind == "bd09":
        x, y = bd09_to_wgs84(x, y)
    elif declared.epsg not in (4326, STORAGE_SRID):
        # WGS84 and CGCS2000 agree to well under a metre (PROJ applies no shift either).
        x, y = _transformer(declared.epsg or STORAGE_SRID).transform(x, y)
    return np.column_stack([np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)])


def convert_coordinates(coords: Array, declared: DeclaredCrs) -> Array:
    """Return COORDS (n×2 or n×3, as declared) as CGCS2000 lon/lat (n×2), for many geometries at once."""
    if is_storage_crs(declared):
        return np.ascontiguousarray(coords[:, :2], dtype=np.float64)
    return _convert(coords[:, :2], declared)


def is_storage_crs(declared: DeclaredCrs) -> bool:
    """Tell whether DECLARED coordinates are already CGCS2000 (or WGS84) lon/lat in x/y order."""
    return declared.kind == "epsg" and declared.epsg in (4326, STORAGE_SRID) and declared.axis == "xy"


def to_storage(geom: BaseGeometry, declared: DeclaredCrs) -> BaseGeometry:
    """Return GEOM converted from DECLARED to CGCS2000 lon/lat (2D).

    Examples
    --------
    >>> from shapely import Point
    >>> p = to_storage(Point(535566.0, 4019680.7), DeclaredCrs("epsg", 4549))
    >>> round(p.x, 5), round(p.y, 5)
    (120.396, 36.307)
    >>> p = to_storage(Point(4019680.7, 40535566.0), DeclaredCrs("epsg", 4528, "yx"))
    >>> round(p.x, 5), round(p.y, 5)
    (120.396, 36.307)
    """
    if is_storage_crs(declared):
        return shapely.force_2d(geom)
    return shapely.transform(shapely.force_2d(geom), lambda c: _convert(c, declared))
