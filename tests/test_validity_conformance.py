"""GEOS's own validity cases (xmltester, LGPL: read from ../shared, never copied) against guatu's checks.

For every polygonal case, guatu's door (parse + validity) must agree with the expected
isValid, except where guatu refuses more by design: rings that are not closed or too short,
and EMPTY shells or holes, are refused at parse time.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spatial.errors import InvalidInput
from spatial.geometry import parse_geojson_geometry, validity_problem

CASES = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "geos-xmltester" / "derived"
FILE = CASES / "geos_isvalid_cases.geojson"
pytestmark = pytest.mark.skipif(not FILE.exists(), reason="../shared/data is not beside this checkout")


def polygonal_cases() -> list[dict]:
    if not FILE.exists():
        return []
    features = json.loads(FILE.read_text(encoding="utf-8"))["features"]
    return [f for f in features if (f["geometry"] or {}).get("type") in ("Polygon", "MultiPolygon")]


def test_guatu_agrees_with_geos_on_polygon_validity() -> None:
    cases = polygonal_cases()
    assert len(cases) > 300
    disagreements = []
    for case in cases:
        expected = case["properties"]["expected_isValid"]
        try:
            ours = validity_problem(parse_geojson_geometry(case["geometry"])) is None
            refused_at_parse = None
        except InvalidInput as exc:
            ours, refused_at_parse = False, exc.code
        by_design = refused_at_parse in ("ring_not_closed", "ring_too_short") or (
            "EMPTY" in case["properties"]["wkt"] and refused_at_parse in ("geometry_empty", "geometry_malformed")
        )  # empty shells or holes cannot be stored: refused, where GEOS calls them valid
        if ours != expected and not by_design:
            disagreements.append((case["properties"]["desc"], expected, refused_at_parse))
    assert disagreements == []
