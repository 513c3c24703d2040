"""Boundary checks: exact answers on generated fixtures, the demo's planted defects, real coverages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

import shapely
from pyproj import Transformer
from shapely.geometry import box, mapping
from shapely.geometry.base import BaseGeometry

from spatial.geometry import geodesic_area
from spatial.topology import Checker, LocalMetric, Tolerance
from tests.accounts import ANY_VERSION
from tests.samples import COMMUNITY, STREET, X0, Y0

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is not beside this checkout")

# A local metric frame around (X0, Y0): fixtures are drawn in metres and stored in lon/lat.
_TO_DEG = Transformer.from_crs(f"+proj=tmerc +lon_0={X0} +lat_0={Y0} +ellps=GRS80 +units=m", 4490, always_xy=True)


def deg(geom: BaseGeometry) -> BaseGeometry:
    """Return GEOM (metres around X0, Y0) in CGCS2000 lon/lat."""
    return shapely.transform(geom, lambda c: __import__("numpy").column_stack(_TO_DEG.transform(c[:, 0], c[:, 1])))


def grid_code(n: int) -> str:
    return f"{COMMUNITY}{n:03d}"


def fixture() -> tuple[BaseGeometry, list[tuple[str, BaseGeometry]], dict[str, BaseGeometry]]:
    """A 400 m × 400 m community in four grids, with one gap, one overlap of known shapes."""
    community = box(0, 0, 400, 400)
    gap = box(190, 300, 200, 340)  # 10 m × 40 m: grid 1 stops short of grid 2 here
    overlap = box(185, 40, 200, 100)  # 15 m × 60 m: grid 4 reaches back into grid 3
    grids = [
        (grid_code(1), box(0, 200, 200, 400).difference(gap)),
        (grid_code(2), box(200, 200, 400, 400)),
        (grid_code(3), box(0, 0, 200, 200)),
        (grid_code(4), box(200, 0, 400, 200).union(overlap)),
    ]
    return community, grids, {"gap": gap, "overlap": overlap}


def check(grids: list, parent: tuple | None, **kw: object) -> list:
    checker = Checker(LocalMetric(X0, Y0), Tolerance())
    return checker.coverage(
        [(c, deg(g)) for c, g in grids],
        (parent[0], deg(parent[1])) if parent else None,
        child_zh="网格",
        child_en="grid",
        parent_zh="社区",
        parent_en="community",
        **kw,  # type: ignore[arg-type]
    )


def test_a_gap_and_an_overlap_of_known_area_are_found() -> None:
    community, grids, defects = fixture()
    found = check(grids, (COMMUNITY, community))
    by_rule = {f.rule: f for f in found}
    assert sorted(by_rule) == ["gap", "overlap"], [f.message_en for f in found]
    for rule in ("gap", "overlap"):
        expected = geodesic_area(deg(defects[rule]))
        assert by_rule[rule].area_m2 == pytest.approx(expected, rel=0.005)
        assert by_rule[rule].geometry.symmetric_difference(deg(defects[rule])).area < 1e-10
    assert set(by_rule["gap"].codes) == {grid_code(1), grid_code(2)}
    assert set(by_rule["overlap"].codes) == {grid_code(3), grid_code(4)}


def test_finding_ids_are_stable_across_runs_and_unrelated_edits() -> None:
    community, grids, _ = fixture()
    first = {f.rule: f.id for f in check(grids, (COMMUNITY, community))}
    moved = [(c, g) if c != grid_code(2) else (c, box(200, 200, 400, 400.001)) for c, g in grids]
    again = {f.rule: f.id for f in check(moved, (COMMUNITY, community))}
    assert first == again and len(set(first.values())) == 2


def test_outside_the_parent_duplicates_codes_and_slivers() -> None:
    community, grids, _ = fixture()
    grids[1] = (grid_code(2), box(200, 200, 420, 400))  # 20 m past the community's east edge
    grids.append((grid_code(3), box(0, 0, 1, 0.5)))  # a duplicate code, and a sliver
    grids.append(("370214001008001", box(100, 100, 101, 101)))  # another community's code
    found = check(grids, (COMMUNITY, community))
    rules = sorted(f.rule for f in found)
    assert rules.count("outside_parent") == 1
    outside = next(f for f in found if f.rule == "outside_parent")
    assert outside.area_m2 == pytest.approx(geodesic_area(deg(box(400, 200, 420, 400))), rel=0.005)
    assert "duplicate_code" in rules and "code_parent_mismatch" in rules
    assert next(f for f in found if f.rule == "sliver").severity == "warning"


def test_an_invalid_boundary_is_flagged_where_it_breaks() -> None:
    bowtie = shapely.Polygon([(0, 0), (100, 100), (100, 0), (0, 100), (0, 0)])
    found = check([(grid_code(1), bowtie)], None)
    invalid = [f for f in found if f.rule == "invalid_geometry"]
    assert len(invalid) == 1 and invalid[0].geometry.geom_type == "Point"
    assert invalid[0].geometry.distance(deg(shapely.Point(50, 50))) < 1e-6


def test_an_enclave_filled_by_a_unit_of_the_same_level_is_no_gap() -> None:
    ring = box(0, 0, 300, 300).difference(box(100, 100, 200, 200))
    units = [("A", ring), ("B", box(100, 100, 200, 200))]
    assert [f.rule for f in check(units, None)] == []
    holed = check([("A", ring)], None)
    assert [f.rule for f in holed] == ["gap"]
    assert holed[0].area_m2 == pytest.approx(geodesic_area(deg(box(100, 100, 200, 200))), rel=0.005)
    # a declared exclusion (or a unit of the same level from elsewhere) fills it too
    assert check([("A", ring)], None, fillers=[deg(box(100, 100, 200, 200))]) == []


def test_numbering_running_back_north_west_is_a_warning() -> None:
    rows = [(grid_code(1), box(0, 100, 100, 200)), (grid_code(2), box(100, 100, 200, 200))]
    rows += [(grid_code(3), box(0, 0, 100, 100)), (grid_code(4), box(100, 0, 200, 100))]
    checker = Checker(LocalMetric(X0, Y0))
    assert checker.numbering([(c, deg(g)) for c, g in rows], COMMUNITY, "网格", "grid") == []
    swapped = [(grid_code(4), rows[0][1]), rows[1], rows[2], (grid_code(1), rows[3][1])]
    warnings = checker.numbering([(c, deg(g)) for c, g in swapped], COMMUNITY, "网格", "grid")
    assert len(warnings) == 1 and warnings[0].severity == "warning"


def test_parcels_straddling_grids_outside_them_or_misattributed() -> None:
    grids = [(grid_code(1), box(0, 0, 100, 100)), (grid_code(2), box(100, 0, 200, 100))]
    parcels = [
        ("P1", box(90, 10, 120, 30), grid_code(1)),  # 10 m in grid 1, 20 m in grid 2
        ("P2", box(150, 90, 170, 120), grid_code(2)),  # 10 m of its 30 m north of every grid
        ("P3", box(10, 10, 20, 20), grid_code(2)),  # says grid 2, lies in grid 1
    ]
    checker = Checker(LocalMetric(X0, Y0))
    found = checker.within(
        [(c, deg(g), given) for c, g, given in parcels],
        [(c, deg(g)) for c, g in grids],
        zh="地块",
        en="parcel",
        frame_zh="网格",
        frame_en="grid",
        attribute="网格代码",
    )
    by = {(f.rule, f.codes[0]): f for f in found}
    straddle = by[("straddles_frames", "P1")]
    assert straddle.details["split_m2"][grid_code(2)] == pytest.approx(400, rel=0.005)
    assert straddle.details["split_m2"][grid_code(1)] == pytest.approx(200, rel=0.005)
    assert by[("outside_frame", "P2")].area_m2 == pytest.approx(geodesic_area(deg(box(150, 100, 170, 120))), rel=0.005)
    assert by[("attribute_location_mismatch", "P3")].codes == ("P3", grid_code(2), grid_code(1))
    assert ("attribute_location_mismatch", "P1") in by  # P1 lies mostly in grid 2


# --- through the database, the API and the CLI ---------------------------------------------


def _post(client: TestClient, layer: str, geom: BaseGeometry, **props: object) -> None:
    feature = {"type": "Feature", "geometry": mapping(deg(geom)), "properties": props}
    response = client.post(f"/api/layers/{layer}/features", json=json.loads(json.dumps(feature)))
    assert response.status_code == 201, response.text


def _post_community(client: TestClient, community: BaseGeometry, grids: list[tuple[str, BaseGeometry]]) -> None:
    """Store the fixture's community and its grids (in force since 2024) through the API."""
    _post(client, "divisions", community, code=COMMUNITY, name="南疃社区", level="社区", parent_code=STREET)
    for code, geom in grids:
        _post(
            client,
            "grids",
            geom,
            code=code,
            name=f"网格{code[-3:]}",
            kind="基础网格",
            community_code=COMMUNITY,
            valid_from="2024-01-01",
        )


def test_the_api_reports_findings_as_json_and_geojson(client: TestClient) -> None:
    community, grids, defects = fixture()
    _post(
        client, "divisions", box(-10, -10, 410, 410), code=STREET, name="城阳街道", level="街道", parent_code="370214"
    )
    _post_community(client, community, grids)
    body = client.get("/api/checks", params={"scope": COMMUNITY}).json()
    rules = sorted(f["rule"] for f in body["findings"])
    assert rules == ["gap", "overlap"], body
    assert body["summary"]["errors"] == 2
    gap = next(f for f in body["findings"] if f["rule"] == "gap")
    assert gap["area_m2"] == pytest.approx(geodesic_area(deg(defects["gap"])), rel=0.005)
    assert gap["message"].startswith("缝隙")
    collection = client.get("/api/checks", params={"scope": COMMUNITY, "format": "geojson"}).json()
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == 2
    assert {f["id"] for f in collection["features"]} == {f["id"] for f in body["findings"]}
    only = client.get("/api/checks", params={"scope": COMMUNITY, "rules": "numbering"}).json()
    assert only["findings"] == []
    assert client.get("/api/checks", params={"scope": "370214001099"}).json()["code"] == "scope_not_found"
    assert client.get("/api/checks", params={"rules": "nope"}).json()["code"] == "rule_unknown"
    assert client.get("/api/checks", params={"scope": "12ab"}).status_code == 422


def test_the_demo_street_reports_exactly_its_planted_defects(session: Session) -> None:
    from layers import demo
    from layers.checks import run_checks

    demo.load(session)
    found = run_checks(session)
    rule_of = {"gap": "gap", "overlap": "overlap", "zone_outside_grid": "outside_own_frame"}
    assert len(found) == len(demo.DEFECTS), [f.message_en for f in found]
    for defect in demo.DEFECTS:
        match = next(f for f in found if f.rule == rule_of[defect["kind"]])
        assert set(defect["codes"]) == set(match.codes)
        assert match.area_m2 == pytest.approx(defect["area_m2"], rel=0.005)
        assert match.severity == "error"


def test_editing_a_grid_keeps_its_old_boundary_and_checks_run_as_of_a_date(
    client: TestClient, session: Session
) -> None:
    import datetime as dt

    from sqlalchemy import text

    community, grids, _ = fixture()
    _post_community(client, community, grids)
    listed = client.get("/api/layers/grids/features").json()["features"]
    first = next(f for f in listed if f["properties"]["code"] == grid_code(1))
    fixed = dict(first, geometry=mapping(deg(box(0, 200, 200, 400))))  # the gap closed
    fixed["properties"] = {
        k: v for k, v in first["properties"].items() if k not in ("area_m2", "area_mu", "updated_at")
    }
    assert (
        client.put(
            f"/api/layers/grids/features/{first['id']}", json=json.loads(json.dumps(fixed)), headers=ANY_VERSION
        ).status_code
        == 200
    )

    today = dt.date.today()
    kept = session.execute(text("SELECT code, valid_from, valid_to FROM grids_versions")).all()
    assert kept == [(grid_code(1), dt.date(2024, 1, 1), today)]
    now = client.get(f"/api/layers/grids/features/{first['id']}").json()["properties"]
    assert now["valid_from"] == today.isoformat()
    assert [f["rule"] for f in client.get("/api/checks", params={"scope": COMMUNITY}).json()["findings"]] == ["overlap"]
    before = (today - dt.timedelta(days=1)).isoformat()
    then = client.get("/api/checks", params={"scope": COMMUNITY, "as_of": before}).json()
    assert sorted(f["rule"] for f in then["findings"]) == ["gap", "overlap"]  # the old boundary, with its gap
    earlier = client.get("/api/checks", params={"scope": COMMUNITY, "as_of": "2023-06-01"}).json()["findings"]
    assert [(f["rule"], f["severity"]) for f in earlier] == [("no_children", "warning")]  # no grid in force yet


def test_courtyard_zones_overlap_far_from_home_and_homes_without_a_zone(client: TestClient) -> None:
    """一户一区: zones do not overlap, touch their household's homestead, and every homestead has one."""
    community, _, _ = fixture()
    _post(client, "divisions", community, code=COMMUNITY, name="南疃社区", level="社区", parent_code=STREET)
    _post(
        client,
        "grids",
        community,
        code=grid_code(1),
        name="网格1",
        kind="基础网格",
        community_code=COMMUNITY,
        valid_from="2024-01-01",
    )
    homes = {f"{COMMUNITY}{n:07d}": box(20 + 40 * n, 100, 40 + 40 * n, 120) for n in range(1, 4)}
    for code, geom in homes.items():
        _post(client, "parcels", geom, code=code, land_use_code="0702", ownership="集体", use_status="自用")
    codes = list(homes)
    zone = {"household_head": "李明华", "scope": "房前", "grid_code": grid_code(1), "community_code": COMMUNITY}
    _post(client, "zones", box(60, 90, 80, 100), code=grid_code(1) + "001", homestead_parcel_code=codes[0], **zone)
    _post(client, "zones", box(75, 85, 90, 100), code=grid_code(1) + "002", homestead_parcel_code=codes[0], **zone)
    _post(client, "zones", box(100, 60, 120, 70), code=grid_code(1) + "003", homestead_parcel_code=codes[1], **zone)
    body = client.get("/api/checks", params={"scope": COMMUNITY}).json()
    found = {(f["rule"], tuple(f["codes"])) for f in body["findings"]}
    overlap = next(f for f in body["findings"] if f["rule"] == "overlap")
    assert set(overlap["codes"]) == {grid_code(1) + "001", grid_code(1) + "002"}
    assert overlap["area_m2"] == pytest.approx(geodesic_area(deg(box(75, 90, 80, 100))), rel=0.005)
    far = next(f for f in body["findings"] if f["rule"] == "not_near_link")
    assert far["codes"] == [grid_code(1) + "003", codes[1]] and far["details"]["distance_m"] == pytest.approx(
        30, rel=0.01
    )
    assert ("household_without_zone", (codes[2],)) in found
    assert all(f["severity"] == "warning" for f in body["findings"] if f["rule"] != "overlap")


def test_streets_tile_their_county(client: TestClient) -> None:
    county = box(0, 0, 800, 400)
    _post(client, "divisions", county, code="370214", name="城阳区", level="区县", parent_code="370200")
    _post(client, "divisions", box(0, 0, 400, 400), code=STREET, name="城阳街道", level="街道", parent_code="370214")
    east = box(400, 0, 800, 400).difference(box(700, 0, 800, 50))  # 100 m × 50 m of the county in no street
    _post(client, "divisions", east, code="370214002", name="流亭街道", level="街道", parent_code="370214")
    body = client.get("/api/checks", params={"scope": "370214", "rules": "coverage"}).json()
    gaps = [f for f in body["findings"] if f["rule"] == "gap" and f["scope"] == "370214"]
    assert len(gaps) == 1 and gaps[0]["area_m2"] == pytest.approx(geodesic_area(deg(box(700, 0, 800, 50))), rel=0.005)
    assert gaps[0]["message_zh"].endswith("在区县 370214 内")
    wrong = {"type": "Feature", "geometry": mapping(deg(box(0, 0, 1, 1))), "properties": {}}
    wrong["properties"] = {"code": "370214", "name": "x", "level": "区县", "parent_code": "370201"}
    assert client.post("/api/layers/divisions/features", json=json.loads(json.dumps(wrong))).json()["code"] == (
        "code_inconsistent"
    )


def test_a_zone_sticking_out_of_its_grid_by_a_known_area() -> None:
    grids = [(grid_code(1), box(0, 0, 100, 100)), (grid_code(2), box(100, 0, 200, 100))]
    zones = [(grid_code(1) + "001", box(80, 40, 112, 50), grid_code(1))]  # 12 m × 10 m in grid 2
    found = Checker(LocalMetric(X0, Y0)).within(
        [(c, deg(g), given) for c, g, given in zones],
        [(c, deg(g)) for c, g in grids],
        zh="一户一区",
        en="zone",
        frame_zh="网格",
        frame_en="grid",
        attribute="网格编码",
        own_frame_only=True,
    )
    assert [f.rule for f in found] == ["outside_own_frame"]
    assert found[0].codes == (grid_code(1) + "001", grid_code(1), grid_code(2))
    assert found[0].area_m2 == pytest.approx(geodesic_area(deg(box(100, 40, 112, 50))), rel=0.005)


def test_guatu_check_refuses_bad_options_with_exit_2() -> None:
    """(Exit 1 on the demo's defects, and the JSON report, are tested in tests/test_cli.py.)"""
    from typer.testing import CliRunner

    from api import cli

    runner = CliRunner()
    result = runner.invoke(cli.app, ["check", "--format", "bogus"])
    assert result.exit_code == 2
    result = runner.invoke(cli.app, ["check", "--as-of", "yesterday"])
    assert result.exit_code == 2


def test_the_demo_defects_have_the_same_geodesic_area_whatever_the_scope(session: Session) -> None:
    """An overlap checked from its street, its community or either grid is one area: GRS80, as PostGIS says."""
    from sqlalchemy import text

    from layers import demo
    from layers.checks import run_checks

    demo.load(session)
    rule_of = {"gap": "gap", "overlap": "overlap", "zone_outside_grid": "outside_own_frame"}
    for defect in demo.DEFECTS:
        community = defect["community_code"]
        scopes = [community[:9], community, *(c for c in defect["codes"] if len(c) == 15)]
        areas = {}
        for scope in scopes:
            found = [f for f in run_checks(session, scope=scope) if f.rule == rule_of[defect["kind"]]]
            assert len(found) == 1, (scope, [f.message_en for f in found])
            areas[scope] = found[0].area_m2
            geodesic = session.execute(
                text("SELECT ST_Area(ST_GeomFromGeoJSON(:g)::geography, true)"),
                {"g": json.dumps(found[0].as_dict()["geometry"])},
            ).scalar_one()
            assert found[0].area_m2 == pytest.approx(geodesic, rel=1e-5)  # the finding's own shape, measured
        low, high = min(areas.values()), max(areas.values())
        assert high - low <= 1e-4 * low, (defect["kind"], areas)
        if defect["kind"] == "overlap":  # the exact overlap of the stored grids, measured by PostGIS
            exact = session.execute(
                text(
                    "SELECT ST_Area(ST_Intersection(a.geom, b.geom)::geography, true) FROM grids a, grids b "
                    "WHERE a.code = :a AND b.code = :b"
                ),
                dict(zip("ab", defect["codes"], strict=True)),
            ).scalar_one()
            assert low == pytest.approx(exact, rel=1e-4)


def test_the_context_of_a_community_brings_its_grids_and_the_features_named_masked(
    client: TestClient, session: Session
) -> None:
    """The findings map of a community: the community, its grids (coded, named, levelled), the zone a finding names."""
    from sqlalchemy import text

    from layers import demo

    demo.load(session)
    defect = next(d for d in demo.DEFECTS if d["kind"] == "zone_outside_grid")
    community = defect["community_code"]
    findings = client.get("/api/checks", params={"scope": community}).json()["findings"]
    codes = sorted({c for f in findings for c in f["codes"]})
    assert set(defect["codes"]) <= set(codes)
    body = client.get("/api/checks/context", params={"scope": community, "codes": ",".join(codes)}).json()
    units = body["units"]["features"]
    grids = session.execute(
        text("SELECT code FROM grids WHERE community_code = :c ORDER BY code"), {"c": community}
    ).scalars()
    assert [u["properties"]["code"] for u in units] == [community, *grids]
    assert [u["properties"]["level"] for u in units[:2]] == ["community", "grid"]
    assert all(u["properties"]["name"] and len(u["properties"]["label_at"]) == 2 for u in units)
    zone_code = next(c for c in defect["codes"] if c not in {u["properties"]["code"] for u in units})
    zone = next(f for f in body["features"]["features"] if f["properties"]["code"] == zone_code)
    assert zone["properties"]["layer"] == "zones" and zone["geometry"]["type"] in ("Polygon", "MultiPolygon")
    stored = "SELECT guatu_shown_zones(id) ->> 'household_head' FROM zones WHERE code = :c"  # as an admin sees it
    head = session.execute(text(stored), {"c": zone_code}).scalar_one()
    shown = {f["zh"]: f["value"] for f in zone["properties"]["fields"]}
    assert shown["户主"] == head[0] + "*" * (len(head) - 2) + head[-1] != head  # personal: masked
    assert body["layers"]["zones"]["zh"] and not body["truncated"]
    street = client.get("/api/checks/context", params={"scope": community[:9]}).json()["units"]["features"]
    assert {u["properties"]["level"] for u in street} == {"street", "community"}
    grid = client.get("/api/checks/context", params={"scope": units[1]["properties"]["code"]}).json()
    assert [u["properties"]["code"] for u in grid["units"]["features"]] == [u["properties"]["code"] for u in units[1:]]
    assert client.get("/api/checks/context", params={"scope": community[:9] + "099"}).json()["code"] == (
        "scope_not_found"
    )
    many = client.get("/api/checks/context", params={"codes": ",".join(str(n) for n in range(501))})
    assert many.status_code == 422 and many.json()["code"] == "too_many_codes"
