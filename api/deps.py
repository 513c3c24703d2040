"""Request dependencies as Annotated aliases; the 404 lives here, not in routes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from layers.base import Layer
from layers.features import layer_or_404


def get_session(request: Request) -> Iterator[Session]:
    """Yield a session; routes that write commit it themselves, anything else is rolled back."""
    factory: sessionmaker[Session] = request.app.state.sessions
    with factory() as session:
        yield session


async def get_sessions(request: Request) -> Callable[[], AbstractContextManager[Session]]:
    """Return the session factory, for a route that opens its session in its own thread-pool trip.

    Cheaper than ``SessionDep`` (no thread-pool trips to open and close it) for the hot paths.
    """
    factory: sessionmaker[Session] = request.app.state.sessions
    return factory


def layer_from_path(layer_id: str) -> Layer:
    """Return the layer named in the path, or answer 404."""
    return layer_or_404(layer_id)


SessionDep = Annotated[Session, Depends(get_session)]
LayerDep = Annotated[Layer, Depends(layer_from_path)]
SessionsDep = Annotated[Callable[[], AbstractContextManager[Session]], Depends(get_sessions)]
