"""The demo generator (layers.demo), without a database: shape, tiling, ledgers, defects."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from layers import demo as demo_module
from layers.base import REGISTRY
from layers.common import ASSET_CODE
from layers.demo import COMMUNITIES, DEMO_SEED, LOAD_ORDER, Demo, generate
from layers.features import check_feature
from layers.landuse import land_use_codes
from spatial.geometry import geodesic_area

ROOT = Path(__file__).resolve().parent.parent
SOURCE_CSV = ROOT.parent / "shared" / "data" / "vonng-adcode" / "adcode" / "370214.csv"
INTERIORS_MEET = "2********"
"""DE-9IM: the interiors share an area (a real overlap, not a shared edge)."""


@pytest.fixture(scope="module")
def demo() -> Demo:
    return generate()


def geoms(demo: Demo, layer: str) -> list[BaseGeometry]:
    return [shape(f["geometry"]) for f in demo.features[layer]]


def props(demo: Demo, layer: str) -> list[dict[str, Any]]:
    return [f["properties"] for f in demo.features[layer]]


def by_code(demo: Demo, layer: str) -> dict[str, BaseGeometry]:
    return {f["properties"]["code"]: shape(f["geometry"]) for f in demo.features[layer]}


def defect(demo: Demo, kind: str) -> dict[str, Any]:
    (found,) = [d for d in demo.defects if d["kind"] == kind]
    return found


def polygonal(geom: BaseGeometry) -> BaseGeometry:
    """Return the areal part of GEOM (an intersection of neighbours also holds their shared edges)."""
    return shapely.union_all([p for p in shapely.get_parts(geom) if p.geom_type in ("Polygon", "MultiPolygon")])


def overlapping_pairs(shapes: list[BaseGeometry]) -> list[tuple[int, int]]:
    left, right = shapely.STRtree(shapes).query(shapes, predicate="intersects")
    return [
        (int(i), int(j))
        for i, j in zip(left, right, strict=True)
        if i < j and shapely.relate_pattern(shapes[i], shapes[j], INTERIORS_MEET)
    ]


# ------------------------------------------------------------------ determinism and counts


def test_same_seed_same_output(demo: Demo) -> None:
    again = generate(DEMO_SEED)
    assert json.dumps(again.features, ensure_ascii=False) == json.dumps(demo.features, ensure_ascii=False)
    assert again.defects == demo.defects


def test_another_seed_draws_another_street(demo: Demo) -> None:
    other = generate(DEMO_SEED + 1)
    assert other.features["divisions"][0]["geometry"] != demo.features["divisions"][0]["geometry"]
    assert [d["kind"] for d in other.defects] == [d["kind"] for d in demo.defects]


def test_counts(demo: Demo) -> None:
    counts = demo.counts()
    assert list(counts) == list(LOAD_ORDER)
    assert counts["divisions"] == 6
    assert counts["grids"] == 40
    assert 1800 <= counts["parcels"] <= 2400
    assert counts["shops"] == 150
    assert 1300 <= counts["zones"] <= 1700


def test_every_feature_passes_the_layer_rules(demo: Demo) -> None:
    for layer_id, features in demo.features.items():
        layer = REGISTRY[layer_id]
        for i, feature in enumerate(features):
            check_feature(None, layer, feature, index=i, locate=False)  # type: ignore[arg-type]  # no DB needed


def test_defects_module_attribute_is_the_default_seed(demo: Demo) -> None:
    assert demo_module.DEFECTS == demo.defects


# ------------------------------------------------------------------ divisions


def test_street_and_communities_use_the_adcode_rows(demo: Demo) -> None:
    rows = props(demo, "divisions")
    assert rows[0] == {"code": "370214001", "name": "城阳街道", "level": "街道", "parent_code": "370214"}
    communities = rows[1:]
    assert [r["code"] for r in communities] == [c.code for c in COMMUNITIES]
    assert {r["level"] for r in communities} == {"社区"}
    assert {r["parent_code"] for r in communities} == {"370214001"}
    assert [r["name"] for r in communities] == ["华城路社区", "和阳路社区", "前桃林社区", "古庙头社区", "小北曲社区"]


def test_adcode_extract_has_a_header_and_only_the_rows_used() -> None:
    with (ROOT / "data" / "adcode_370214_demo.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["code"] for r in rows] == ["370214001000", *(c.code for c in COMMUNITIES)]
    if SOURCE_CSV.exists():
        source = {line.split(",", 1)[0]: line for line in SOURCE_CSV.read_text(encoding="utf-8").splitlines()}
        lines = (ROOT / "data" / "adcode_370214_demo.csv").read_text(encoding="utf-8").splitlines()[1:]
        assert all(source[line.split(",", 1)[0]] == line for line in lines)


def test_street_is_irregular_and_about_12_km2(demo: Demo) -> None:
    street = geoms(demo, "divisions")[0]
    assert street.geom_type == "Polygon"
    assert 10e6 <= geodesic_area(street) <= 14e6
    assert street.area / street.envelope.area < 0.9
    assert len(street.exterior.coords) > 20
    lon, lat = street.centroid.coords[0]
    assert abs(lon - 120.38) < 0.02 and abs(lat - 36.30) < 0.02


def test_communities_tile_the_street(demo: Demo) -> None:
    street, *communities = geoms(demo, "divisions")
    assert bool(shapely.coverage_is_valid(communities))
    assert shapely.union_all(communities).symmetric_difference(street).area == pytest.approx(0, abs=1e-12)
    assert geodesic_area(shapely.union_all(communities).symmetric_difference(street)) < 1.0


# ------------------------------------------------------------------ grids


def test_grid_codes_names_and_kinds(demo: Demo) -> None:
    rows = props(demo, "grids")
    for community in COMMUNITIES:
        mine = [r for r in rows if r["community_code"] == community.code]
        assert [r["code"] for r in mine] == [f"{community.code}{i:03d}" for i in range(1, len(mine) + 1)]
        for r in mine:
            assert re.fullmatch(r"\S+社区第\d+网格(（\S+）)?", r["name"]), r["name"]
            assert r["valid_from"] == "2024-01-01"
            assert 2 <= len(r["manager"]) <= 3
    kinds = Counter(r["kind"] for r in rows)
    assert kinds["专属网格"] in (1, 2)
    assert kinds["基础网格"] == len(rows) - kinds["专属网格"]


def test_grids_are_numbered_west_to_east_then_north_to_south(demo: Demo) -> None:
    rows = props(demo, "grids")
    shapes = geoms(demo, "grids")
    for community in COMMUNITIES:
        centres = [s.centroid for r, s in zip(rows, shapes, strict=True) if r["community_code"] == community.code]
        for a, b in zip(centres, centres[1:], strict=False):
            assert b.x > a.x - 1e-5 or b.y < a.y + 1e-5


def test_grids_tile_each_community_except_the_planted_defects(demo: Demo) -> None:
    grid_rows, grid_shapes = props(demo, "grids"), geoms(demo, "grids")
    communities = by_code(demo, "divisions")
    gap, overlap = defect(demo, "gap"), defect(demo, "overlap")
    gap_shape, overlap_shape = shape(gap["geometry"]), shape(overlap["geometry"])
    for community in COMMUNITIES:
        grids = {
            r["code"]: s for r, s in zip(grid_rows, grid_shapes, strict=True) if r["community_code"] == community.code
        }
        frame = communities[community.code]
        if community.code == overlap["community_code"]:
            assert not shapely.coverage_is_valid(list(grids.values()))
            grids[overlap["codes"][0]] = grids[overlap["codes"][0]].difference(overlap_shape)
        pieces = list(grids.values())
        if community.code == gap["community_code"]:
            assert geodesic_area(frame.difference(shapely.union_all(pieces))) == pytest.approx(gap["area_m2"], abs=0.5)
            pieces.append(gap_shape)
        assert bool(shapely.coverage_is_valid(pieces)), community.code
        assert geodesic_area(shapely.union_all(pieces).symmetric_difference(frame)) < 1.0, community.code


def test_grids_lie_in_their_community(demo: Demo) -> None:
    communities = by_code(demo, "divisions")
    for r, s in zip(props(demo, "grids"), geoms(demo, "grids"), strict=True):
        assert s.covered_by(communities[r["community_code"]]), r["code"]


def test_village_grid_households_count_their_zones(demo: Demo) -> None:
    zones = Counter(r["grid_code"] for r in props(demo, "zones"))
    for r in props(demo, "grids"):
        if r["code"] in zones:
            assert r["households"] == zones[r["code"]]
        else:
            assert r["households"] >= 0


# ------------------------------------------------------------------ parcels


def test_parcel_codes_and_land_use(demo: Demo) -> None:
    rows = props(demo, "parcels")
    codes = [r["code"] for r in rows]
    assert len(set(codes)) == len(codes)
    assert all(re.fullmatch(ASSET_CODE, c) and len(c) == 19 for c in codes)
    assert all(r["code"][:12] == r["community_code"] == r["grid_code"][:12] for r in rows)
    known = land_use_codes()
    uses = Counter(r["land_use_code"] for r in rows)
    assert set(uses) <= set(known)
    for expected in ("0702", "0701", "0103", "0201", "0501", "0601", "0809", "1003", "1004", "1006", "1104", "1201"):
        assert uses[expected] > 0, expected
    assert uses["0702"] > len(rows) / 2


def test_parcel_ledger_mix(demo: Demo) -> None:
    rows = props(demo, "parcels")
    ownership = Counter(r["ownership"] for r in rows)
    assert ownership["集体"] > len(rows) / 2
    assert ownership["国有"] > 0
    assert 1 <= ownership["争议"] <= 40
    idle = [r for r in rows if r["use_status"] == "闲置"]
    assert 0.08 <= len(idle) / len(rows) <= 0.10
    for r in idle:
        assert r["idle_since"] and r["idle_reason"] and r["stage"] in ("未盘活", "招商中", "已签约")
    assert any("mode" in r for r in idle)
    assert not any("idle_since" in r for r in rows if r["use_status"] != "闲置")


def test_parcels_lie_in_their_grid_and_do_not_overlap(demo: Demo) -> None:
    grids = by_code(demo, "grids")
    shapes = geoms(demo, "parcels")
    for r, s in zip(props(demo, "parcels"), shapes, strict=True):
        assert s.covered_by(grids[r["grid_code"]]), r["code"]
    assert overlapping_pairs(shapes) == []


def test_homesteads_are_house_sized(demo: Demo) -> None:
    areas = [
        geodesic_area(s)
        for r, s in zip(props(demo, "parcels"), geoms(demo, "parcels"), strict=True)
        if r["land_use_code"] == "0702"
    ]
    assert 1300 <= len(areas) <= 1700
    assert min(areas) > 12 * 12 - 1 and max(areas) < 15 * 16 + 1  # 12-15 m wide, 12-16 m deep


# ------------------------------------------------------------------ shops


def test_shops(demo: Demo) -> None:
    rows = props(demo, "shops")
    shapes = geoms(demo, "shops")
    status = Counter(r["status"] for r in rows)
    assert 0.25 <= status["闲置"] / len(rows) <= 0.42
    assert set(status) == {"闲置", "在营", "装修"}
    assert 8 <= sum(s.geom_type == "Polygon" for s in shapes) <= 12
    assert Counter(r["ownership"] for r in rows)["不明"] > 0
    assert all(re.fullmatch(ASSET_CODE, r["code"]) and r["code"][12:14] == "21" for r in rows)
    assert len({r["code"] for r in rows}) == len(rows)
    assert all(re.fullmatch(r"城阳区\S+路\d+号", r["address"]) for r in rows)
    for r in rows:
        if r["status"] == "闲置":
            assert r["asking_rent"] > 0 and r["letting_status"] in ("未招租", "招租中", "已签约") and r["idle_since"]
        assert r["usable_area"] <= r["floor_area"]


def test_shops_lie_in_commercial_or_urban_parcels_of_their_grid(demo: Demo) -> None:
    grids = by_code(demo, "grids")
    parcel_rows, parcel_shapes = props(demo, "parcels"), geoms(demo, "parcels")
    tree = shapely.STRtree(parcel_shapes)
    for r, s in zip(props(demo, "shops"), geoms(demo, "shops"), strict=True):
        assert s.covered_by(grids[r["grid_code"]])
        (host,) = [int(i) for i in tree.query(s, predicate="covered_by")]
        assert parcel_rows[host]["land_use_code"][:2] in ("05", "07")
        assert parcel_rows[host]["grid_code"] == r["grid_code"]
    assert overlapping_pairs([s for s in geoms(demo, "shops") if s.geom_type == "Polygon"]) == []


# ------------------------------------------------------------------ zones


def test_one_zone_per_homestead(demo: Demo) -> None:
    homesteads = {r["code"] for r in props(demo, "parcels") if r["land_use_code"] == "0702"}
    linked = [r["homestead_parcel_code"] for r in props(demo, "zones")]
    assert sorted(linked) == sorted(homesteads)


def test_zone_ledger(demo: Demo) -> None:
    rows = props(demo, "zones")
    assert len({r["code"] for r in rows}) == len(rows)
    for r in rows:
        assert r["code"][:-3] == r["grid_code"] and r["code"][-3:].isdigit()
        assert r["community_code"] == r["grid_code"][:12]
        assert re.fullmatch(r"[\u4e00-\u9fff]{2,3}", r["household_head"])
        assert re.fullmatch(r"\S+社区\d+排\d+号", r["house_number"])
        assert r["scope"] in ("房前", "屋后", "房前屋后")
    assert len({r["house_number"] for r in rows}) == len(rows)
    assert set(Counter(r["scope"] for r in rows)) == {"房前", "屋后", "房前屋后"}


def test_zones_touch_their_homestead_and_do_not_overlap(demo: Demo) -> None:
    parcels = by_code(demo, "parcels")
    shapes = geoms(demo, "zones")
    for r, s in zip(props(demo, "zones"), shapes, strict=True):
        assert s.touches(parcels[r["homestead_parcel_code"]]), r["code"]
    assert overlapping_pairs(shapes) == []
    homes = [
        s for r, s in zip(props(demo, "parcels"), geoms(demo, "parcels"), strict=True) if r["land_use_code"] == "0702"
    ]
    tree = shapely.STRtree(homes)
    for s in shapes:
        assert not any(shapely.relate_pattern(s, homes[i], INTERIORS_MEET) for i in tree.query(s))


def test_zones_lie_in_their_grid_except_the_planted_one(demo: Demo) -> None:
    grids = by_code(demo, "grids")
    planted = defect(demo, "zone_outside_grid")
    outside = [
        r["code"]
        for r, s in zip(props(demo, "zones"), geoms(demo, "zones"), strict=True)
        if not s.covered_by(grids[r["grid_code"]])
    ]
    assert outside == [planted["codes"][0]]
    for r, s in zip(props(demo, "zones"), geoms(demo, "zones"), strict=True):
        assert grids[r["grid_code"]].contains(s.point_on_surface()), r["code"]


# ------------------------------------------------------------------ the planted defects


def test_exactly_three_defects(demo: Demo) -> None:
    assert [d["kind"] for d in demo.defects] == ["gap", "overlap", "zone_outside_grid"]
    for d in demo.defects:
        assert d["community_code"] in {c.code for c in COMMUNITIES}
        assert all(code.startswith(d["community_code"]) for code in d["codes"])
        assert shape(d["geometry"]).distance(shapely.Point(d["centroid"])) < 1e-4


def test_gap_and_overlap_are_measured_from_the_grids(demo: Demo) -> None:
    grids = by_code(demo, "grids")
    gap, overlap = defect(demo, "gap"), defect(demo, "overlap")
    assert 300 <= gap["area_m2"] <= 2000 and 300 <= overlap["area_m2"] <= 2000
    a, b = (grids[c] for c in overlap["codes"])
    # geodesic_area() counts polygons only: an intersection comes back as a collection here
    assert geodesic_area(polygonal(a.intersection(b))) == pytest.approx(overlap["area_m2"], abs=0.5)
    gap_shape = shape(gap["geometry"])
    assert all(not shapely.relate_pattern(gap_shape, g, INTERIORS_MEET) for g in grids.values())
    assert all(gap_shape.touches(grids[c]) for c in gap["codes"])


def test_zone_outside_grid_is_measured(demo: Demo) -> None:
    planted = defect(demo, "zone_outside_grid")
    zone_code, own, into = planted["codes"]
    zone, grids = by_code(demo, "zones")[zone_code], by_code(demo, "grids")
    assert geodesic_area(zone.difference(grids[own])) == pytest.approx(planted["area_m2"], abs=0.5)
    assert geodesic_area(polygonal(zone.intersection(grids[into]))) == pytest.approx(planted["area_m2"], abs=0.5)
    assert 20 <= planted["area_m2"] < geodesic_area(zone) / 2


def test_nothing_lies_in_the_gap_or_the_overlap(demo: Demo) -> None:
    holes = [shape(defect(demo, kind)["geometry"]) for kind in ("gap", "overlap")]
    for layer in ("parcels", "shops", "zones"):
        for s in geoms(demo, layer):
            assert not any(s.intersects(h) and not s.touches(h) for h in holes), layer


def test_readme_documents_the_defects_as_generated(demo: Demo) -> None:
    text = (ROOT / "data" / "README.md").read_text(encoding="utf-8")
    section = text.split("## 演示数据 Demo data: deliberate defects", 1)[1]
    for d in demo.defects:
        assert f"{d['area_m2']:.2f}" in section, d["kind"]
        for code in d["codes"]:
            assert code in section


@pytest.mark.parametrize("width", [2, 4])
def test_grid_sequence_width_follows_the_setting(monkeypatch: pytest.MonkeyPatch, width: int) -> None:
    from layers.settings import layer_settings

    monkeypatch.setenv("GUATU_GRID_SEQ_WIDTH", str(width))
    layer_settings.cache_clear()
    try:
        other = generate()
        grids = other.features["grids"]
        assert {len(g["properties"]["code"]) for g in grids} == {12 + width}
        for index, feature in enumerate(grids + other.features["zones"][:50]):
            layer = REGISTRY["grids" if index < len(grids) else "zones"]
            check_feature(None, layer, feature, index=index, locate=False)  # type: ignore[arg-type]
    finally:
        monkeypatch.delenv("GUATU_GRID_SEQ_WIDTH")
        layer_settings.cache_clear()
