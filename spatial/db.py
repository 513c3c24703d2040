"""Database plumbing: declarative base, engine and sessions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import psycopg.sql
from sqlalchemy import MetaData, create_engine, event, make_url, text
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


def ensure_database(url: str) -> bool:
    """Create the database URL names if it does not exist; return whether it was created.

    Connects to the server's `postgres` database for that; a role without CREATEDB gets
    the server's refusal as an error.
    """
    target = make_url(url)
    admin = target.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target.database,)).fetchone():
            return False
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(target.database or "")))
        return True


def make_engine(settings: DbSettings | None = None, *, url: str | None = None) -> Engine:
    """Return an engine for the configured database (JIT off, bounded statements)."""
    settings = settings or db_settings()
    options = f"-c jit=off -c statement_timeout={settings.statement_timeout_ms}"
    return create_engine(
        url or settings.url(),
        pool_size=settings.pool_size,
        pool_timeout=settings.pool_timeout_s,
        pool_pre_ping=True,
        connect_args={"options": options, "application_name": "guatu"},
    )


def query_canceller(session: Session) -> Callable[[], None]:
    """Return a function that cancels the statement SESSION's connection is running (callable from any thread)."""
    driver: Any = session.connection().connection.driver_connection
    return lambda: driver.cancel_safe(timeout=5)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Return the session factory bound to ENGINE."""
    return sessionmaker(bind=engine, expire_on_commit=False)


SETTINGS_KEY = "guatu_settings"
"""Where a session keeps the settings stated at the start of each of its transactions."""


def _set_config_sql(settings: dict[str, str]) -> tuple[str, dict[str, str]]:
    names = sorted(settings)
    calls = ", ".join(f"set_config(:n{i}, :v{i}, true)" for i in range(len(names)))
    params = {f"n{i}": name for i, name in enumerate(names)} | {f"v{i}": settings[name] for i, name in enumerate(names)}
    return f"SELECT {calls}", params


def state(session: Session, settings: dict[str, str]) -> None:
    """Make SETTINGS (custom ``a.b`` settings) hold in SESSION's current and every later transaction.

    Transaction-local (``set_config(…, true)``): a pooled connection carries nothing over to
    the next session. Row-level security policies read them (who acts, in which area).
    """
    session.info[SETTINGS_KEY] = dict(settings)
    if session.in_transaction() and settings:
        sql, params = _set_config_sql(settings)
        session.execute(text(sql), params)


@event.listens_for(Session, "after_begin")
def _state_settings(session: Session, _transaction: Any, connection: Any) -> None:
    """State the session's settings as each of its transactions begins."""
    settings = session.info.get(SETTINGS_KEY)
    if settings:
        sql, params = _set_config_sql(settings)
        connection.execute(text(sql), params)
