"""Bounded heavy work: lanes that admit a few jobs at a time, a process pool for pure computation.

Heavy work (printing a wall map, a county's boundary check, a big upload) must never
starve everyone else. A :class:`Lane` admits at most ``running`` jobs at once and lets at
most ``waiting`` more queue behind them; anything beyond is refused at once with
:class:`Busy` (and a hint when to retry), so a burst of 25 prints costs the server two
prints' worth of work, not 25. A job can be cancelled through its :class:`CancelToken`
(the client went away): queued jobs are dropped, running ones stop at their next check.

Pure computation that holds the interpreter for seconds (drawing a map) runs in
:func:`in_process`: separate worker processes at a lower CPU priority, recycled after a
few jobs, killed when their job is cancelled or overruns its time.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import hashlib
import logging
import multiprocessing
import os
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

from spatial.errors import Busy, TooMany, Unavailable

T = TypeVar("T")
log = logging.getLogger("guatu.work")
TURN_POLL_S = 0.2
"""How often a queued job asks again for one of its lane's running places held by other processes."""


class Cancelled(Exception):
    """The job's client went away: stop, write nothing more."""


class CancelToken:
    """Tells a running job that nobody waits for it any more; callbacks stop what blocks."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    @property
    def cancelled(self) -> bool:
        """Whether the job was cancelled."""
        return self._event.is_set()

    def cancel(self) -> None:
        """Cancel the job: set the flag and run the callbacks (e.g. cancel a database query)."""
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # noqa: BLE001, S110 - best effort: the job also checks the flag
                pass

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Run CALLBACK when the job is cancelled (at once if it already is)."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return
        callback()

    @contextmanager
    def hook(self, callback: Callable[[], None]) -> Iterator[None]:
        """Run CALLBACK if the job is cancelled while the block runs (e.g. cancel its database query)."""
        self.check()
        with self._lock:
            self._callbacks.append(callback)
        try:
            yield
        finally:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)
        self.check()

    def check(self) -> None:
        """Raise :class:`Cancelled` if the job was cancelled."""
        if self._event.is_set():
            raise Cancelled


def lock_key(*parts: object) -> int:
    """Return the 64-bit advisory lock key of PARTS (guatu's own namespace: a hash, never a small number).

    >>> lock_key("lane", "print", "place", 0) == lock_key("lane", "print", "place", 0)
    True
    >>> lock_key("lane", "print", "place", 0) == lock_key("lane", "print", "place", 1)
    False
    """
    text = "\x1f".join(str(part) for part in ("guatu", *parts))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True)


Held = tuple[int, int]
"""An advisory lock this process holds: (key, the connection's epoch when it was taken)."""


class SharedLocks:
    """Places counted by every process serving one database: PostgreSQL session-level advisory locks.

    One connection of the process's own (outside the pool, autocommit) holds every lock the
    process's jobs took; a process that dies, or loses its connection, lets its places go with
    it: nothing to clean up. PostgreSQL lets one session take a lock it already holds again,
    so the keys this process holds are kept here and never asked for twice. A connection that
    broke is replaced once (its locks were gone with it: the limit may be passed until the jobs
    that held them end), then the error is `Unavailable`.
    """

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect
        self._lock = threading.Lock()
        self._conn: Any = None
        self._mine: set[int] = set()
        self._epoch = 0

    @classmethod
    def of_engine(cls, engine: Any) -> SharedLocks:
        """Return shared locks on a connection ENGINE opens (its role and options), detached from its pool."""

        def connect() -> Any:
            pooled = engine.raw_connection()
            pooled.rollback()
            driver = pooled.driver_connection
            pooled.detach()  # never given back: it takes no place in the pool
            driver.autocommit = True
            return driver

        return cls(connect)

    def _ask(self, sql: str, key: int) -> bool:
        """Return SQL's boolean answer for KEY (call with the lock held); replace a broken connection once."""
        import psycopg

        for attempt in range(2):
            try:
                if self._conn is None:
                    self._conn = self._connect()
                return bool(self._conn.execute(sql, (key,)).fetchone()[0])
            except psycopg.OperationalError as exc:
                self._drop()
                if attempt:
                    log.warning("无法连接数据库以计数任务 cannot reach the database to count jobs: %s", exc)
                    raise Unavailable.one(
                        "database_unavailable",
                        "数据库暂时无法连接，请稍后重试",
                        "the database cannot be reached: retry later",
                    ) from None
        raise AssertionError("unreachable")

    def _drop(self) -> None:
        """Forget the connection and the locks it held (the server let them go with it)."""
        if self._conn is not None:
            with suppress(Exception):
                self._conn.close()
        self._conn = None
        self._mine.clear()
        self._epoch += 1

    def take_any(self, keys: Sequence[int]) -> Held | None:
        """Take the first of KEYS no process holds; return it, or None when every one is held."""
        with self._lock:
            for key in keys:
                if key not in self._mine and self._ask("SELECT pg_try_advisory_lock(%s)", key):
                    self._mine.add(key)
                    return key, self._epoch
        return None

    def release(self, held: Held) -> None:
        """Let HELD go (nothing to do when its connection is gone: so is the lock)."""
        key, epoch = held
        with self._lock:
            if epoch != self._epoch or key not in self._mine:
                return
            self._mine.discard(key)
            with suppress(Unavailable):
                self._ask("SELECT pg_advisory_unlock(%s)", key)

    def held(self) -> int:
        """Return how many locks this process holds."""
        with self._lock:
            return len(self._mine)

    def close(self) -> None:
        """Close the connection: every lock it held is let go."""
        with self._lock:
            self._drop()


async def _take(shared: SharedLocks, keys: Sequence[int]) -> Held | None:
    """Take one of KEYS on a thread; a caller cancelled meanwhile lets what was taken go."""
    future = asyncio.get_running_loop().run_in_executor(None, shared.take_any, keys)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:

        def let_go(done: asyncio.Future[Held | None]) -> None:
            if not done.cancelled() and done.exception() is None and (got := done.result()) is not None:
                _release(shared, got)

        future.add_done_callback(let_go)
        raise


def _release(shared: SharedLocks, held: Held) -> None:
    """Let HELD go on a thread (never cancelled: the lock is always given back)."""
    asyncio.get_running_loop().run_in_executor(None, shared.release, held)


@dataclass
class Lane:
    """One kind of heavy work: RUNNING jobs at once, WAITING more queued, the rest refused with Busy."""

    name: str
    zh: str
    en: str
    running: int
    waiting: int
    retry_after_s: int = 10
    per_client: int = 1_000_000
    """Places one client may hold at once (running or queued)."""
    admitted: int = 0
    """Places held in this process."""
    shared: SharedLocks | None = None
    """When set, the places, the turns and each client's share are also counted across every process."""
    _held: Counter[str] = field(default_factory=Counter, repr=False)
    _slots: asyncio.Semaphore | None = field(default=None, repr=False)
    _threads: ThreadPoolExecutor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.running < 1 or self.waiting < 0:
            raise ValueError(f"lane {self.name}: running must be ≥ 1 and waiting ≥ 0")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run FN(*ARGS) on one of the lane's own threads and return its result.

        The lane's threads are its own, never the pool light requests use (they are not given a
        lower priority: a thread holding the interpreter must run, or the event loop waits on
        it; what is heavy for the CPU runs in worker processes instead). If the caller is
        cancelled, the thread is waited for all the same (it stops at its token's next check):
        what it uses, such as the request's database session, is never freed under it.
        """
        if self._threads is None:
            self._threads = ThreadPoolExecutor(self.running, f"guatu-{self.name}")
        future = asyncio.get_running_loop().run_in_executor(self._threads, functools.partial(fn, *args))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            with suppress(BaseException):
                await future
            raise

    def close(self) -> None:
        """Let the lane's threads go once their jobs end."""
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)

    def busy(self) -> Busy:
        """Return the error answering a job that finds the lane full."""
        error = Busy.one(
            "busy",
            f"{self.zh}任务已满（同时 {self.running} 个，排队 {self.waiting} 个），请 {self.retry_after_s} 秒后重试",
            f"too many {self.en} jobs ({self.running} running, {self.waiting} queued): retry in {self.retry_after_s} s",
            field=self.name,
        )
        error.retry_after = self.retry_after_s
        return error

    def too_many(self) -> TooMany:
        """Return the error answering a client that already holds its share of the lane."""
        error = TooMany.one(
            "too_many_requests",
            f"您已有 {self.per_client} 个{self.zh}任务在进行或排队，请等它们完成后再试",
            f"you already have {self.per_client} {self.en} jobs running or queued: wait for them to finish",
            field=self.name,
        )
        error.retry_after = self.retry_after_s
        return error

    @asynccontextmanager
    async def place(self, client: str | None = None) -> AsyncIterator[None]:
        """Hold a place in the lane (running or queued) for CLIENT; refuse at once when none is free.

        One client holds at most PER_CLIENT places, so nobody can keep a lane full for everyone.
        """
        if client is not None and self._held[client] >= self.per_client:
            raise self.too_many()
        if self.admitted >= self.running + self.waiting:
            raise self.busy()
        taken = await self._shared_place(client)
        self.admitted += 1
        if client is not None:
            self._held[client] += 1
        try:
            yield
        finally:
            self.admitted -= 1
            if client is not None:
                self._held[client] -= 1
                if not self._held[client]:
                    del self._held[client]
            if self.shared is not None:
                for held in taken:
                    _release(self.shared, held)

    async def _shared_place(self, client: str | None) -> list[Held]:
        """Take CLIENT's share and a place counted across processes (nothing without `shared`)."""
        if self.shared is None:
            return []
        taken: list[Held] = []
        if client is not None:
            mine = await _take(
                self.shared, [lock_key("lane", self.name, "client", client, i) for i in range(self.per_client)]
            )
            if mine is None:
                raise self.too_many()
            taken.append(mine)
        try:
            place = await _take(
                self.shared, [lock_key("lane", self.name, "place", i) for i in range(self.running + self.waiting)]
            )
        except BaseException:
            for held in taken:
                _release(self.shared, held)
            raise
        if place is None:
            for held in taken:
                _release(self.shared, held)
            raise self.busy()
        return [*taken, place]

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Wait for one of the RUNNING places, holding it for the block (call within :meth:`place`)."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.running)
        async with self._slots:
            if self.shared is None:
                yield
                return
            keys = [lock_key("lane", self.name, "turn", i) for i in range(self.running)]
            while (turn := await _take(self.shared, keys)) is None:  # another process runs the lane's jobs
                await asyncio.sleep(TURN_POLL_S)
            try:
                yield
            finally:
                _release(self.shared, turn)

    @asynccontextmanager
    async def slot(self, client: str | None = None) -> AsyncIterator[None]:
        """Hold a place and then a turn: the usual way in."""
        async with self.place(client), self.turn():
            yield


NICE = 10
"""How much lower heavy work runs than the server's interactive requests (Unix niceness)."""


def _lower_priority() -> None:
    """Make a worker process yield the CPU to the server (interactive requests come first)."""
    with suppress(OSError):  # a platform without nice
        os.nice(NICE)


_POOLS: dict[tuple[str, int], Any] = {}
_POOLS_LOCK = threading.Lock()
TASKS_PER_WORKER = {"print": 20, "uploads": 500}
"""A worker process is replaced after this many jobs (memory a job grew is given back); a print
grows a lot, a chunk of an upload little."""


def _pool(name: str, workers: int) -> Any:
    """Return the process pool NAME with WORKERS processes (made on first use, shared in the process)."""
    from pebble import ProcessPool

    with _POOLS_LOCK:
        pool = _POOLS.get((name, workers))
        if pool is None or not pool.active:
            pool = ProcessPool(
                max_workers=workers,
                max_tasks=TASKS_PER_WORKER.get(name, 50),
                initializer=_lower_priority,
                context=multiprocessing.get_context("spawn"),  # never fork a server holding threads and sockets
            )
            _POOLS[(name, workers)] = pool
        return pool


def submit(fn: Callable[..., T], *args: Any, pool: str, workers: int, timeout_s: float | None = None) -> Future[T]:
    """Start FN(*ARGS) in a worker process of POOL and return its future (cancel() kills the worker).

    FN and its arguments must be picklable: a module-level function, plain data.
    """
    future: Future[T] = _pool(pool, workers).schedule(fn, args=args, timeout=timeout_s)
    return future


@atexit.register
def _stop_pools() -> None:
    with _POOLS_LOCK:
        for pool in _POOLS.values():
            pool.stop()
            pool.join(timeout=5)
        _POOLS.clear()


async def in_process(
    fn: Callable[..., T], *args: Any, workers: int, timeout_s: float, token: CancelToken | None = None, **kwargs: Any
) -> T:
    """Run FN(*ARGS, **KWARGS) in a print worker process and return its result.

    FN and its arguments must be picklable (a module-level function, plain data). The worker
    is killed when TOKEN is cancelled or the job runs past TIMEOUT_S (then Unavailable).
    """
    future: Future[T] = _pool("print", workers).schedule(fn, args=args, kwargs=kwargs, timeout=timeout_s)
    if token is not None:
        token.on_cancel(lambda: None if future.cancel() else None)
    try:
        return await asyncio.wrap_future(future)
    except FutureTimeout:
        raise Unavailable.one(
            "work_timeout",
            f"任务超过 {timeout_s:.0f} 秒未完成，已中止：请缩小范围后重试",
            f"the job ran past {timeout_s:.0f} s and was stopped: try a smaller scope",
        ) from None
    except CancelledError:
        raise Cancelled from None
