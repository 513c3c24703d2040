"""An API token's last use is written at most once a minute: a script's every request is not a write."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from layers import accounts


def test_a_tokens_last_use_is_written_at_most_once_a_minute(session: Session, tokens: dict[str, str]) -> None:
    token = tokens["admin"]
    row = accounts.ApiToken.token_hash == accounts.digest(token)
    now = session.execute(select(func.now())).scalar_one()

    def last_used_after_a_request(set_to: dt.datetime) -> dt.datetime:
        session.execute(update(accounts.ApiToken).where(row).values(last_used=set_to))
        assert accounts.user_of_token(session, token) is not None
        return session.execute(select(accounts.ApiToken.last_used).where(row)).scalar_one()

    half_a_minute_ago = now - dt.timedelta(seconds=30)
    assert last_used_after_a_request(half_a_minute_ago) == half_a_minute_ago  # recent: not written again
    assert last_used_after_a_request(now - dt.timedelta(minutes=2)) == now  # stale: written
