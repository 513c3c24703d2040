"""Liveness: answers fast and fixed, touching nothing."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="存活检查 Liveness")
def healthz() -> dict[str, str]:
    """Return a fixed answer."""
    return {"status": "ok"}
