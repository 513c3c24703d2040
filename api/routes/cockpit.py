"""The cockpit's figures and the campaign's progress per unit."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from api.auth import ActorDep, rule
from api.deps import SessionDep
from api.routes.stats import FilterDep
from api.routes.tiles import visibility
from layers import campaign, cockpit, hierarchy, problems
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


class FiguresCache:
    """The cockpit's figures per visibility, computed once however many screens ask at the same moment."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kept: dict[str, tuple[float, dict[str, Any]]] = {}
        self.computing: dict[str, threading.Lock] = {}

    def get(self, who: str, max_age_s: float, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Return WHO's figures no older than MAX_AGE_S, computing them (once, the others waiting) if need be."""
        with self.lock:
            slot = self.computing.setdefault(who, threading.Lock())
        with slot:  # one computation per visibility at a time: 25 screens cost one set of queries
            kept = self.kept.get(who)
            if kept is not None and time.monotonic() - kept[0] < max_age_s:
                return kept[1]
            figures = compute()
            with self.lock:
                self.kept[who] = (time.monotonic(), figures)
            return figures


def _cache(request: Request) -> FiguresCache:
    state = request.app.state
    if not hasattr(state, "cockpit_cache"):
        state.cockpit_cache = FiguresCache()
    cache: FiguresCache = state.cockpit_cache
    return cache


@router.get("/api/cockpit", summary="驾驶舱数据 The cockpit's figures", **rule("user"))
def cockpit_figures(request: Request, session: SessionDep, actor: ActorDep) -> dict[str, Any]:
    """Return every figure of the leader's screen for the signed-in user's area, as of today.

    Computed at most every ``GUATU_COCKPIT_CACHE_S`` seconds per area seen (the screens refresh each minute).
    """
    area = actor.area if actor else None
    who = f"{visibility(actor)}|{actor.role if actor else '-'}"  # personal values differ by role: never shared
    if actor is not None and problems.assigned_to(session, actor.username):
        who += f"|{actor.username}"  # their problems are seen outside the area too: figures of their own
    max_age = request.app.state.settings.cockpit_cache_s
    return _cache(request).get(who, max_age, lambda: cockpit.figures(session, area, campaign.today()))
