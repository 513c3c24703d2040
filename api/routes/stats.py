"""Statistics that follow the map's filter and view: counts, 亩, the layer's figures, roll-up per unit."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from api.auth import rule
from api.deps import LayerDep, ReadSessionDep
from layers.features import parse_bbox
from layers.stats import Filter, filter_description, parse_filter, statistics

router = APIRouter(tags=["statistics"])

FILTER_HELP = (
    "Any filter the layer declares, by its query parameter (GET /api/layers/{layer_id}/filters lists them): "
    "`status` (the styled field), an enumerated field (comma-separated values), a code list "
    "(comma-separated prefixes, e.g. land_use=01,0702), a date field (`…_before=YYYY-MM-DD`)."
)


async def map_filter(
    request: Request,
    scope: Annotated[
        str | None, Query(pattern=r"^[0-9]{6,16}$", description="county, street, community or grid code")
    ] = None,
) -> Filter:
    """Return the map's filter from the query string (shared by statistics, tiles, features and print)."""
    query = request.query_params
    return parse_filter({name: query.getlist(name) for name in query}, scope=scope)


map_filter.__doc__ = f"{map_filter.__doc__}\n\n{FILTER_HELP}"
FilterDep = Annotated[Filter, Depends(map_filter)]


@router.get("/api/layers/{layer_id}/stats", summary="统计 Statistics", description=FILTER_HELP, **rule("user"))
def layer_statistics(
    layer: LayerDep,
    session: ReadSessionDep,
    flt: FilterDep,
    bbox: Annotated[str | None, Query(description="minlon,minlat,maxlon,maxlat (the map's view)")] = None,
    by: Annotated[
        str | None, Query(max_length=20, description="roll up by a level of the hierarchy (street, community, grid)")
    ] = None,
) -> dict[str, Any]:
    """Return counts, area (m², 亩) and the layer's figures in view, per counted field, and per unit of BY."""
    flt.bbox = parse_bbox(bbox)
    return statistics(session, layer, flt, by=by)


@router.get("/api/layers/{layer_id}/filters", summary="筛选项 Filters and figures the layer offers", **rule("user"))
def layer_filters(layer: LayerDep) -> dict[str, Any]:
    """Return the filters (query parameter, field, values or classes) and the figures the layer's statistics give."""
    return filter_description(layer)
