"""An asyncio pool of plain psycopg connections for the hot read path (vector tiles): no ORM session, no thread hop.

Its connections are autocommit and carry the settings that never change from one request to
the next in their startup packet (``options``), so a request sends none of them; what does
change (who acts, in which area) is sent with the request's own statements, in one pipelined
round trip (:func:`pipelined`). :func:`read_conninfo` is the one place that says where the
pool connects: pointing tile reads at a read replica is a change there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import make_url

from spatial.settings import DbSettings, db_settings

APPLICATION_NAME = "guatu-tiles"


def read_conninfo(app_url: str) -> str:
    """Return the libpq conninfo the read pool connects with: the app's database URL APP_URL, as libpq writes it.

    The one function that decides where tiles are read (a replica's URL would be returned here).
    """
    return make_url(app_url).set(drivername="postgresql").render_as_string(hide_password=False)


def options(constant: Mapping[str, str], settings: DbSettings | None = None) -> str:
    """Return the ``options`` startup string: the engine's own (JIT off, bounded statements) and CONSTANT ones.

    >>> options({"max_parallel_workers_per_gather": "0"}, DbSettings(statement_timeout_ms=5))
    '-c jit=off -c statement_timeout=5 -c max_parallel_workers_per_gather=0'
    """
    settings = settings or db_settings()
    pairs = {"jit": "off", "statement_timeout": str(settings.statement_timeout_ms), **constant}
    return " ".join(f"-c {name}={value.replace(' ', chr(92) + ' ')}" for name, value in pairs.items())


def make_pool(
    conninfo: str, constant: Mapping[str, str], settings: DbSettings | None = None, timeout_s: float | None = None
) -> AsyncConnectionPool:
    """Return an unopened pool on CONNINFO (``await pool.open()`` in the event loop that will use it).

    As many connections as the engine's pool at most; a request waits for one as long as it
    would for the engine's (``GUATU_POOL_TIMEOUT_S``) or TIMEOUT_S, then psycopg_pool's PoolTimeout;
    a connection attempt gives up after as long.
    """
    settings = settings or db_settings()
    return AsyncConnectionPool(
        conninfo,
        min_size=min(2, settings.pool_size),
        max_size=settings.pool_size,
        timeout=settings.pool_timeout_s if timeout_s is None else timeout_s,
        open=False,
        name=APPLICATION_NAME,
        kwargs={
            "autocommit": True,
            "options": options(constant, settings),
            "application_name": APPLICATION_NAME,
            "connect_timeout": max(1, round(settings.pool_timeout_s if timeout_s is None else timeout_s)),
            "prepare_threshold": None,  # only what is asked for (prepare=True) is prepared
        },
    )


def set_config_sql(names: Sequence[str]) -> str:
    """Return the statement that sets NAMES, transaction-locally, from as many parameters.

    >>> set_config_sql(["a.b", "a.c"])
    "SELECT set_config('a.b', %s, true), set_config('a.c', %s, true)"
    """
    for name in names:
        if not name.replace(".", "").replace("_", "").isalnum():
            raise ValueError(f"not a setting name: {name!r}")
    return "SELECT " + ", ".join(f"set_config('{name}', %s, true)" for name in names)


BEGIN = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
"""One snapshot for everything a request reads: what it reads first (a generation) and what it renders agree."""


async def pipelined(
    conn: psycopg.AsyncConnection[Any], settings: Mapping[str, str], statements: Sequence[tuple[str, Sequence[Any]]]
) -> list[Any]:
    """Run STATEMENTS in one read-only transaction stating SETTINGS, in one round trip; return each one's first row.

    Every statement is prepared on its connection the first time it is used there (the
    parameters differ, the plans are the server's to keep). SETTINGS are set
    transaction-locally: nothing carries over to the connection's next user.
    """
    names = sorted(settings)
    async with conn.pipeline():
        await conn.execute(BEGIN)
        if names:
            await conn.execute(set_config_sql(names), [settings[n] for n in names], prepare=True)
        cursors = [await conn.execute(sql, params, prepare=True) for sql, params in statements]
        await conn.execute("COMMIT")
    return [await cursor.fetchone() for cursor in cursors]


IDENTITY = """
    SELECT concat_ws('/', (SELECT system_identifier FROM pg_control_system()), datname, oid)
    FROM pg_database WHERE datname = current_database()
"""
"""What names a database's tiles on disk: the cluster's system identifier (a new cluster, even on the same
port, has another; a physical standby has its primary's), the database's name and OID."""


class ReadPool:
    """The read pool of one app, opened on first use in the running event loop, closed with the app."""

    def __init__(self, conninfo: str, constant: Mapping[str, str], timeout_s: float | None = None) -> None:
        self.conninfo = conninfo
        self.constant = dict(constant)
        self.timeout_s = timeout_s
        self._pool: AsyncConnectionPool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self.identity: str | None = None
        """The database's identity (``IDENTITY``), read once: one made afresh under the same name differs."""

    async def get(self) -> AsyncConnectionPool:
        """Return the pool, opening it (in this event loop) if needed."""
        loop = asyncio.get_running_loop()
        if self._pool is not None and self._loop is loop:
            return self._pool
        if self._lock is None or self._loop is not loop:
            self._lock, self._loop, self._pool = asyncio.Lock(), loop, None  # a pool serves one loop only
        async with self._lock:
            if self._pool is None:
                pool = make_pool(self.conninfo, self.constant, timeout_s=self.timeout_s)
                try:
                    await pool.open()
                    async with pool.connection() as conn:
                        row = await (await conn.execute(IDENTITY)).fetchone()
                except BaseException:
                    await pool.close()  # not left behind, connecting in the background
                    raise
                self.identity = str(row[0]) if row else ""
                self._pool = pool
        return self._pool

    async def close(self) -> None:
        """Close the pool (a later request opens another)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
