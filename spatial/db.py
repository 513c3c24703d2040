"""Database plumbing: declarative base, engine and sessions."""

from __future__ import annotations

import collections
import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg.sql
from sqlalchemy import MetaData, create_engine, event, make_url, text
from sqlalchemy import exc as sqlalchemy_exc
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


log = logging.getLogger("guatu.replica")


def make_engine(
    settings: DbSettings | None = None, *, url: str | None = None, connect_timeout: int | None = None
) -> Engine:
    """Return an engine for the configured database (JIT off, bounded statements)."""
    settings = settings or db_settings()
    options = f"-c jit=off -c statement_timeout={settings.statement_timeout_ms}"
    connect_args: dict[str, Any] = {"options": options, "application_name": "guatu"}
    if connect_timeout is not None:
        connect_args["connect_timeout"] = connect_timeout
    return create_engine(
        url or settings.url(),
        pool_size=settings.pool_size,
        pool_timeout=settings.pool_timeout_s,
        pool_pre_ping=True,
        connect_args=connect_args,
    )


def read_url(settings: DbSettings | None = None) -> str | None:
    """Return the standby's libpq URL as the app's role (for psycopg or a psycopg pool), or None without one.

    The one place a reader learns where the standby is (``DATABASE_READ_URL``); whether a given
    read may go there is ``ReadRouter.choose``'s answer.
    """
    url = (settings or db_settings()).read_url()
    if url is None:
        return None
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def make_read_engine(settings: DbSettings | None = None) -> Engine | None:
    """Return an engine on the standby (``DATABASE_READ_URL``), or None when there is none."""
    settings = settings or db_settings()
    url = settings.read_url()
    if url is None:
        return None
    return make_engine(settings, url=url, connect_timeout=settings.read_connect_timeout_s)


_LSN = re.compile(r"[0-9A-F]{1,8}/[0-9A-F]{1,8}")


def parse_lsn(text: str | None) -> int | None:
    """Return the WAL position TEXT (``16/B374D848``) as a number, or None when it is not one.

    >>> parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848, parse_lsn("x"), parse_lsn(None)
    (True, None, None)
    """
    if not text or not _LSN.fullmatch(text.upper()):
        return None
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


PROBE = (
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text,"
    " CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0"
    " ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END"
)
"""The standby's state in one round trip: in recovery, replayed up to, seconds behind (0: all received replayed)."""
PRIMARY_LSN = "SELECT pg_current_wal_flush_lsn()::text"
"""Where the primary's WAL is now: what the standby's replay is measured against."""


@dataclass
class StandbyState:
    """What the last probe of the standby found."""

    at: float = 0.0
    """When (time.monotonic) it was probed; 0 never."""
    up: bool = False
    replayed: int = 0
    lag_s: float = 0.0


class ReadRouter:
    """Choose, per read, the hot standby or the primary.

    The standby answers a read when it is up, within ``max_lag_s`` of the primary, and has
    replayed past ``after`` (the primary's WAL position after the reader's own last write:
    read-your-writes). Anything else, and any failure to reach it, sends the read to the
    primary; a failure keeps reads off the standby for ``retry_s`` and is logged once for
    that interval. The state comes from one query on a connection of the router's own
    (autocommit, outside the pool), repeated at most every ``fresh_s`` (or sooner for a
    writer whose write the standby had not yet replayed). The lag is the standby's own
    (received but not replayed), or the age of the oldest write this process saw committed
    that it has not replayed: a standby cut off from the primary receives nothing and
    reports no lag of its own.
    """

    def __init__(
        self,
        primary: Engine,
        standby: Engine,
        *,
        max_lag_s: float = 30,
        retry_s: float = 30,
        fresh_s: float = 0.5,
        recheck_s: float = 0.01,
    ) -> None:
        self.primary = primary
        self.standby = standby
        self.max_lag_s = max_lag_s
        self.retry_s = retry_s
        self.fresh_s = fresh_s
        self.recheck_s = recheck_s
        self.state = StandbyState()
        self.down_until = 0.0
        self.served = {"standby": 0, "primary": 0}
        self._warned_until = 0.0
        self._written: collections.deque[tuple[int, float]] = collections.deque(maxlen=1000)
        """WAL positions of this process's writes (and when) the standby had not replayed at the last probe."""
        self._lock = threading.Lock()
        self._held: list[Any] = []
        self._primary_conn: Any = None

    def needs_probe(self, after: int | None = None) -> bool:
        """Tell whether ``choose(AFTER)`` would ask the standby first (a round trip, or a connect timeout)."""
        now = time.monotonic()
        if now < self.down_until:
            return False
        state = self.state
        behind = after is not None and state.replayed < after and now - state.at > self.recheck_s
        return now - state.at > self.fresh_s or behind

    def choose(self, after: int | None = None) -> str:
        """Return ``"standby"`` or ``"primary"``: where a read that must see WAL position AFTER may go."""
        now = time.monotonic()
        if now < self.down_until:
            return self.tally("primary")
        state = self.state
        stale = now - state.at > self.fresh_s
        behind = after is not None and state.replayed < after and now - state.at > self.recheck_s
        if stale or behind:
            state = self._probe()
        if not state.up or state.lag_s > self.max_lag_s:
            return self.tally("primary")
        if after is not None and state.replayed < after:
            return self.tally("primary")
        return self.tally("standby")

    def tally(self, where: str) -> str:
        """Count a read sent to WHERE; return WHERE."""
        self.served[where] += 1  # a tally, for the bench and the tests; races lose a count at most
        return where

    def _probe(self) -> StandbyState:
        with self._lock:
            if time.monotonic() - self.state.at <= self.recheck_s or time.monotonic() < self.down_until:
                return self.state  # another thread just probed
            self._sample_primary()  # before the standby: what it has replayed is compared with this
            try:
                if not self._held:
                    self._held.append(self._connect())
                row = self._held[0].execute(PROBE).fetchone()
            except (psycopg.Error, OSError, sqlalchemy_exc.DBAPIError) as exc:
                self._close()
                self.failed(exc)
                return self.state
            recovering, replayed, lag = row if row else (False, None, 0)
            was_up = self.state.up
            if not recovering:
                self.failed(
                    RuntimeError("DATABASE_READ_URL is not a standby in recovery (promoted, or the primary itself)")
                )
                return self.state
            now = time.monotonic()
            done = parse_lsn(replayed) or 0
            while self._written and self._written[0][0] <= done:
                self._written.popleft()
            waited = now - self._written[0][1] if self._written else 0.0  # a receiver cut off reports no lag
            self.state = StandbyState(now, True, done, max(float(lag or 0), waited))
            if not was_up:
                log.info("只读副本可用 read standby up, replayed to %s", replayed)
            if self.state.lag_s > self.max_lag_s:
                self._warn(f"standby {self.state.lag_s:.1f} s behind, beyond GUATU_READ_MAX_LAG_S={self.max_lag_s}")
            return self.state

    def _sample_primary(self) -> None:
        """Note the primary's WAL position now, as if written: a standby that has not replayed it in
        ``max_lag_s`` is behind, whoever wrote (another worker, ``guatu import``, plain SQL) and even when
        its receiver is cut off (it then reports no lag of its own)."""
        try:
            if self._primary_conn is None:
                self._primary_conn = self._connect(self.primary)
            lsn = parse_lsn(str(self._primary_conn.execute(PRIMARY_LSN).fetchone()[0])) or 0
        except (psycopg.Error, OSError, sqlalchemy_exc.DBAPIError, TypeError):
            if self._primary_conn is not None:
                with contextlib.suppress(psycopg.Error):
                    self._primary_conn.close()
            self._primary_conn = None
            return  # the primary's own trouble is answered where it is used
        if not self._written or lsn > self._written[-1][0]:
            self._written.append((lsn, time.monotonic()))

    def _connect(self, engine: Engine | None = None) -> Any:
        pooled = (engine or self.standby).raw_connection()  # the engine's role, options and connect timeout
        pooled.rollback()
        driver: Any = pooled.driver_connection
        pooled.detach()  # never given back: it takes no place in the pool
        driver.autocommit = True
        return driver

    def _close(self) -> None:
        if self._primary_conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._primary_conn.close()
            self._primary_conn = None
        while self._held:
            try:
                self._held.pop().close()
            except psycopg.Error:
                pass

    def failed(self, exc: BaseException) -> None:
        """Keep reads off the standby for ``retry_s`` after EXC, and say so once for that interval."""
        now = time.monotonic()
        self.down_until = now + self.retry_s
        self.state = StandbyState(now, False, self.state.replayed, self.state.lag_s)
        first = (str(exc).strip().splitlines() or [""])[0]
        self._warn(f"{type(exc).__name__}: {first}")

    def _warn(self, why: str) -> None:
        now = time.monotonic()
        if now < self._warned_until:
            return
        self._warned_until = now + self.retry_s
        log.warning(
            "只读副本不可用，读取改由主库承担 read standby unavailable, reads go to the primary for %.0f s: %s",
            self.retry_s,
            why,
        )

    def primary_lsn(self) -> str:
        """Return the primary's current WAL position (after a write: what the writer's reads must see)."""
        with self.primary.connect() as conn:
            lsn = str(conn.exec_driver_sql("SELECT pg_current_wal_flush_lsn()::text").scalar_one())
        self._written.append((parse_lsn(lsn) or 0, time.monotonic()))
        return lsn

    def close(self) -> None:
        """Close the router's own connection."""
        with self._lock:
            self._close()


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
