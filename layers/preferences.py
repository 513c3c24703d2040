"""Per-user preferences (the ledger's columns: which are shown, in which order), each user's own.

Row-level security (layers.access.declared_policies) keeps every read and write of the app
role to the rows of the user the request states: nobody reads another's choices, not even
an administrator. A value is small JSON (``MAX_BYTES``); a key names what it is for.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import orjson
from sqlalchemy import DateTime, ForeignKey, String, func, select
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from layers.access import PREFERENCES, Actor
from spatial.db import Base
from spatial.errors import InvalidInput, NotFound

MAX_BYTES = 8_192
"""The largest value kept, as compact JSON: column lists, never documents."""
KEY = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,59}$")
"""What a key looks like (ledger.columns.<layer id>)."""


class UserPreference(Base):
    """One preference of one user, as JSON."""

    __tablename__ = PREFERENCES
    __table_args__ = {"comment": "用户偏好 per-user preferences (ledger columns)"}

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(60), primary_key=True)
    value: Mapped[Any] = mapped_column(JSONB)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


def check_key(key: str) -> str:
    """Return KEY if it names a preference, else raise ``preference_key_invalid``."""
    if not KEY.fullmatch(key):
        raise InvalidInput.one(
            "preference_key_invalid",
            "偏好名称无效（小写字母、数字及 _.:-，至多 60 个字符）",
            "a preference key is lowercase letters, digits and _.:- (at most 60)",
            field="key",
        )
    return key


def read(session: Session, actor: Actor, key: str) -> Any:
    """Return the ACTOR's preference KEY, or raise NotFound."""
    mine = (UserPreference.user_id == actor.user_id, UserPreference.key == check_key(key))
    found = session.execute(select(UserPreference.value).where(*mine)).first()
    if found is None:
        raise NotFound.one("preference_not_found", f"没有偏好 {key}", f"no preference {key!r}", field="key")
    return found[0]


def write(session: Session, actor: Actor, key: str, value: Any) -> None:
    """Store VALUE as ACTOR's preference KEY (replacing it); refuse a value over ``MAX_BYTES``."""
    check_key(key)
    size = len(orjson.dumps(value))
    if size > MAX_BYTES:
        raise InvalidInput.one(
            "preference_too_large",
            f"偏好过大（{size} 字节，上限 {MAX_BYTES}）",
            f"preference too large ({size} bytes, at most {MAX_BYTES})",
            field="value",
        )
    if actor.user_id is None:
        raise InvalidInput.one("preference_no_user", "该账号不能保存偏好", "this account keeps no preferences")
    stmt = insert(UserPreference).values(user_id=actor.user_id, key=key, value=value)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=[UserPreference.user_id, UserPreference.key],
            set_={"value": stmt.excluded.value, "updated_at": func.now()},
        )
    )
