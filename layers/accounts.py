"""Accounts: users with a role and an area, web sessions, API tokens, and the log of personal-data access.

Passwords are hashed with argon2id; session and API tokens are random and stored only as
their SHA-256 (a stolen table opens nothing). Failed logins are counted per user: after
``LOCK_AFTER`` in a row the account is locked for ``LOCK_MINUTES``.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    case,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, Session, mapped_column

from layers import hierarchy
from layers.access import ROLES, Actor
from spatial.db import Base
from spatial.errors import InvalidInput

LOCK_AFTER = 5
LOCK_MINUTES = 15
SESSION_HOURS = 12
LAST_USED_EVERY = dt.timedelta(minutes=1)
"""A token's last use is written at most this often: a script's every request (every tile, with several
workers, where nothing is cached) would otherwise be a write."""
USERNAME = re.compile(r"^[\w.@-]{2,60}$")
"""Letters of any script (王规划), digits and _.@-: what a street office calls its people."""
MIN_PASSWORD = 10
_HASHER = PasswordHasher()  # argon2id with the library's current parameters


@functools.cache
def _dummy() -> str:
    """Return a hash to check a password against when the name is unknown.

    Made on first use, not at import (argon2 cost every `guatu` command about 0.5 s and 66 MB);
    the app makes it as it starts (:func:`prepare_password_checks`), so no sign-in pays for it.
    """
    return _HASHER.hash("guatu-timing-equaliser")


def prepare_password_checks() -> None:
    """Make the unknown name's hash now: the first sign-in of an unknown name takes no longer than any other."""
    _dummy()


class User(Base):
    """A person who signs in: one role, one area (a unit code; none for an administrator of everything)."""

    __tablename__ = "users"
    __table_args__ = {"comment": "用户 users"}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(60), unique=True)
    display_name: Mapped[str] = mapped_column(String(60), server_default="")
    role: Mapped[str] = mapped_column(String(20))
    area: Mapped[str | None] = mapped_column(String(19), comment="the unit code the role applies in")
    password_hash: Mapped[str] = mapped_column(String(200))
    failed_logins: Mapped[int] = mapped_column(Integer, server_default="0")
    locked_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_login: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    disabled: Mapped[bool] = mapped_column(Boolean, server_default="false")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class WebSession(Base):
    """A signed-in browser: the SHA-256 of its cookie, and the CSRF token its pages send back."""

    __tablename__ = "web_sessions"
    __table_args__ = {"comment": "登录会话 web sessions"}

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class ApiToken(Base):
    """A token for scripts and QGIS (``Authorization: Bearer …``), stored as its SHA-256."""

    __tablename__ = "api_tokens"
    __table_args__ = {"comment": "接口令牌 API tokens"}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_used: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    revoked: Mapped[bool] = mapped_column(Boolean, server_default="false")


class PersonalAccess(Base):
    """One showing of personal data in full: who saw which fields of which features, when, by which route."""

    __tablename__ = "personal_access_log"
    __table_args__ = {
        "comment": "个人信息访问记录 access to unmasked personal data",
        "implicit_returning": False,  # the app writes the log and may not read it back, not even its id
    }

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.clock_timestamp())
    username: Mapped[str] = mapped_column(String(60))
    layer: Mapped[str] = mapped_column(String(40))
    feature_ids: Mapped[list[int]] = mapped_column(ARRAY(Integer))
    fields: Mapped[list[str]] = mapped_column(ARRAY(String(60)))
    route: Mapped[str] = mapped_column(String(200))


def digest(token: str) -> str:
    """Return the stored form of a session or API token."""
    return hashlib.sha256(token.encode()).hexdigest()


def hash_password(password: str) -> str:
    """Return the argon2id hash of PASSWORD."""
    return _HASHER.hash(password)


def _bad(code: str, zh: str, en: str, field: str) -> InvalidInput:
    return InvalidInput.one(code, zh, en, field=field)


def check_new_user(username: str, role_id: str, area: str | None, password: str) -> None:
    """Refuse a user that cannot be created, with a clear error."""
    if not USERNAME.match(username):
        raise _bad(
            "username_invalid",
            "用户名应为 2–60 个汉字、字母、数字或 _.@-（不含空格）",
            "username: 2–60 letters (any script), digits or _.@-, no spaces",
            "username",
        )
    if role_id not in ROLES:
        raise _bad(
            "role_unknown", f"未知角色（可用：{'、'.join(ROLES)}）", f"unknown role (known: {', '.join(ROLES)})", "role"
        )
    if area is None and role_id != "admin":
        raise _bad(
            "area_required",
            "除管理员外，每个用户都要有辖区代码（用 --area 给出县、街道、社区或网格代码）",
            "every role but admin needs an area code (give --area)",
            "area",
        )
    if area is not None and hierarchy.level_of(area) is None:
        raise _bad(
            "area_invalid",
            "辖区代码不是县、街道、社区或网格代码",
            "area is no county, street, community or grid code",
            "area",
        )
    if len(password) < MIN_PASSWORD:
        raise _bad(
            "password_too_short",
            f"密码至少 {MIN_PASSWORD} 位",
            f"password needs {MIN_PASSWORD}+ characters",
            "password",
        )


def add_user(
    session: Session, username: str, role_id: str, area: str | None, password: str, display_name: str = ""
) -> User:
    """Create a user (or replace the role, area and password of an existing one); return it."""
    check_new_user(username, role_id, area, password)
    user = session.execute(select(User).where(User.username == username)).scalar_one_or_none()
    if user is None:
        user = User(username=username)
        session.add(user)
    else:
        end_access(session, user)  # a reset password (or role, or area) ends what the old one opened
    user.role, user.area, user.display_name = role_id, area, display_name or username
    user.password_hash = hash_password(password)
    user.failed_logins, user.locked_until, user.disabled = 0, None, False
    session.flush()
    return user


def end_access(session: Session, user: User) -> None:
    """End USER's web sessions and revoke their API tokens (a reset, a role change, a departure)."""
    session.execute(text("DELETE FROM web_sessions WHERE user_id = :u"), {"u": user.id})
    session.execute(update(ApiToken).where(ApiToken.user_id == user.id).values(revoked=True))


def disable_user(session: Session, username: str) -> bool:
    """Disable USERNAME (no sign-in, no token works); return whether the user exists."""
    user = session.execute(select(User).where(User.username == username)).scalar_one_or_none()
    if user is None:
        return False
    user.disabled = True
    end_access(session, user)
    return True


def actor_of(user: User) -> Actor:
    """Return who USER acts as."""
    return Actor(user.id, user.username, user.role, user.area, user.display_name)


@dataclass(frozen=True)
class LoginResult:
    """What a login attempt came to: a user, or why not (``bad_credentials``, ``locked``)."""

    user: User | None
    refusal: str | None = None
    locked_until: dt.datetime | None = None


def authenticate(session: Session, username: str, password: str) -> LoginResult:
    """Check USERNAME / PASSWORD; count failures and lock after LOCK_AFTER in a row. Commits nothing."""
    now = dt.datetime.now(dt.UTC)
    user = session.execute(select(User).where(User.username == username)).scalar_one_or_none()
    if user is None or user.disabled:
        _verify(_dummy(), password)  # the same time as a real check: no telling which names exist
        return LoginResult(None, "bad_credentials")
    if user.locked_until is not None and user.locked_until > now:
        return LoginResult(None, "locked", user.locked_until)
    if not _verify(user.password_hash, password):
        # One statement counts the failure and locks at the limit: attempts sent at once all count.
        until = now + dt.timedelta(minutes=LOCK_MINUTES)
        reached = User.failed_logins + 1 >= LOCK_AFTER
        locked = session.execute(
            update(User)
            .where(User.id == user.id)
            .values(
                failed_logins=case((reached, 0), else_=User.failed_logins + 1),
                locked_until=case((reached, until), else_=User.locked_until),
            )
            .returning(User.locked_until)
        ).scalar()
        if locked is not None and locked > now:
            return LoginResult(None, "locked", locked)
        return LoginResult(None, "bad_credentials")
    session.execute(update(User).where(User.id == user.id).values(failed_logins=0, locked_until=None, last_login=now))
    return LoginResult(user)


def _verify(stored: str, password: str) -> bool:
    try:
        return _HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def open_session(session: Session, user: User) -> tuple[str, str]:
    """Start a web session for USER; return (cookie token, CSRF token)."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=SESSION_HOURS)
    session.add(WebSession(token_hash=digest(token), user_id=user.id, csrf=csrf, expires_at=expires))
    session.execute(text("DELETE FROM web_sessions WHERE expires_at < now()"))
    return token, csrf


def close_session(session: Session, token: str) -> None:
    """End the web session whose cookie is TOKEN."""
    session.execute(text("DELETE FROM web_sessions WHERE token_hash = :h"), {"h": digest(token)})


def user_of_session(session: Session, token: str) -> tuple[User, str] | None:
    """Return (user, CSRF token) of a live web session, or None."""
    row = session.execute(
        select(User, WebSession.csrf)
        .join(WebSession, WebSession.user_id == User.id)
        .where(WebSession.token_hash == digest(token), WebSession.expires_at > func.now(), User.disabled.is_(False))
    ).first()
    return None if row is None else (row[0], row[1])


def add_token(session: Session, user: User, name: str) -> str:
    """Create an API token for USER; return it (shown once, stored only as its hash)."""
    token = "gt_" + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, name=name[:100], token_hash=digest(token)))
    session.flush()
    return token


def user_of_token(session: Session, token: str) -> User | None:
    """Return the user of a live API token, or None."""
    row = session.execute(
        select(User, ApiToken.id)
        .join(ApiToken, ApiToken.user_id == User.id)
        .where(ApiToken.token_hash == digest(token), ApiToken.revoked.is_(False), User.disabled.is_(False))
    ).first()
    if row is None:
        return None
    stale = or_(ApiToken.last_used.is_(None), ApiToken.last_used < func.now() - LAST_USED_EVERY)
    session.execute(update(ApiToken).where(ApiToken.id == row[1], stale).values(last_used=func.now()))
    return row[0]


def same(a: str, b: str) -> bool:
    """Compare two secrets in constant time."""
    return hmac.compare_digest(a.encode(), b.encode())


def log_personal(session: Session, actor: Actor, layer: str, ids: list[int], fields: list[str], route: str) -> None:
    """Record that ACTOR was shown FIELDS of features IDS of LAYER in full."""
    if ids and fields:  # no RETURNING: the app may write the log, never read it
        session.execute(
            insert(PersonalAccess.__table__).values(  # type: ignore[arg-type]
                username=actor.username, layer=layer, feature_ids=ids, fields=fields, route=route[:200]
            )
        )


def users(session: Session) -> list[dict[str, Any]]:
    """Return every user (no hashes), for `guatu user list`."""
    rows = session.execute(select(User).order_by(User.id)).scalars()
    return [
        {
            "username": u.username,
            "role": u.role,
            "area": u.area,
            "display_name": u.display_name,
            "locked_until": u.locked_until,
            "disabled": u.disabled,
        }
        for u in rows
    ]
