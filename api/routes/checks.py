"""Boundary checks: gaps, overlaps, containment and 一户一区 rules, as JSON or as GeoJSON of the problems."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager, AsyncExitStack, suppress
from typing import Annotated, Any, Literal

import anyio
import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as EnginePoolTimeout
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from api.auth import rule
from api.deps import SessionsDep
from api.errors import STATUS, error_body
from api.work import client_of, heavy, lane
from layers import hierarchy, problems
from layers.checks import (
    DEFAULT_LIMIT,
    RULES,
    Checked,
    check_all,
    checks_context,
    chosen_rules,
    default_workers,
    findings_geojson,
)
from layers.scopes import scope_unit
from spatial.db import query_canceller
from spatial.errors import GuatuError, InvalidInput
from spatial.settings import db_settings
from spatial.topology import Tolerance
from spatial.work import CancelToken

log = logging.getLogger("guatu.checks")
router = APIRouter(tags=["checks"])
SCOPE_PATTERN = hierarchy.scope_pattern()
"""A code of any level of the hierarchy (layers.hierarchy: county, street, community, grid…)."""
MAX_CODES = 500
"""The most feature codes one context request may name."""
CODE = re.compile(r"^[^\x00-\x1f\x7f,]{1,60}$")


MAX_LIMIT = 100_000
"""The most findings one answer lists (every finding is counted all the same)."""


def report(checked: Checked, scope: str | None, as_of: dt.date, tolerance: Tolerance) -> dict[str, Any]:
    """Return the JSON report of a check: exact counts, and its findings listed up to its limit."""
    return {
        "scope": scope,
        "as_of": as_of.isoformat(),
        "tolerance": {"snap_m": tolerance.snap_m, "min_area_m2": tolerance.min_area_m2},
        "summary": summary(checked),
        "listed": listed(checked),
        "findings": [f.as_dict() for f in checked.findings],
    }


def summary(checked: Checked) -> dict[str, Any]:
    """Return the counts of a check: exact, listed or not."""
    return {"errors": checked.errors, "warnings": checked.warnings, "by_rule": checked.by_rule()}


def listed(checked: Checked) -> dict[str, Any]:
    """Return how many findings there are and how many are listed (at most the check's limit), and its pieces."""
    return {
        "total": checked.total,
        "listed": len(checked.findings),
        "limit": checked.limit,
        "truncated": checked.truncated,
        "pieces": checked.pieces,
        "features": checked.features,
    }


def pieces_at_once(request: Request) -> int:
    """Return how many pieces one check runs at once: the cores, never more than the lane's share of the pool.

    Each piece holds a connection of its own: GUATU_CHECK_WORKERS checks at once must leave the
    engine's pool (GUATU_POOL_SIZE) room for every other request.
    """
    lane_size = max(1, int(request.app.state.settings.check_workers))
    return max(1, min(default_workers(), db_settings().pool_size // (lane_size + 1)))


class CheckAsk:
    """What a boundary check is asked for (``/api/checks`` and ``/api/checks/stream`` take the same)."""

    def __init__(
        self,
        scope: Annotated[
            str | None, Query(pattern=SCOPE_PATTERN, description="county, street, community or grid code")
        ] = None,
        rules: Annotated[str | None, Query(description="comma-separated: " + ", ".join(RULES))] = None,
        as_of: Annotated[dt.date | None, Query(description="check the boundaries in force on this date")] = None,
        snap_m: Annotated[float, Query(ge=0, le=10)] = 0.05,
        min_area_m2: Annotated[float, Query(ge=0, le=1e6)] = 1.0,
        format: Annotated[Literal["json", "geojson"], Query()] = "json",
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="findings listed at most (all are counted)")] = (
            DEFAULT_LIMIT
        ),
    ) -> None:
        self.scope = scope
        self.rules = [r.strip() for r in rules.split(",") if r.strip()] if rules else None
        self.day = as_of or dt.date.today()
        self.tolerance = Tolerance(snap_m=snap_m, min_area_m2=min_area_m2)
        self.format = format
        self.limit = limit

    def run(
        self,
        sessions: Callable[[], AbstractContextManager[Session]],
        workers: int,
        token: CancelToken,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[Checked, dict[str, tuple[str, str]]]:
        """Check what was asked (in a worker thread); return the findings and those already registered as problems."""
        checked = check_all(
            sessions,
            scope=self.scope,
            rules=self.rules,
            as_of=self.day,
            tolerance=self.tolerance,
            limit=self.limit,
            token=token,
            progress=progress,
            workers=workers,
        )
        with sessions() as session:
            return checked, problems.registered(session, [f.id for f in checked.findings])  # "已登记" beside each


CheckAskDep = Annotated[CheckAsk, Depends()]


@router.get("/api/checks", summary="边界检查 Boundary checks", **rule("checks"))
async def checks(
    sessions: SessionsDep,
    request: Request,
    ask: CheckAskDep,
) -> Response:
    """Check the boundaries in SCOPE: findings with rule, severity, features, problem geometry and area.

    Checks run a few at a time (a county's can take minutes); beyond the queue the answer is
    503 with Retry-After, and a check whose client left is cancelled. A check runs per
    community, a few at once; at most LIMIT findings are listed (the first by severity,
    scope, rule and codes), the counts in ``summary`` are exact (``listed.truncated`` says when
    some are not listed). ``/api/checks/stream`` answers the same with its progress as it goes.
    """
    workers = pieces_at_once(request)

    def check(token: CancelToken) -> tuple[Checked, dict[str, tuple[str, str]]]:
        return ask.run(sessions, workers, token)

    async def job(token: CancelToken) -> tuple[Checked, dict[str, tuple[str, str]]]:
        return await lane(request, "checks").run(check, token)

    checked, registered = await heavy(request, "checks", job)
    return Response(*_answer(checked, registered, ask.format, ask.scope, ask.day, ask.tolerance))


def _answer(
    checked: Checked,
    registered: dict[str, tuple[str, str]],
    format: str,
    scope: str | None,
    day: dt.date,
    tolerance: Tolerance,
) -> tuple[bytes, int, None, str]:
    """Return the body, status, headers and media type of a check's answer (JSON report or GeoJSON)."""
    if format == "geojson":
        collection = findings_geojson(checked.findings)
        for feature in collection["features"]:
            feature["properties"]["registered"] = _registered(registered, feature["id"])
        collection["summary"] = summary(checked)  # foreign members: the exact counts, how many are listed
        collection["listed"] = listed(checked)
        return orjson.dumps(collection), 200, None, "application/geo+json"
    body = report(checked, scope, day, tolerance)
    for finding in body["findings"]:
        finding["registered"] = _registered(registered, finding["id"])
    return orjson.dumps(body), 200, None, "application/json"


PROGRESS_EVERY_S = 0.5
"""How often a streamed check tells its progress (also when there is none: a dead client is noticed)."""


class _Streamed(StreamingResponse):
    """A streamed check: RELEASE runs once it is sent, cut off or never started (the lane's place, the check)."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], Awaitable[None]], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._release()


def _line(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record) + b"\n"


@router.get(
    "/api/checks/stream", summary="边界检查（带进度）Boundary checks with their progress (NDJSON)", **rule("checks")
)
async def checks_stream(
    sessions: SessionsDep,
    request: Request,
    ask: CheckAskDep,
) -> Response:
    """Check the boundaries in SCOPE as ``/api/checks`` does, answering NDJSON lines as the check goes.

    ``{"type": "progress", "done": …, "total": …}`` (features checked of all) every half
    second, then ``{"type": "result", "status": 200, "body": …}`` (the report, or GeoJSON) or
    ``{"type": "error", "status": …, "body": {"code", "message", …}}``. The request itself
    carries the progress (nothing kept in a server's memory between requests: any worker
    process can serve it). A full lane is a 503 before any line; a client that leaves cancels
    the check.
    """
    chosen_rules(ask.rules)  # an unknown rule is refused before any line
    scope, day, tolerance = ask.scope, ask.day, ask.tolerance
    if scope:

        def known() -> None:
            with sessions() as session:
                scope_unit(session, scope, day)  # an unknown scope is a 404 before any line

        await run_in_threadpool(known)
    work = lane(request, "checks")
    held = AsyncExitStack()
    await held.enter_async_context(work.place(client_of(request)))  # full: 503 before any line
    token = CancelToken()
    told: list[tuple[int, int]] = [(0, 0)]

    workers = pieces_at_once(request)

    def check() -> tuple[Checked, dict[str, tuple[str, str]]]:
        def progress(done: int, total: int) -> None:
            told[0] = (done, total)

        return ask.run(sessions, workers, token, progress)

    running: list[asyncio.Future[Any]] = []

    async def lines() -> AsyncIterator[bytes]:
        async with work.turn():
            token.check()
            task = asyncio.ensure_future(work.run(check))
            running.append(task)
            while True:
                done, _ = await asyncio.wait({task}, timeout=PROGRESS_EVERY_S)
                if done:
                    break
                if await request.is_disconnected():
                    token.cancel()
                yield _line({"type": "progress", "done": told[0][0], "total": told[0][1]})
            try:
                checked, registered = task.result()
            except GuatuError as exc:
                body = error_body([p.as_dict() for p in exc.problems])
                yield _line({"type": "error", "status": STATUS[exc.kind], "body": body})
                return
            except (
                DBAPIError,
                EnginePoolTimeout,
            ) as exc:  # the headers are sent: said as a line, as /api/checks says it
                log.error("county check failed in the database: %s", exc)
                problem = {
                    "code": "database_unavailable",
                    "message": "数据库暂时不可用或检查超时，请稍后重试或缩小范围"
                    " (database unavailable or the check timed out)",
                    "where": {},
                }
                yield _line({"type": "error", "status": 503, "body": error_body([problem])})
                return
            content, status, _, media = _answer(checked, registered, ask.format, scope, day, tolerance)
            yield _line({"type": "progress", "done": told[0][1], "total": told[0][1]})
            yield b'{"type":"result","status":' + str(status).encode() + b',"media_type":"' + media.encode()
            yield b'","body":' + content + b"}\n"

    async def release() -> None:
        token.cancel()  # nobody reads any more (or all was sent): a check still running stops
        for task in running:
            with suppress(BaseException):
                await task
        await held.aclose()

    return _Streamed(lines(), release, media_type="application/x-ndjson; charset=utf-8")


def _registered(registered: dict[str, tuple[str, str]], finding_id: str) -> dict[str, str] | None:
    """Return the problem a finding is registered as ({number, status}), or None."""
    found = registered.get(finding_id)
    return None if found is None else {"number": found[0], "status": found[1]}


@router.get(
    "/api/checks/context", summary="检查结果的底图 What a findings map draws around the findings", **rule("checks")
)
async def checks_context_route(
    sessions: SessionsDep,
    request: Request,
    scope: Annotated[str | None, Query(pattern=SCOPE_PATTERN, description="the scope checked")] = None,
    codes: Annotated[str | None, Query(description=f"comma-separated feature codes (at most {MAX_CODES})")] = None,
    as_of: Annotated[dt.date | None, Query(description="the boundaries in force on this date")] = None,
) -> Response:
    """Return the scope's units (with codes, names and levels) and the features the findings name, as GeoJSON.

    Generic over the layers: whatever layer holds a code is asked; personal fields come masked.
    It runs in the checks' lane (a county's units are many): beyond the queue, 503 with Retry-After.
    """
    named = [c.strip() for c in codes.split(",") if c.strip()] if codes else []
    if len(named) > MAX_CODES:
        raise InvalidInput.one(
            "too_many_codes",
            f"一次最多查询 {MAX_CODES} 个编码（收到 {len(named)} 个）",
            f"at most {MAX_CODES} codes at a time ({len(named)} given)",
            field="codes",
        )
    bad = next((c for c in named if not CODE.match(c)), None)
    if bad is not None:
        raise InvalidInput.one(
            "code_invalid", f"编码格式不对：{bad[:40]}", f"not a feature code: {bad[:40]}", field="codes"
        )

    def read(token: CancelToken) -> bytes:
        with sessions() as session, token.hook(query_canceller(session)):
            return orjson.dumps(checks_context(session, scope=scope, codes=named, as_of=as_of))

    async def job(token: CancelToken) -> bytes:
        return await lane(request, "checks").run(read, token)

    return Response(await heavy(request, "checks", job), media_type="application/json")
