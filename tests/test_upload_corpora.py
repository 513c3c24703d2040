"""Public bad-input corpora through the upload endpoint: every file its verdict, never a 500.

The chrieke set is copied into tests/data (MIT); the full copy in ../shared/data is used as
well when it is there. Verdicts, by folder:
- valid: the file is read, and no feature has a structural or validity problem (a layer may
  still refuse a line or a GeometryCollection, or a null geometry, for what it stores);
- invalid_structure: refused as a file (400), or every feature refused for its structure;
- invalid_geometries: every feature refused for its geometry, except the winding-order
  files: guatu normalises winding and never rejects for it;
- problematic_*: whatever guatu decides, it answers without a 500.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from httpx import Response

HERE = Path(__file__).resolve().parent
SETS = [
    HERE / "data" / "chrieke-geojson-invalid-geometry" / "examples",
    HERE.parent.parent / "shared" / "data" / "chrieke-geojson-invalid-geometry" / "examples",
]
FILES = sorted(
    {p.relative_to(root).as_posix(): p for root in SETS if root.exists() for p in root.rglob("*.geojson")}.items()
)

LAYER_REFUSALS = {"geometry_type_not_allowed", "geometry_missing"}
STRUCTURE = {
    "geometry_malformed",
    "invalid_coordinate",
    "geometry_missing",
    "geometry_type_unknown",
    "not_a_feature",
    "properties_malformed",
    "properties_missing",
    "feature_id_invalid",
    "bbox_invalid",
    "geometry_type_not_allowed",
}
VALIDITY = {
    "ring_too_short",
    "ring_not_closed",
    "self_intersection",
    "ring_self_intersection",
    "geometry_invalid",
    "geometry_malformed",
    "too_few_points",
    "hole_outside_shell",
    "nested_holes",
    "interior_disconnected",
}
WINDING_ONLY = {"invalid_exterior_not_ccw.geojson", "invalid_interior_not_cw.geojson"}


def dry_run(client: TestClient, path: Path, **params: str) -> Response:
    """Push PATH through the upload endpoint as a valid-only dry run; never a 500."""
    response = client.post(
        "/api/layers/shops/uploads",
        content=path.read_bytes(),
        params={"dry_run": "true", "mode": "valid-only", **params},
    )
    assert response.status_code < 500, response.text
    return response


def feature_codes(body: dict) -> list[set[str]]:
    """Return, per feature, the codes of its problems that are not about the layer's properties."""
    return [
        {p["code"] for p in entry.get("problems", []) if not p["where"].get("field", "").startswith("properties.")}
        for entry in body["report"]["features"]
    ]


@pytest.mark.parametrize(("name", "path"), FILES, ids=[name for name, _ in FILES])
def test_corpus_file_gets_its_verdict(client: TestClient, name: str, path: Path) -> None:
    response = dry_run(client, path)
    body = response.json()
    folder = name.split("/")[0]
    if folder == "valid":
        assert response.status_code == 200, body
        for codes in feature_codes(body):
            assert codes <= LAYER_REFUSALS, codes
    elif folder == "invalid_structure":
        if response.status_code == 400:
            assert body["code"] in {"features_not_array", "wrong_top_level_type", "invalid_json"}
        else:
            assert all(codes & STRUCTURE for codes in feature_codes(body)), feature_codes(body)
    elif folder == "invalid_geometries":
        codes = feature_codes(body)
        if path.name in WINDING_ONLY:
            assert codes == [set()], codes  # normalised, not refused
        else:
            assert codes and all(c & VALIDITY for c in codes), codes


def test_the_copied_corpus_is_there() -> None:
    assert len(list(SETS[0].rglob("*.geojson"))) >= 70  # the suite keeps its coverage without ../shared


HINT_SETS = [
    HERE / "data" / "mapbox-geojsonhint",
    HERE.parent.parent / "shared" / "data" / "mapbox-geojsonhint" / "test" / "data",
]
HINT_FILES = sorted(
    {p.relative_to(root).as_posix(): p for root in HINT_SETS if root.exists() for p in root.rglob("*.geojson")}.items()
)
# Where guatu decides differently from the linter, on purpose:
HINT_ACCEPTED = {
    "bad/bad-polygon-interiorring-rhr.geojson",  # winding order is normalised, never a reason to reject
    "bad/polygon_winding_order.geojson",
    "bad/feature_changed_semantics.geojson",  # foreign members are ignored, not refused
    "bad/geometry_changed_semantics.geojson",
    "bad/excessive_precision_truncated.geojson",  # precision is not a fault (a line: the layer refuses it)
    "bad/different-first-size.geojson",  # closed in x/y, a Z only at the end: Z is dropped (noted), ring closed
}
HINT_REFUSED_AS_CRS = {"good/issue82.geojson"}  # well-formed, but not lon/lat: refused with a CRS hint


@pytest.mark.parametrize(("name", "path"), HINT_FILES, ids=[name for name, _ in HINT_FILES])
def test_geojsonhint_file_gets_its_verdict(client: TestClient, name: str, path: Path) -> None:
    response = dry_run(client, path)
    body = response.json()
    if name in HINT_REFUSED_AS_CRS:
        assert response.status_code == 422 and body["code"].startswith("crs_")
    elif name.startswith("good/") or name in HINT_ACCEPTED:
        assert response.status_code == 200, body
        for codes in feature_codes(body):
            assert codes <= LAYER_REFUSALS, codes
    elif response.status_code != 400:  # a bad file: at least the broken feature is refused, for what it is
        codes = feature_codes(body)
        assert any(c & (STRUCTURE | VALIDITY) for c in codes), codes


TURF = HERE / "data" / "turf-boolean-valid"
TURF_FILES = sorted((p.relative_to(TURF).as_posix(), p) for p in TURF.rglob("*.geojson"))


@pytest.mark.parametrize(("name", "path"), TURF_FILES, ids=[name for name, _ in TURF_FILES])
def test_turf_validity_verdicts(client: TestClient, name: str, path: Path) -> None:
    from spatial.errors import InvalidInput
    from spatial.geojson_in import read_geojson
    from spatial.geometry import parse_geojson_geometry, validity_problem

    dry_run(client, path)
    if "/Polygon/" not in name and "/MultiPolygon/" not in name:
        return  # guatu's layers store no such geometry; only the no-500 rule applies
    geometry = read_geojson(path.read_bytes()).features[0]["geometry"]
    try:
        valid = validity_problem(parse_geojson_geometry(geometry)) is None
    except InvalidInput:
        valid = False
    assert valid == name.startswith("true/")


def _features(path: Path) -> list[dict]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if data["type"] == "FeatureCollection":
        return data["features"]
    return [data if data["type"] == "Feature" else {"type": "Feature", "geometry": data, "properties": {}}]


def _polygonal(path: Path) -> list:
    return [f["geometry"] for f in _features(path) if f["geometry"]["type"] in ("Polygon", "MultiPolygon")]


KINKS = HERE / "data" / "turf-kinks"
KINK_FILES = sorted(p.name for p in (KINKS / "in").glob("*.geojson"))


@pytest.mark.parametrize("name", KINK_FILES)
def test_self_intersections_are_found_where_turf_finds_them(client: TestClient, name: str) -> None:
    from spatial.geometry import parse_geojson_geometry, validity_problem

    dry_run(client, KINKS / "in" / name)  # never a 500
    kinks = [f["geometry"]["coordinates"] for f in _features(KINKS / "out" / name) if f["geometry"]["type"] == "Point"]
    for geometry in _polygonal(KINKS / "in" / name):
        problem = validity_problem(parse_geojson_geometry(geometry))
        assert problem is not None and problem[0] in ("self_intersection", "ring_self_intersection"), problem
        location = problem[2]
        assert location is not None
        assert min(math.dist(location, kink) for kink in kinks) < 1e-6, (location, kinks)


REWIND = HERE / "data" / "turf-rewind"
REWIND_FILES = sorted(p.name for p in (REWIND / "in").glob("*.geojson"))


@pytest.mark.parametrize("name", REWIND_FILES)
def test_winding_is_normalised_as_turf_rewinds_it(client: TestClient, name: str) -> None:
    import shapely

    from spatial.geometry import parse_geojson_geometry, prepare_for_storage

    dry_run(client, REWIND / "in" / name)
    given, rewound = _polygonal(REWIND / "in" / name), _polygonal(REWIND / "out" / name)
    assert len(given) == len(rewound)
    for raw, expected in zip(given, rewound, strict=True):
        stored = prepare_for_storage(
            parse_geojson_geometry(raw), allowed=("Polygon", "MultiPolygon"), stored=("Polygon", "MultiPolygon")
        )
        assert shapely.equals_exact(stored, shapely.geometry.shape(expected), 1e-12)  # same vertices, same order
        assert all(shapely.is_ccw(p.exterior) for p in getattr(stored, "geoms", [stored]))


UNKINK = HERE / "data" / "turf-unkink-polygon"
UNKINK_FILES = sorted(p.name for p in (UNKINK / "in").glob("*.geojson"))


@pytest.mark.parametrize("name", UNKINK_FILES)
def test_repair_keeps_what_turf_unkinks_or_refuses_to_split_a_polygon(client: TestClient, name: str) -> None:
    """turf unkinks a twisted polygon into parts. guatu repairs a dent in place (same area as turf), and
    for a polygon that would split finds those parts (or, for loops wound twice, fewer: GEOS keeps the
    faces crossed an odd number of times) and refuses to guess which shape was meant."""
    import re

    import shapely

    from layers.uploads import _Repairer
    from spatial.crs import DeclaredCrs
    from spatial.errors import InvalidInput
    from spatial.geometry import geodesic_area, parse_geojson_geometry

    dry_run(client, UNKINK / "in" / name, repair="true")  # never a 500
    turf_parts = [shapely.geometry.shape(g) for g in _polygonal(UNKINK / "out" / name)]
    repair = _Repairer(DeclaredCrs("epsg", 4490), True)
    reported: list[float] = []
    for geometry in _polygonal(UNKINK / "in" / name):
        parsed = parse_geojson_geometry(geometry)
        if parsed.is_valid:
            continue  # nothing to repair
        try:
            repaired = repair(parsed)
        except InvalidInput as exc:  # split into several polygons: refused, the parts named
            assert exc.code == "repair_changed_type"
            shown = re.search(r"面积 ([0-9.,、]+) 平方米", exc.problems[0].message_zh)
            assert shown is not None
            reported += [float(v.replace(",", "")) for v in shown.group(1).split("、")]
        else:  # a dent or a doubled vertex: repaired in place, the area kept and noted
            assert repaired.is_valid and repair.note is not None and repair.note["code"] == "repaired"
            reported.append(geodesic_area(repaired))
    union = shapely.union_all(turf_parts)
    expected = sum(geodesic_area(p) for p in getattr(union, "geoms", [union]))
    if reported and (name.startswith("hourglass") or name.startswith("issue")):
        assert abs(sum(reported) - expected) <= 0.01 * expected, (reported, expected)  # the very same parts
    elif reported:
        # turf keeps every face the ring winds around; GEOS keeps those it crosses an odd number of times
        assert sum(reported) <= expected * 1.01, (reported, expected)
