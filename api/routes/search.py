"""Search by code, name or address, for the map's search box."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import SessionDep
from layers.search import search

router = APIRouter(tags=["search"])


@router.get("/api/search", summary="搜索 Search by code, name or address")
def search_features(
    session: SessionDep,
    q: Annotated[str, Query(min_length=1, max_length=60, description="a code (or its start), a name or address")],
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> list[dict[str, Any]]:
    """Return matching features with their layer and bounding box, exact codes first."""
    return search(session, q, limit)
