"""Boundary checks: gaps, overlaps, containment and 一户一区 rules, as JSON or as GeoJSON of the problems."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from api.auth import rule
from api.deps import SessionsDep
from api.work import heavy, lane
from layers import hierarchy, problems
from layers.checks import RULES, checks_context, findings_geojson, run_checks
from spatial.db import query_canceller
from spatial.errors import InvalidInput
from spatial.topology import Tolerance
from spatial.work import CancelToken

router = APIRouter(tags=["checks"])
SCOPE_PATTERN = hierarchy.scope_pattern()
"""A code of any level of the hierarchy (layers.hierarchy: county, street, community, grid…)."""
MAX_CODES = 500
"""The most feature codes one context request may name."""
CODE = re.compile(r"^[^\x00-\x1f\x7f,]{1,60}$")


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


@router.get("/api/checks", summary="边界检查 Boundary checks", **rule("checks"))
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

    def check(token: CancelToken) -> tuple[list[Any], dict[str, tuple[str, str]]]:
        with sessions() as session, token.hook(query_canceller(session)):
            found = run_checks(session, scope=scope, rules=chosen, as_of=day, tolerance=tolerance)
            return found, problems.registered(session, [f.id for f in found])  # "已登记" beside each

    async def job(token: CancelToken) -> tuple[list[Any], dict[str, tuple[str, str]]]:
        return await lane(request, "checks").run(check, token)

    found, registered = await heavy(request, "checks", job)
    if format == "geojson":
        collection = findings_geojson(found)
        for feature in collection["features"]:
            feature["properties"]["registered"] = _registered(registered, feature["id"])
        return Response(orjson.dumps(collection), media_type="application/geo+json")
    body = report(found, scope, day, tolerance)
    for finding in body["findings"]:
        finding["registered"] = _registered(registered, finding["id"])
    return Response(orjson.dumps(body), media_type="application/json")


def _registered(registered: dict[str, tuple[str, str]], finding_id: str) -> dict[str, str] | None:
    """Return the problem a finding is registered as ({number, status}), or None."""
    found = registered.get(finding_id)
    return None if found is None else {"number": found[0], "status": found[1]}


@router.get(
    "/api/checks/context", summary="检查结果的底图 What a findings map draws around the findings", **rule("checks")
)
async def checks_context_route(
    sessions: SessionsDep,
    request: Request,
    scope: Annotated[str | None, Query(pattern=SCOPE_PATTERN, description="the scope checked")] = None,
    codes: Annotated[str | None, Query(description=f"comma-separated feature codes (at most {MAX_CODES})")] = None,
    as_of: Annotated[dt.date | None, Query(description="the boundaries in force on this date")] = None,
) -> Response:
    """Return the scope's units (with codes, names and levels) and the features the findings name, as GeoJSON.

    Generic over the layers: whatever layer holds a code is asked; personal fields come masked.
    It runs in the checks' lane (a county's units are many): beyond the queue, 503 with Retry-After.
    """
    named = [c.strip() for c in codes.split(",") if c.strip()] if codes else []
    if len(named) > MAX_CODES:
        raise InvalidInput.one(
            "too_many_codes",
            f"一次最多查询 {MAX_CODES} 个编码（收到 {len(named)} 个）",
            f"at most {MAX_CODES} codes at a time ({len(named)} given)",
            field="codes",
        )
    bad = next((c for c in named if not CODE.match(c)), None)
    if bad is not None:
        raise InvalidInput.one(
            "code_invalid", f"编码格式不对：{bad[:40]}", f"not a feature code: {bad[:40]}", field="codes"
        )

    def read(token: CancelToken) -> bytes:
        with sessions() as session, token.hook(query_canceller(session)):
            return orjson.dumps(checks_context(session, scope=scope, codes=named, as_of=as_of))

    async def job(token: CancelToken) -> bytes:
        return await lane(request, "checks").run(read, token)

    return Response(await heavy(request, "checks", job), media_type="application/json")
