"""The benches' administrator: made as the owner in a bench's database, signed in by an API token.

Every route but /healthz, /login and /docs needs a signed-in user, and the app role sees and
writes nothing unless a transaction states who acts (row-level security). A bench never
weakens the app for that: it makes a user ``bench`` with the administrator's role (everywhere,
as the owner does in tests/accounts.py), and

- sends its API token with every request to guatu (:func:`bearer`);
- states the same actor for its own sessions and connections as the app role: a SQLAlchemy
  session through :func:`act` (what the app does per request), a raw psycopg connection or a
  peer's pool through the startup settings of :func:`options` / :func:`server_settings`, so a
  raw SQL peer sees the very rows guatu's admin sees, and pays for the same policies.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from layers import accounts  # noqa: E402
from layers.access import ADMIN, SETTING_ROLE, SETTING_USER, Actor  # noqa: E402
from spatial.db import make_engine, state  # noqa: E402

USERNAME = "bench"
ACTOR = Actor(None, USERNAME, ADMIN, None, "基准测试 bench")
"""Who the benches act as: an administrator (area: everywhere)."""


def admin_token(owner_url: str) -> str:
    """Return a new API token of the bench's administrator in OWNER_URL's database (made there as the owner).

    The user is made on first use (or set back to an administrator); the bench's earlier tokens
    are revoked, so each run leaves one live token behind.
    """
    engine = make_engine(url=owner_url)
    try:
        with Session(engine) as session:
            user = accounts.add_user(session, USERNAME, ADMIN, None, secrets.token_urlsafe(24), ACTOR.display_name)
            session.execute(update(accounts.ApiToken).where(accounts.ApiToken.user_id == user.id).values(revoked=True))
            token = accounts.add_token(session, user, "bench")
            session.commit()
        return token
    finally:
        engine.dispose()


def bearer(token: str) -> dict[str, str]:
    """Return the header that signs a request in with TOKEN."""
    return {"Authorization": f"Bearer {token}"}


def act(session: Session) -> Session:
    """Make SESSION act as the bench's administrator in every transaction (as the app does per request)."""
    state(session, ACTOR.settings())
    return session


def server_settings() -> dict[str, str]:
    """Return the settings that state the bench's actor for a whole connection (the area: everywhere)."""
    return {SETTING_USER: ACTOR.username, SETTING_ROLE: ACTOR.role}


def options() -> str:
    """Return libpq's ``options`` that state the bench's actor for a connection (psycopg's ``options=``)."""
    return " ".join(f"-c {name}={value}" for name, value in server_settings().items())
