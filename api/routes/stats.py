"""Statistics that follow the map's filter and view: counts, 亩, idle rate, revitalised, roll-up."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from api.deps import LayerDep, SessionDep
from layers.features import parse_bbox
from layers.stats import Filter, statistics
from spatial.errors import InvalidInput

router = APIRouter(tags=["statistics"])
LAND_USE_PREFIX = re.compile(r"[0-9A-Za-z]{1,5}")
MAX_PREFIXES = 20


def _list(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


async def map_filter(
    scope: Annotated[str | None, Query(pattern=r"^[0-9]{6,16}$", description="street, community or grid code")] = None,
    status: Annotated[str | None, Query(description="comma-separated values of the status field")] = None,
    land_use: Annotated[str | None, Query(description="comma-separated land-use code prefixes (01, 0702 …)")] = None,
    ownership: Annotated[str | None, Query(description="comma-separated")] = None,
    idle_since_before: Annotated[dt.date | None, Query(description="idle since before this date")] = None,
) -> Filter:
    """Return the map's filter from the query string (shared by statistics and vector tiles; nothing blocks)."""
    prefixes = sorted(set(_list(land_use)))
    wrong = next((p for p in prefixes if not LAND_USE_PREFIX.fullmatch(p)), None)
    if wrong is not None or len(prefixes) > MAX_PREFIXES:
        shown = (wrong or "")[:20]
        raise InvalidInput.one(
            "filter_invalid",
            f"地类编码前缀无效：{shown}（1–5 位字母数字，至多 {MAX_PREFIXES} 个）",
            f"not a land-use code prefix: {shown!r} (1–5 letters or digits, at most {MAX_PREFIXES})",
            field="land_use",
        )
    return Filter(
        scope=scope,
        status=sorted(set(_list(status))),
        land_use=prefixes,
        ownership=_list(ownership),
        idle_since_before=idle_since_before,
    )


FilterDep = Annotated[Filter, Depends(map_filter)]


@router.get("/api/layers/{layer_id}/stats", summary="统计 Statistics")
def layer_statistics(
    layer: LayerDep,
    session: SessionDep,
    flt: FilterDep,
    bbox: Annotated[str | None, Query(description="minlon,minlat,maxlon,maxlat (the map's view)")] = None,
    by: Annotated[
        str | None, Query(pattern="^(street|community|grid)$", description="roll up by street, community or grid")
    ] = None,
) -> dict[str, Any]:
    """Return counts, area (m², 亩), idle count and rate, revitalised count, per status and per community/grid."""
    flt.bbox = parse_bbox(bbox)
    return statistics(session, layer, flt, by=by)
