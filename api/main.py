"""Build the app in a function; `app` exists only for uvicorn."""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import errors
from api.auth import LoginLimiter
from api.deps import READ_AFTER_COOKIE, READ_HEADER, READ_SCOPE_KEY
from api.guards import RefuseNul
from api.routes import (
    accounts,
    checks,
    cockpit,
    contracts,
    exports,
    features,
    health,
    layers,
    ogc,
    ogc_tiles,
    pages,
    printing,
    problems,
    qgis,
    search,
    stats,
    tiles,
    uploads,
    workbooks,
)
from api.routes import ledger as ledger_routes
from api.security import CsrfGuard, SecurityHeaders, TrustedHosts
from api.settings import ApiSettings
from api.work import make_lanes, share_lanes, shares_lanes
from layers import accounts as account_store
from layers.base import REGISTRY
from spatial.db import ReadRouter, make_engine, make_read_engine, make_sessionmaker
from spatial.roles import refuse_superuser
from spatial.settings import db_settings
from web import assets

log = logging.getLogger("guatu")


def _description() -> str:
    """Return the API's one-line description, naming the declared layers."""
    declared = sorted(REGISTRY.values(), key=lambda layer: layer.order)
    zh = "、".join(layer.zh for layer in declared)
    en = ", ".join(layer.en.lower() for layer in declared)
    return f"集体资源一张图：{zh}。One map of collective resources: {en}."


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class ReadYourWrites:
    """With a read standby: say which server answered a read, and keep each writer's reads behind its writes.

    After a request that may have written (any method but GET, HEAD, OPTIONS, answered below
    400) the primary's WAL position goes back in a cookie; that client's reads go to the
    standby only once it has replayed past it (``api.deps.read_target``). The cookie travels
    with the client, so any worker process honours it. It says nothing but a WAL position.
    """

    def __init__(self, app: ASGIApp, *, secure: bool, max_age: int) -> None:
        self.app = app
        self.secure = secure
        self.max_age = max_age

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; mark the answer's start."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        router: ReadRouter | None = getattr(scope["app"].state, "replica", None)
        wrote = scope["method"] not in SAFE_METHODS

        async def marked(message: Message) -> None:
            if message["type"] == "http.response.start" and router is not None:
                headers = MutableHeaders(scope=message)
                target = scope.get(READ_SCOPE_KEY)
                if target is not None:
                    headers[READ_HEADER] = target.where
                if wrote and message["status"] < 400:
                    try:
                        lsn = await run_in_threadpool(router.primary_lsn)
                    except Exception:  # noqa: BLE001 - the write stands; the next reads may lag a little
                        log.warning("主库 WAL 位置读取失败 could not read the primary's WAL position", exc_info=True)
                    else:
                        cookie = f"{READ_AFTER_COOKIE}={lsn}; Max-Age={self.max_age}; Path=/; HttpOnly; SameSite=Lax"
                        headers.append("set-cookie", cookie + ("; Secure" if self.secure else ""))
            await send(message)

        await self.app(scope, receive, marked)


class GuatuApp(FastAPI):
    """FastAPI with `SecurityHeaders` around its whole stack: answers of the 500 handler get them too."""

    def build_middleware_stack(self) -> ASGIApp:
        """Return Starlette's stack (error handling outermost) inside SecurityHeaders."""
        return SecurityHeaders(super().build_middleware_stack())


class WorkerHeader:
    """Say which server process answered, in `X-Guatu-Worker` (GUATU_WORKER_HEADER: tests, benches)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.value = str(os.getpid()).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; add the header to its answer."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def said(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-guatu-worker", self.value)]
            await send(message)

        await self.app(scope, receive, said)


def _replica(app: FastAPI, primary: Engine, standby: Engine | None) -> None:
    """Route read-only work to STANDBY (a hot standby of PRIMARY) when there is one."""
    app.state.read_engine = standby
    if standby is None:
        app.state.replica = None
        return
    db = db_settings()
    app.state.read_sessions = make_sessionmaker(standby)
    app.state.replica = ReadRouter(primary, standby, max_lag_s=db.read_max_lag_s, retry_s=db.read_retry_s)


def create_app(
    settings: ApiSettings | None = None, *, engine: Engine | None = None, read_engine: Engine | None = None
) -> FastAPI:
    """Return the guatu app; ENGINE defaults to one built from the settings at start-up.

    READ_ENGINE (a hot standby's; by default one from ``DATABASE_READ_URL`` when the app
    builds its own engine) takes the read-only routes' work.
    """
    settings = settings or ApiSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = engine is None
        bound = engine or make_engine()
        if own:
            refuse_superuser(bound)  # never serve as a superuser: an injection would reach the host
        app.state.engine = bound
        app.state.sessions = make_sessionmaker(bound)
        shared = share_lanes(app.state.lanes, bound) if shares_lanes(settings) else None
        await run_in_threadpool(account_store.prepare_password_checks)
        standby = read_engine if read_engine is not None or not own else make_read_engine()
        if standby is not None and read_engine is None:
            try:
                refuse_superuser(standby)  # the same rule on the standby
            except OperationalError as exc:  # down now: the reads go to the primary until it answers
                log.warning("只读副本暂不可达 read standby not reachable at start: %s", exc.orig)
        _replica(app, bound, standby)
        if standby is not None:
            log.info("只读副本 read standby: %s", standby.url.render_as_string(hide_password=True))
        missing = assets.missing_assets()
        if missing:
            log.warning(
                "前端资源缺失 front-end assets missing in %s (%s): the map and /docs cannot load them; "
                "in a checkout run `make assets`, and build a wheel only after it",
                assets.VENDOR_DIR,
                ", ".join(missing),
            )
        yield
        for each in app.state.lanes.values():
            each.close()
        if shared is not None:
            shared.close()
        if app.state.replica is not None:
            app.state.replica.close()
        if own:
            bound.dispose()
            if standby is not None:
                standby.dispose()

    app = GuatuApp(
        title="guatu 挂图 API",
        description=_description(),
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.lanes = make_lanes(settings)
    # What a process counts alone is shared out between the workers: the sign-in attempts an
    # address may make (the per-user lockout is the database's), the password checks at once.
    throttle = LoginLimiter()
    app.state.login_limiter = LoginLimiter(max(1, math.ceil(throttle.limit / settings.workers)), throttle.window_s)
    app.state.hashing = asyncio.Semaphore(max(1, 2 // settings.workers))
    if engine is not None:  # tests hand in their engine; make it usable without lifespan too
        app.state.engine = engine
        app.state.sessions = make_sessionmaker(engine)
        _replica(app, engine, read_engine)
    errors.install(app)
    app.add_middleware(CsrfGuard, public_url=settings.public_url)  # the last added runs first
    app.add_middleware(RefuseNul)
    app.add_middleware(TrustedHosts, hosts=settings.host_names())
    if settings.worker_header:
        app.add_middleware(WorkerHeader)
    lag = db_settings().read_max_lag_s
    app.add_middleware(ReadYourWrites, secure=settings.secure_cookies, max_age=int(max(60, 4 * lag)))
    app.include_router(health.router)
    app.include_router(layers.router)
    app.include_router(features.router)
    app.include_router(features.ops_router)
    app.include_router(accounts.router)
    app.include_router(uploads.router)
    app.include_router(checks.router)
    app.include_router(tiles.router)
    app.include_router(ogc.router)
    app.include_router(stats.router)
    app.include_router(cockpit.router)
    app.include_router(printing.router)
    app.include_router(workbooks.router)
    app.include_router(exports.router)
    app.include_router(ogc_tiles.router)
    app.include_router(qgis.router)
    app.include_router(search.router)
    app.include_router(contracts.router)
    app.include_router(problems.router)
    app.include_router(ledger_routes.router)
    app.include_router(ledger_routes.pages)
    app.include_router(pages.router)
    app.mount(assets.STATIC_URL, StaticFiles(directory=assets.STATIC_DIR), name="static")
    return app


def app_factory() -> FastAPI:
    """Return the app for `uvicorn --factory api.main:app_factory`."""
    return create_app()
