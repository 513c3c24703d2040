"""Fixtures: a real PostGIS test database, migrated once as the owner; each test rolls back.

Every engine the app code gets connects as the app role (guatu_app), so a grant the app
lacks fails a test. Databases are made by the admin and migrated as guatu_owner.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import lru_cache
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from psycopg import sql
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session

from api.auth import ActorDep
from api.deps import actor_settings, get_session, get_sessions
from api.main import create_app
from api.routes.tiles import session_tile_db, tile_db
from layers import migrate
from layers.access import Actor
from spatial import localpg, roles
from spatial.db import make_engine, make_sessionmaker, state
from spatial.settings import LocalPgSettings, db_settings
from tests.accounts import bearer, tokens_for

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"


collect_ignore = ["wells_layer.py"]
"""Importing it declares a layer (for tests/test_new_layer.py only): doctest collection must not."""


@lru_cache(maxsize=1)
def runs_as_roles() -> bool:
    """Start the server (local cluster) and tell whether the tests run as guatu_owner and guatu_app.

    True on the local cluster and on a superuser DATABASE_URL; False on a DATABASE_URL whose
    role cannot make roles: then everything runs as that role, as the operator chose.
    """
    settings = db_settings()
    if not settings.external:
        localpg.ensure_running(LocalPgSettings())
        return True
    return settings.provisions_roles()


def admin_url(name: str) -> str:
    """Return the URL of database NAME as the admin (the superuser, or DATABASE_URL's role)."""
    return db_settings().admin_url(name)


def owner_url(name: str) -> str:
    """Return the URL of database NAME as the owner, the role migrations run as."""
    return db_settings().owner_url(name)


def app_url(name: str) -> str:
    """Return the URL of database NAME as the app connects to it."""
    return db_settings().url(name)


def libpq(url: str) -> str:
    """Return URL (a SQLAlchemy one) for psycopg."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def recreate_database(name: str) -> str:
    """Drop and create database NAME as the admin, owned by guatu_owner; return the app's URL of it."""
    try:
        roles_in_use = runs_as_roles()
        with psycopg.connect(libpq(admin_url("postgres")), autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            if not roles_in_use:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        if roles_in_use:
            roles.provision(admin_url(name), db_settings().role_password_file)
    except (psycopg.OperationalError, RuntimeError) as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no PostGIS server for the tests: {exc}")
    return app_url(name)


def migrate_as_owner(name: str) -> None:
    """Migrate database NAME as the owner and grant the app its privileges, as `guatu db upgrade` does."""
    owner = make_engine(url=owner_url(name))
    try:
        migrate.upgrade(owner, app_role=make_url(app_url(name)).username)
    finally:
        owner.dispose()


@pytest.fixture(autouse=True)
def archive_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep uploaded files of a test in its own temporary folder."""
    from layers.settings import layer_settings

    monkeypatch.setattr(layer_settings(), "archive_dir", tmp_path / "archive")
    return tmp_path / "archive"


@contextmanager
def migrated_database(name: str) -> Iterator[Engine]:
    """Yield the app's engine on database NAME, created afresh and migrated as the owner; dispose of it after."""
    url = recreate_database(name)
    migrate_as_owner(name)
    eng = make_engine(url=url)
    try:
        yield eng
    finally:
        eng.dispose()


@contextmanager
def demo_database(name: str) -> Iterator[Engine]:
    """Yield an engine on database NAME, migrated, holding the committed demo street."""
    from layers import demo

    with migrated_database(name) as eng:
        with Session(eng) as session:
            state(session, ADMIN.settings())
            demo.load(session)
            session.commit()
        yield eng


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    """Return the app's engine (guatu_app) on a fresh, migrated test database."""
    with migrated_database("guatu_test") as eng:
        yield eng


ADMIN = Actor(None, "tests", "admin")
"""Who a test's own session acts as (row-level security needs someone): an administrator."""


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """Yield a session inside an outer transaction that is rolled back after the test, acting as an administrator."""
    with engine.connect() as conn:
        outer = conn.begin()
        with Session(bind=conn, join_transaction_mode="create_savepoint") as sess:
            state(sess, ADMIN.settings())
            yield sess
        outer.rollback()


@pytest.fixture(scope="session")
def tokens(engine: Engine) -> dict[str, str]:
    """Return {username: API token} of the test users (tests/accounts.py) in the test database."""
    return tokens_for(owner_url("guatu_test"), "guatu_test")


def share_session(app: FastAPI, session: Session) -> None:
    """Make every request of APP use SESSION (rolled back after the test), acting as the request's user."""

    def shared(actor: ActorDep) -> Session:
        state(session, actor_settings(actor))
        return session

    async def shared_factory(actor: ActorDep) -> Callable[[], AbstractContextManager[Session]]:
        settings = actor_settings(actor)

        def opened() -> AbstractContextManager[Session]:
            state(session, settings)
            return nullcontext(session)

        return opened

    app.dependency_overrides[get_session] = shared
    app.dependency_overrides[get_sessions] = shared_factory
    app.dependency_overrides[tile_db] = session_tile_db  # tiles too, through the shared session


@pytest.fixture
def client(engine: Engine, session: Session, tokens: dict[str, str]) -> Iterator[TestClient]:
    """Return a test client signed in as an administrator (API token); its requests use the rolled-back session."""
    app = create_app(engine=engine)
    share_session(app, session)
    with TestClient(app, raise_server_exceptions=False, headers=bearer(tokens["admin"])) as test_client:
        yield test_client


def admin_sessions(engine: Engine) -> Callable[[], Session]:
    """Return a session factory on ENGINE whose sessions act as an administrator (row-level security)."""
    factory = make_sessionmaker(engine)

    def opened() -> Session:
        session = factory()
        state(session, ADMIN.settings())
        return session

    return opened


@pytest.fixture(autouse=True, scope="session")
def live_requests_signed_in() -> Iterator[None]:
    """Requests from httpx to a live test server (127.0.0.1:port) carry the signed-in test user's token.

    tests/browser.py's live_server signs in as the served database's administrator; the pages
    opened in Chromium carry the same token. A request that sets its own Authorization (or
    says ``Authorization: none``) is sent as it is; the in-process TestClient is untouched.
    """
    import httpx

    from tests.browser import SIGNED_IN

    def signed(request: httpx.Request) -> None:
        token = SIGNED_IN.get("token")
        if not token or request.url.host != "127.0.0.1" or request.url.port is None:
            return
        given = request.headers.get("authorization")
        if given is None:
            request.headers["Authorization"] = f"Bearer {token}"
        elif given == "none":
            del request.headers["authorization"]

    real_send, real_async_send = httpx.Client.send, httpx.AsyncClient.send

    def send(self: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        signed(request)
        return real_send(self, request, **kwargs)

    async def async_send(self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        signed(request)
        return await real_async_send(self, request, **kwargs)

    with pytest.MonkeyPatch.context() as patch:  # for the whole session: module fixtures serve pages too
        patch.setattr(httpx.Client, "send", send)
        patch.setattr(httpx.AsyncClient, "send", async_send)
        yield


def act_as_admin(conn: Any) -> None:
    """State an administrator on CONN's transaction (a plain connection of a test sees nothing otherwise)."""
    from sqlalchemy import text

    conn.execute(text("SELECT set_config('guatu.role', 'admin', true), set_config('guatu.user', 'tests', true)"))
