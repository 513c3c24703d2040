"""Fixtures: a real PostGIS test database, migrated once; each test rolls back."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session

from api.deps import get_session, get_sessions
from api.main import create_app
from layers import migrate
from spatial import localpg
from spatial.db import make_engine
from spatial.settings import LocalPgSettings, db_settings

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"


def _server_url() -> str:
    settings = db_settings()
    if not settings.external:
        localpg.ensure_running(LocalPgSettings())
    return settings.url()


def recreate_database(name: str) -> str:
    """Drop and create database NAME on the configured server; return its URL."""
    try:
        url = make_url(_server_url())
        admin = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except (psycopg.OperationalError, RuntimeError) as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no PostGIS server for the tests: {exc}")
    return url.set(database=name).render_as_string(hide_password=False)


@pytest.fixture(autouse=True)
def archive_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep uploaded files of a test in its own temporary folder."""
    from layers.settings import layer_settings

    monkeypatch.setattr(layer_settings(), "archive_dir", tmp_path / "archive")
    return tmp_path / "archive"


@contextmanager
def migrated_database(name: str) -> Iterator[Engine]:
    """Yield an engine on database NAME, created afresh and migrated; dispose of it after."""
    eng = make_engine(url=recreate_database(name))
    try:
        migrate.upgrade(eng)
        yield eng
    finally:
        eng.dispose()


@contextmanager
def demo_database(name: str) -> Iterator[Engine]:
    """Yield an engine on database NAME, migrated, holding the committed demo street."""
    from layers import demo

    with migrated_database(name) as eng:
        with Session(eng) as session:
            demo.load(session)
            session.commit()
        yield eng


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    """Return an engine on a fresh, migrated test database."""
    with migrated_database("guatu_test") as eng:
        yield eng


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """Yield a session inside an outer transaction that is rolled back after the test."""
    with engine.connect() as conn:
        outer = conn.begin()
        with Session(bind=conn, join_transaction_mode="create_savepoint") as sess:
            yield sess
        outer.rollback()


@pytest.fixture
def client(engine: Engine, session: Session) -> Iterator[TestClient]:
    """Return a test client whose requests all use the rolled-back session."""
    app = create_app(engine=engine)
    app.dependency_overrides[get_session] = lambda: session
    app.dependency_overrides[get_sessions] = lambda: lambda: nullcontext(session)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
