"""Request dependencies as Annotated aliases; the 404 lives here, not in routes."""

from __future__ import annotations

from collections.abc import Iterator
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


def layer_from_path(layer_id: str) -> Layer:
    """Return the layer named in the path, or answer 404."""
    return layer_or_404(layer_id)


SessionDep = Annotated[Session, Depends(get_session)]
LayerDep = Annotated[Layer, Depends(layer_from_path)]
