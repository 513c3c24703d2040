"""Heavy requests (print, boundary checks, uploads) run in their lane and stop when the client leaves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from fastapi import Request
from sqlalchemy.engine import Engine

from api.settings import ApiSettings
from spatial.work import Cancelled, CancelToken, Lane, SharedLocks

T = TypeVar("T")
POLL_S = 0.25
"""How often a waiting heavy request asks whether its client is still there."""


def make_lanes(settings: ApiSettings) -> dict[str, Lane]:
    """Return the app's lanes of heavy work, sized by the settings."""
    each = settings.per_client
    return {
        "print": Lane("print", "挂图打印", "print", settings.print_workers, settings.print_queue, 15, each),
        "checks": Lane("checks", "边界检查", "boundary check", settings.check_workers, settings.check_queue, 10, each),
        "uploads": Lane("uploads", "上传", "upload", settings.upload_workers, settings.upload_queue, 30, each),
        "exports": Lane("exports", "表格导出", "export", settings.print_workers, settings.print_queue, 15, each),
    }


def shares_lanes(settings: ApiSettings) -> bool:
    """Whether the lanes' places are counted across processes: asked for, or by default with several workers."""
    return settings.shared_lanes if settings.shared_lanes is not None else settings.workers > 1


def share_lanes(lanes: dict[str, Lane], engine: Engine) -> SharedLocks:
    """Count LANES' places, turns and per-client shares across every process serving ENGINE's database.

    Each lane keeps its limits as set (``GUATU_PRINT_WORKERS`` …): they hold for all the
    workers together, not per worker.
    """
    shared = SharedLocks.of_engine(engine)
    for each in lanes.values():
        each.shared = shared
    return shared


def client_of(request: Request) -> str | None:
    """Return who a lane's places are counted by: the signed-in user (a per-user quota), else the client's address.

    The address is the real one behind the trusted proxy.
    """
    actor = getattr(request.state, "actor", None)
    if actor is not None:
        return f"user:{actor.username}"
    return request.client.host if request.client else None


def lane(request: Request, name: str) -> Lane:
    """Return the app's lane NAME."""
    lanes: dict[str, Lane] = request.app.state.lanes
    return lanes[name]


async def _watch(request: Request, token: CancelToken, task: asyncio.Task[object]) -> None:
    """Cancel TOKEN and TASK once the client has gone away."""
    while not token.cancelled:
        if await request.is_disconnected():
            token.cancel()
            task.cancel()
            return
        await asyncio.sleep(POLL_S)


@asynccontextmanager
async def watched(request: Request) -> AsyncIterator[CancelToken]:
    """Yield a token that is cancelled, with the request's task, once the client goes away.

    Start it only once the request body has been read (it listens for the disconnect).
    The task's cancellation becomes :class:`Cancelled` (answered 499: nobody reads it).
    """
    token = CancelToken()
    task = asyncio.current_task()
    assert task is not None
    watcher = asyncio.create_task(_watch(request, token, task))
    try:
        yield token
    except asyncio.CancelledError:
        if token.cancelled and task.uncancel() == 0:
            raise Cancelled from None  # our own doing: the client left
        raise
    finally:
        watcher.cancel()


async def heavy(request: Request, name: str, job: Callable[[CancelToken], Awaitable[T]]) -> T:
    """Run JOB in lane NAME: refused at once when the lane is full, cancelled when the client leaves.

    A job waiting for its turn is dropped when its client goes away; a running one is told
    through its token (a worker process is killed; a thread stops at its next check).
    """
    async with watched(request) as token, lane(request, name).slot(client_of(request)):
        token.check()
        return await job(token)
