"""Liveness: answers fast and fixed, touching nothing."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import rule

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="存活检查 Liveness", **rule("public"))
async def healthz() -> dict[str, str]:
    """Return a fixed answer, on the event loop itself: no thread, no connection to wait for."""
    return {"status": "ok"}
