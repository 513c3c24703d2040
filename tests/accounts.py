"""Test accounts: one user per role (and a planner of another street), each with an API token.

Created (committed) as the owner in a test database, once per database; the demo street's
codes give the areas, so demo-database tests see each role inside and outside its area.
"""

from __future__ import annotations

from functools import lru_cache

import psycopg
from sqlalchemy.orm import Session

from layers import accounts
from layers.hierarchy import level
from spatial.db import make_engine

STREET = "370214001"
OTHER_STREET = "370214002"
COMMUNITY = "370214001005"
GRID = COMMUNITY + "1".zfill(level("grid").digits - len(COMMUNITY))
PASSWORD = "guatu-test-password"
SAMPLE_COMMUNITY = "370214001009"
SAMPLE_GRID = SAMPLE_COMMUNITY + "001"
"""Where tests/samples.py puts its features: surveyor9 and gridman9 work there."""

USERS: dict[str, tuple[str, str | None]] = {
    "admin": ("admin", None),
    "planner": ("planner", STREET),
    "surveyor": ("surveyor", COMMUNITY),
    "gridman": ("grid_manager", GRID),
    "leader": ("leader", STREET),
    "viewer": ("viewer", STREET),
    "planner2": ("planner", OTHER_STREET),
    "surveyor9": ("surveyor", SAMPLE_COMMUNITY),
    "gridman9": ("grid_manager", SAMPLE_GRID),
}
"""username → (role, area)."""


def _database_oid(owner_url: str, name: str) -> int:
    from sqlalchemy import make_url

    dsn = make_url(owner_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        row = conn.execute("SELECT oid FROM pg_database WHERE datname = %s", (name,)).fetchone()
        return int(row[0]) if row else 0


def tokens_for(owner_url: str, name: str) -> dict[str, str]:
    """Return {username: API token} of the test users in database NAME (made on first use of that database)."""
    return _tokens(owner_url, name, _database_oid(owner_url, name))


@lru_cache(maxsize=64)
def _tokens(owner_url: str, name: str, oid: int) -> dict[str, str]:
    engine = make_engine(url=owner_url)
    try:
        with Session(engine) as session:
            out = {}
            for username, (role, area) in USERS.items():
                user = accounts.add_user(session, username, role, area, PASSWORD, username)
                out[username] = accounts.add_token(session, user, "tests")
            session.commit()
        return out
    finally:
        engine.dispose()


def bearer(token: str) -> dict[str, str]:
    """Return the header that authenticates as TOKEN's user."""
    return {"Authorization": f"Bearer {token}"}


ANY_VERSION = {"If-Match": "*"}
"""A write that does not care which version it replaces (tests of other things than concurrency)."""
