"""Statistics that follow the map's filter and view: counts, 亩, idle rate, revitalised, roll-up."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import LayerDep, SessionDep
from layers.features import parse_bbox
from layers.stats import Filter, statistics

router = APIRouter(tags=["statistics"])


def _list(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


@router.get("/api/layers/{layer_id}/stats", summary="统计 Statistics")
def layer_statistics(
    layer: LayerDep,
    session: SessionDep,
    scope: Annotated[str | None, Query(pattern=r"^[0-9]{6,16}$", description="street, community or grid code")] = None,
    bbox: Annotated[str | None, Query(description="minlon,minlat,maxlon,maxlat (the map's view)")] = None,
    status: Annotated[str | None, Query(description="comma-separated values of the status field")] = None,
    land_use: Annotated[str | None, Query(description="comma-separated land-use code prefixes (01, 0702 …)")] = None,
    ownership: Annotated[str | None, Query(description="comma-separated")] = None,
    idle_since_before: Annotated[dt.date | None, Query(description="idle since before this date")] = None,
    by: Annotated[str | None, Query(pattern="^(community|grid)$", description="roll up by community or grid")] = None,
) -> dict[str, Any]:
    """Return counts, area (m², 亩), idle count and rate, revitalised count, per status and per community/grid."""
    flt = Filter(
        scope=scope,
        bbox=parse_bbox(bbox),
        status=_list(status),
        land_use=_list(land_use),
        ownership=_list(ownership),
        idle_since_before=idle_since_before,
    )
    return statistics(session, layer, flt, by=by)
