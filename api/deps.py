"""Request dependencies as Annotated aliases; the 404 lives here, not in routes.

Every session a request opens states who acts (layers.access.Actor.settings) at the start of
each of its transactions: PostgreSQL's row-level security keeps it inside the user's area.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from api.auth import ActorDep
from layers import generations
from layers.access import Actor, personal_fields
from layers.base import REGISTRY, Layer
from layers.features import layer_or_404
from spatial.db import ReadRouter, parse_lsn, state

READ_AFTER_COOKIE = "guatu_read_after"
"""The primary's WAL position after the client's last write: its reads wait for a standby past it."""
READ_HEADER = "X-Guatu-Read"
"""Says which server answered a read-routed request: ``standby`` or ``primary`` (nothing else)."""
READ_SCOPE_KEY = "guatu.read"


def actor_settings(actor: Actor | None) -> dict[str, str]:
    """Return the transaction settings stating ACTOR (none for nobody: the database then shows nothing)."""
    return actor.settings() if actor is not None else {}


def get_session(request: Request, actor: ActorDep) -> Iterator[Session]:
    """Yield a session acting as the request's user; routes that write commit it themselves, the rest is rolled back."""
    factory: sessionmaker[Session] = request.app.state.sessions
    with factory() as session:
        state(session, actor_settings(actor))
        yield session


async def get_sessions(request: Request, actor: ActorDep) -> Callable[[], AbstractContextManager[Session]]:
    """Return a factory of sessions acting as the request's user, for a route that opens its own in a worker thread.

    Cheaper than ``SessionDep`` (no thread-pool trips to open and close it) for the hot paths.
    """
    factory: sessionmaker[Session] = request.app.state.sessions
    settings = actor_settings(actor)

    @contextmanager
    def opened() -> Iterator[Session]:
        with factory() as session:
            state(session, settings)
            yield session

    return opened


SessionDep = Annotated[Session, Depends(get_session)]
SessionsDep = Annotated[Callable[[], AbstractContextManager[Session]], Depends(get_sessions)]


async def generation_reader(request: Request) -> Callable[[str], int]:
    """Return the app's reader of layer generations on the primary (made on first use; one connection of its own)."""
    return _reader(request.app.state, "generations", request.app.state.engine)


def _reader(app_state: Any, name: str, engine: Engine) -> generations.Reader:
    """Return the app's generation reader NAME on ENGINE (made on first use: one connection of its own)."""
    reader = getattr(app_state, name, None)
    if reader is None:
        reader = generations.Reader(engine)
        setattr(app_state, name, reader)
    return reader


class ReadTarget:
    """Where one request's reads go: chosen once, and moved from the standby to the primary only, never back.

    One way only, because a tile's generation must come from a server at least as far behind
    as the one that renders it: a generation read on the standby with rows from the primary is
    safe (the rows are newer than the label), the other way round is not.
    """

    def __init__(self, request: Request, router: ReadRouter | None, where: str) -> None:
        self.state = request.app.state
        self.router = router
        self.where = where
        self.opened = False
        """Whether a standby session was opened: its rows must then never be labelled by the primary's generation."""

    def fail(self, exc: BaseException) -> None:
        """Send this request's remaining reads, and everyone's for the back-off, to the primary."""
        if self.router is not None:
            self.router.failed(exc)
        self.where = "primary"

    def open_standby(self, settings: dict[str, str]) -> Session | None:
        """Return a session on the standby, connected (a standby gone shows here), or None to read the primary."""
        if self.where != "standby":
            return None
        factory: sessionmaker[Session] = self.state.read_sessions
        session = factory()
        try:
            state(session, settings)
            session.connection()  # begins, and states SETTINGS
        except OperationalError as exc:
            session.close()
            self.fail(exc)
            return None
        except BaseException:
            session.close()
            raise
        self.opened = True
        return session

    def generation(self, layer_id: str, primary: Callable[[str], int]) -> int:
        """Return LAYER_ID's generation as the chosen server has it (PRIMARY reads the primary's)."""
        if self.where == "standby":
            try:
                return _reader(self.state, "read_generations", self.state.read_engine)(layer_id)
            except OperationalError as exc:
                self.fail(exc)
                if self.opened:  # rows read on the standby with the primary's (newer) label: never
                    raise
        return primary(layer_id)


def _logs_personal(request: Request, actor: Actor | None) -> bool:
    """Tell whether reading the path's layer records ACTOR's sight of personal fields (a write: the primary's)."""
    if actor is None or not actor.sees_personal():
        return False
    layer = REGISTRY.get(str(request.path_params.get("layer_id", "")))
    return layer is not None and bool(personal_fields(layer))


async def read_target(request: Request, actor: ActorDep) -> ReadTarget:
    """Return where this request's reads go: the standby unless it is down, lagging, or behind the reader's write.

    A reader whose sight of personal fields is recorded reads the primary: the record is a write.
    Without ``DATABASE_READ_URL``: the primary, at no cost.
    """
    router: ReadRouter | None = getattr(request.app.state, "replica", None)
    if router is None:
        return ReadTarget(request, None, "primary")
    if _logs_personal(request, actor):
        where = router.tally("primary")
    else:
        after = parse_lsn(request.cookies.get(READ_AFTER_COOKIE))
        if router.needs_probe(after):  # a round trip to the standby: off the event loop
            where = await run_in_threadpool(router.choose, after)
        else:
            where = router.choose(after)
    target = ReadTarget(request, router, where)
    request.scope[READ_SCOPE_KEY] = target  # the response says where it was served from
    return target


ReadTargetDep = Annotated[ReadTarget, Depends(read_target)]


async def get_read_session(target: ReadTargetDep, actor: ActorDep, primary: SessionDep) -> AsyncIterator[Session]:
    """Yield a session for a read-only route: the standby's when it may answer (``DATABASE_READ_URL``), else PRIMARY.

    The primary's session costs nothing unless used: it connects on its first statement.
    """
    session = None
    if target.where == "standby":
        session = await run_in_threadpool(target.open_standby, actor_settings(actor))
    if session is None:
        yield primary
        return
    try:
        yield session
    finally:
        await run_in_threadpool(session.close)


async def get_read_sessions(
    target: ReadTargetDep, actor: ActorDep, primary: SessionsDep
) -> Callable[[], AbstractContextManager[Session]]:
    """Return a factory of read-only sessions (standby or primary, as ``get_read_session``) for a worker thread."""
    if target.router is None:
        return primary
    settings = actor_settings(actor)

    @contextmanager
    def opened() -> Iterator[Session]:
        session = target.open_standby(settings)
        if session is None:
            with primary() as session:
                yield session
            return
        with session:
            yield session

    return opened


async def read_generations(
    target: ReadTargetDep, primary: Annotated[Callable[[str], int], Depends(generation_reader)]
) -> Callable[[str], int]:
    """Return the reader of layer generations on the server this request's reads go to."""
    if target.router is None:
        return primary
    return functools.partial(target.generation, primary=primary)


def layer_from_path(layer_id: str) -> Layer:
    """Return the layer named in the path, or answer 404."""
    return layer_or_404(layer_id)


LayerDep = Annotated[Layer, Depends(layer_from_path)]
ReadSessionDep = Annotated[Session, Depends(get_read_session)]
"""A session for a route that only reads: the standby's when it may answer, else the primary's."""
ReadSessionsDep = Annotated[Callable[[], AbstractContextManager[Session]], Depends(get_read_sessions)]
ReadGenerationsDep = Annotated[Callable[[str], int], Depends(read_generations)]
"""Layer generations read where the request's reads go (a cached tile is labelled by its own server's)."""
