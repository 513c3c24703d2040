"""The cockpit's figures and the campaign's progress per unit."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.auth import ActorDep, rule
from api.deps import SessionDep
from api.routes.stats import FilterDep
from layers import campaign, cockpit, hierarchy
from spatial.errors import InvalidInput

router = APIRouter(tags=["cockpit"])


@router.get("/api/campaign", summary="工作进度 Campaign progress per unit", **rule("user"))
def campaign_progress(
    session: SessionDep,
    flt: FilterDep,
    by: Annotated[str, Query(max_length=20, description="street, community or grid")] = "community",
) -> dict[str, Any]:
    """Return how many assets reached each step (排查摸底 → 建章立制) per unit of BY, and its progress (0–1)."""
    if by not in {lv.id for lv in hierarchy.levels()}:
        raise InvalidInput.one("group_invalid", f"不能按“{by}”汇总", f"cannot roll up by {by!r}", field="by")
    return campaign.progress(session, by, flt)


@router.get("/api/cockpit", summary="驾驶舱数据 The cockpit's figures", **rule("user"))
def cockpit_figures(session: SessionDep, actor: ActorDep) -> dict[str, Any]:
    """Return every figure of the leader's screen for the signed-in user's area, as of today."""
    return cockpit.figures(session, actor.area if actor else None, campaign.today())
