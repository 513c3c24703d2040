"""Database plumbing: declarative base, engine and sessions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import MetaData, create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from spatial.settings import DbSettings, db_settings

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every guatu table."""

    metadata = MetaData(naming_convention=NAMING)


def make_engine(settings: DbSettings | None = None, *, url: str | None = None) -> Engine:
    """Return an engine for the configured database (JIT off, bounded statements)."""
    settings = settings or db_settings()
    options = f"-c jit=off -c statement_timeout={settings.statement_timeout_ms}"
    return create_engine(
        url or settings.url(),
        pool_size=settings.pool_size,
        pool_pre_ping=True,
        connect_args={"options": options, "application_name": "guatu"},
    )


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Return the session factory bound to ENGINE."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """Yield a session that commits on success and rolls back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
