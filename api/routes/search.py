"""Search by code, name or address, for the map's search box."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.auth import rule
from api.deps import ReadSessionDep
from api.routes.stats import FilterDep
from layers.features import layer_or_404
from layers.search import search

router = APIRouter(tags=["search"])


@router.get("/api/search", summary="搜索 Search by code, name or address", **rule("user"))
def search_features(
    session: ReadSessionDep,
    flt: FilterDep,
    q: Annotated[str, Query(min_length=1, max_length=60, description="a code (or its start), a name or address")],
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    layer: Annotated[
        str | None, Query(max_length=40, description="the layer the map's filter (the other parameters) narrows")
    ] = None,
) -> list[dict[str, Any]]:
    """Return matching features with their layer and bounding box, exact codes first.

    With LAYER and a filter, each hit of that layer says whether the filter keeps it (`kept`).
    """
    filters = {layer_or_404(layer).id: flt} if layer and flt else None
    return search(session, q, limit, filters)
