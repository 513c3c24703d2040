"""Boundary checks: gaps, overlaps, containment and 一户一区 rules, as JSON or as GeoJSON of the problems."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from api.deps import SessionsDep
from api.work import heavy, lane
from layers import hierarchy
from layers.checks import RULES, findings_geojson, run_checks
from spatial.db import query_canceller
from spatial.topology import Tolerance
from spatial.work import CancelToken

router = APIRouter(tags=["checks"])
SCOPE_PATTERN = hierarchy.scope_pattern()
"""A county (6 digits), street (9), community (12) or grid (15–16) code."""


def report(findings: list[Any], scope: str | None, as_of: dt.date, tolerance: Tolerance) -> dict[str, Any]:
    """Return the JSON report of FINDINGS."""
    by_rule: dict[str, int] = {}
    for finding in findings:
        by_rule[finding.rule] = by_rule.get(finding.rule, 0) + 1
    return {
        "scope": scope,
        "as_of": as_of.isoformat(),
        "tolerance": {"snap_m": tolerance.snap_m, "min_area_m2": tolerance.min_area_m2},
        "summary": {
            "errors": sum(1 for f in findings if f.severity == "error"),
            "warnings": sum(1 for f in findings if f.severity == "warning"),
            "by_rule": by_rule,
        },
        "findings": [f.as_dict() for f in findings],
    }


@router.get("/api/checks", summary="边界检查 Boundary checks")
async def checks(
    sessions: SessionsDep,
    request: Request,
    scope: Annotated[
        str | None, Query(pattern=SCOPE_PATTERN, description="county, street, community or grid code")
    ] = None,
    rules: Annotated[str | None, Query(description="comma-separated: " + ", ".join(RULES))] = None,
    as_of: Annotated[dt.date | None, Query(description="check the boundaries in force on this date")] = None,
    snap_m: Annotated[float, Query(ge=0, le=10)] = 0.05,
    min_area_m2: Annotated[float, Query(ge=0, le=1e6)] = 1.0,
    format: Annotated[Literal["json", "geojson"], Query()] = "json",
) -> Response:
    """Check the boundaries in SCOPE: findings with rule, severity, features, problem geometry and area.

    Checks run a few at a time (a county's can take minutes); beyond the queue the answer is
    503 with Retry-After, and a check whose client left is cancelled.
    """
    tolerance = Tolerance(snap_m=snap_m, min_area_m2=min_area_m2)
    chosen = [r.strip() for r in rules.split(",") if r.strip()] if rules else None
    day = as_of or dt.date.today()

    def check(token: CancelToken) -> list[Any]:
        with sessions() as session, token.hook(query_canceller(session)):
            return run_checks(session, scope=scope, rules=chosen, as_of=day, tolerance=tolerance)

    async def job(token: CancelToken) -> list[Any]:
        return await lane(request, "checks").run(check, token)

    found = await heavy(request, "checks", job)
    if format == "geojson":
        return Response(orjson.dumps(findings_geojson(found)), media_type="application/geo+json")
    return Response(orjson.dumps(report(found, scope, day, tolerance)), media_type="application/json")
