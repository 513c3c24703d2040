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


def dry_run(client: TestClient, path: Path) -> Response:
    """Push PATH through the upload endpoint as a valid-only dry run; never a 500."""
    response = client.post(
        "/api/layers/shops/uploads", content=path.read_bytes(), params={"dry_run": "true", "mode": "valid-only"}
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
