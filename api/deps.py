"""Request dependencies as Annotated aliases; the 404 lives here, not in routes.

Every session a request opens states who acts (layers.access.Actor.settings) at the start of
each of its transactions: PostgreSQL's row-level security keeps it inside the user's area.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from api.auth import ActorDep
from layers.access import Actor
from layers.base import Layer
from layers.features import layer_or_404
from spatial.db import state


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


def layer_from_path(layer_id: str) -> Layer:
    """Return the layer named in the path, or answer 404."""
    return layer_or_404(layer_id)


SessionDep = Annotated[Session, Depends(get_session)]
LayerDep = Annotated[Layer, Depends(layer_from_path)]
SessionsDep = Annotated[Callable[[], AbstractContextManager[Session]], Depends(get_sessions)]
