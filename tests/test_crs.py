"""The CRS engine: declarations, Gauss-Kruger conversion and detection, GCJ-02 / BD-09."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import shapely
from pyproj import Geod
from shapely.geometry import box, shape

from spatial.crs import (
    DeclaredCrs,
    bd09_to_wgs84,
    crs_problems,
    gcj02_to_bd09,
    parse_crs,
    to_storage,
    wgs84_to_gcj02,
)
from spatial.errors import Problem
from spatial.geometry import geodesic_area

VARIANTS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "derived-crs-variants"
GEOD = Geod(ellps="GRS80")
needs_variants = pytest.mark.skipif(not VARIANTS.exists(), reason="../shared/data is not beside this checkout")


def load(name: str) -> tuple[shapely.Geometry, dict]:
    data = json.loads((VARIANTS / f"{name}.geojson").read_text(encoding="utf-8"))
    feature = data["features"][0]
    return shape(feature["geometry"]), feature["properties"]


def declared(text: str, axis: str = "xy") -> DeclaredCrs:
    result = parse_crs(text, axis)  # type: ignore[arg-type]
    assert isinstance(result, DeclaredCrs), result
    return result


@pytest.mark.parametrize(
    ("text", "kind", "epsg"),
    [
        (None, "epsg", 4490),
        ("WGS84", "epsg", 4326),
        ("cgcs2000", "epsg", 4490),
        ("GCJ-02", "gcj02", None),
        ("bd09", "bd09", None),
        ("EPSG:4549", "epsg", 4549),
        ("4528", "epsg", 4528),
        ("urn:ogc:def:crs:EPSG::2385", "epsg", 2385),
        ("urn:ogc:def:crs:OGC:1.3:CRS84", "epsg", 4326),
    ],
)
def test_declarations_are_read(text: str | None, kind: str, epsg: int | None) -> None:
    crs = declared(text) if text else parse_crs(None)
    assert isinstance(crs, DeclaredCrs) and (crs.kind, crs.epsg) == (kind, epsg)


@pytest.mark.parametrize("text", ["EPSG:99999", "Mars", "EPSG:"])
def test_unknown_declarations_are_problems(text: str) -> None:
    problem = parse_crs(text)
    assert isinstance(problem, Problem) and problem.code == "crs_unknown" and problem.where.field == "crs"


def test_gcj02_round_trip_of_a_parcel_is_far_below_half_a_metre() -> None:
    parcel = box(120.396, 36.307, 120.3971, 36.3079)
    shifted = shapely.transform(parcel, lambda c: np.column_stack(wgs84_to_gcj02(c[:, 0], c[:, 1])))
    moved = GEOD.inv(*parcel.exterior.coords[0], *shifted.exterior.coords[0])[2]
    assert 400 < moved < 520  # the offset is real: ~465 m at Chengyang
    back = to_storage(shifted, declared("GCJ-02"))
    worst = max(GEOD.inv(*a, *b)[2] for a, b in zip(parcel.exterior.coords, back.exterior.coords, strict=True))
    assert worst < 0.01  # metres


def test_bd09_round_trip() -> None:
    lon, lat = np.array([120.38, 120.41]), np.array([36.29, 36.31])
    bd_lon, bd_lat = gcj02_to_bd09(*wgs84_to_gcj02(lon, lat))
    assert GEOD.inv(120.38, 36.29, bd_lon[0], bd_lat[0])[2] > 1000  # ~1.25 km off
    back_lon, back_lat = bd09_to_wgs84(bd_lon, bd_lat)
    assert np.max(np.abs(back_lon - lon)) < 1e-8 and np.max(np.abs(back_lat - lat)) < 1e-8


def test_the_domain_notes_worked_point() -> None:
    point = shapely.Point(535566.0, 4019680.7)
    assert to_storage(point, declared("EPSG:4549")).equals_exact(shapely.Point(120.396, 36.307), 1e-6)
    prefixed = shapely.Point(40535566.0, 4019680.7)
    assert to_storage(prefixed, declared("EPSG:4528")).equals_exact(shapely.Point(120.396, 36.307), 1e-6)
    surveyor = shapely.Point(4019680.7, 535566.0)  # X = northing first
    assert to_storage(surveyor, declared("EPSG:4549", "yx")).equals_exact(shapely.Point(120.396, 36.307), 1e-6)


@needs_variants
@pytest.mark.parametrize(
    ("name", "epsg"),
    [
        ("tancheng_epsg4527", 4527),
        ("tancheng_epsg4548", 4548),
        ("qionglai_epsg4522", 4522),
        ("qionglai_epsg4543", 4543),
    ],
)
def test_projected_variants_convert_to_the_lonlat_original(name: str, epsg: int) -> None:
    geom, props = load(name)
    crs = declared(f"EPSG:{epsg}")
    assert crs_problems(geom.bounds, crs) == []
    lonlat = to_storage(geom, crs)
    assert abs(geodesic_area(lonlat) - props["area_m2"]) / props["area_m2"] < 1e-3
    original, _ = load(name.split("_")[0] + "_labelled_epsg4490")  # the values it was projected from
    assert lonlat.hausdorff_distance(original) < 1e-7  # degrees: about 1 cm


@needs_variants
@pytest.mark.parametrize(
    ("name", "wrong", "code", "hint"),
    [
        ("tancheng_epsg4527", "EPSG:4548", "zone_prefix_unexpected", "EPSG:4527"),
        ("tancheng_epsg4548", "EPSG:4527", "zone_prefix_missing", "EPSG:4548"),
        ("qionglai_epsg4522", "EPSG:4543", "zone_prefix_unexpected", "EPSG:4522"),
        ("qionglai_epsg4543", "EPSG:4522", "zone_prefix_missing", "EPSG:4543"),
        ("tancheng_epsg4548", "CGCS2000", "crs_projected_as_degrees", "EPSG:4534"),
        ("tancheng_epsg4527", "WGS84", "crs_projected_as_degrees", "EPSG:4527"),
        ("tancheng_epsg4490_axis_swapped_latlon", "EPSG:4490", "axis_swapped", "Y,X"),
    ],
)
def test_wrong_declarations_are_refused_with_a_hint(name: str, wrong: str, code: str, hint: str) -> None:
    geom, _ = load(name)
    problems = crs_problems(geom.bounds, declared(wrong))
    assert [p.code for p in problems] == [code]
    assert hint in problems[0].message


@needs_variants
def test_swapped_file_converts_when_declared_lat_first() -> None:
    swapped, _ = load("tancheng_epsg4490_axis_swapped_latlon")
    crs = declared("EPSG:4490", "yx")
    assert crs_problems(swapped.bounds, crs) == []
    original, _ = load("tancheng_labelled_epsg4490")
    assert to_storage(swapped, crs).hausdorff_distance(original) < 1e-9


def test_gauss_kruger_northing_first_without_declaring_it_is_refused() -> None:
    surveyor = shapely.Point(4019680.7, 535566.0)
    assert [p.code for p in crs_problems(surveyor.bounds, declared("EPSG:4549"))] == ["axis_swapped"]
