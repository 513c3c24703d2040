"""How guatu is served by uvicorn: slow clients cut off, connections capped, limits said.

uvicorn's h11 protocol has no deadline for a client that never finishes its request headers,
nor for a request body that stalls; `timeout_keep_alive` only runs between requests. A few
thousand such clients held a server's every file descriptor. `GuardedH11Protocol` adds the
two deadlines and a cap on open connections; `server_config` builds the `uvicorn.Config`
that `guatu serve`, the tests' live server and the benches all run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import uvicorn
from uvicorn._types import ASGIReceiveCallable, ASGIReceiveEvent, ASGISendCallable, Scope
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from api.settings import ApiSettings

log = logging.getLogger("guatu.server")

FD_RESERVE = 128
"""Open files kept back from client connections: the database pool, logs, static files, sockets."""
LOG_EVERY_S = 5.0
"""A repeated warning (refused or cut connections) is said at most this often, with its count."""
WORKER_HEALTHCHECK_S = 60
"""A worker that does not answer its supervisor's ping this long is killed and replaced. Generous: a worker
importing the app on a busy machine answers only once its imports are done (5 s, uvicorn's default, was
seen to kill every new worker in turn on a loaded 2-core machine)."""
NOISY_UVICORN = ("Exceeded concurrency limit.", "Invalid HTTP request received.", "Unsupported upgrade request.")
"""uvicorn's per-request warnings that a flood would repeat thousands of times a second."""


@dataclass(frozen=True)
class Guard:
    """The limits each connection of a guarded server enforces."""

    header_timeout_s: float
    body_timeout_s: float
    max_connections: int
    max_header_bytes: int = 16 * 1024

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> Guard:
        """Return the guard the settings ask for."""
        return cls(
            settings.header_timeout_s, settings.body_timeout_s, settings.max_connections, settings.max_header_bytes
        )


class Tally:
    """Count events of a kind; log a warning with the count at most once every LOG_EVERY_S seconds."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.count = 0
        self.said_at = -LOG_EVERY_S

    def add(self, **values: object) -> None:
        """Count one event; say the count so far when the last warning is old enough."""
        self.count += 1
        now = time.monotonic()
        if now - self.said_at >= LOG_EVERY_S:
            log.warning(self.message.format(n=self.count, **values))
            self.count, self.said_at = 0, now


class Tallies:
    """The tallies of one server: connections refused, and cut for slow headers or a stalled body."""

    def __init__(self) -> None:
        self.refused = Tally(
            "连接数已达上限 {limit}：{n} 个新连接被立即关闭"
            " (max_connections={limit} reached: {n} new connections closed)"
        )
        self.header = Tally(
            "{n} 个连接未在 {limit} 秒内发完请求头，已断开 (request header timeout {limit} s: {n} connections closed)"
        )
        self.body = Tally(
            "{n} 个请求体停顿超过 {limit} 秒，已断开 (request body stalled over {limit} s: {n} connections closed)"
        )


class Repeats(logging.Filter):
    """Let each of MESSAGES through at most once every LOG_EVERY_S seconds, saying how many were held back."""

    def __init__(self, messages: tuple[str, ...]) -> None:
        super().__init__()
        self.messages = messages
        self.said_at: dict[str, float] = {}
        self.held: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """Return False for a repeat inside the interval."""
        text = record.msg
        if not isinstance(text, str) or text not in self.messages:
            return True
        now = time.monotonic()
        if now - self.said_at.get(text, -LOG_EVERY_S) < LOG_EVERY_S:
            self.held[text] = self.held.get(text, 0) + 1
            return False
        held = self.held.pop(text, 0)
        if held:
            record.msg = f"{text} (另有 {held} 次未记 {held} more not logged)"
        self.said_at[text] = now
        return True


async def _header_too_large(send: ASGISendCallable, limit: int) -> None:
    """Answer 431 in the app's error form: the request line and headers pass LIMIT bytes."""
    message = f"请求头超过 {limit} 字节 (request headers larger than {limit} bytes)"
    problem = {"code": "headers_too_large", "message": message, "where": {}}
    body = json.dumps({**problem, "errors": [problem]}, ensure_ascii=False).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 431, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class GuardedConfig(Config):
    """A uvicorn config that runs `GuardedH11Protocol` and carries its guard.

    With several workers it is handed to each worker process (pickled): `load`, which every
    server process calls before it serves, sets up what is per process.
    """

    def __init__(self, app: Any, *, guard: Guard, switch_interval_s: float | None = None, **options: Any) -> None:
        super().__init__(app, http=GuardedH11Protocol, ws="none", **options)
        self.guard = guard
        self.tallies = Tallies()
        self.switch_interval_s = switch_interval_s

    def load(self) -> None:
        """Load the app; in this process, quiet uvicorn's repeated warnings and prefer the event loop."""
        super().load()
        logging.getLogger("uvicorn.error").addFilter(_UVICORN_REPEATS)
        if self.switch_interval_s is not None:
            sys.setswitchinterval(self.switch_interval_s)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline, a body stall timeout and a connection cap.

    - The request headers must be complete within `header_timeout_s` of the connection opening
      or of the previous response ending: an absolute deadline, so a client trickling a byte
      every few seconds is cut all the same.
    - While the app waits for the request body, and reading is not paused by uvicorn's own flow
      control, `body_timeout_s` without a byte closes the connection; the app's `receive()`
      then answers `http.disconnect`.
    - A connection beyond `max_connections` is closed as soon as it is accepted.

    Cut and refused connections are counted and said in one throttled warning, never one line
    (nor a traceback) each.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        if isinstance(config, GuardedConfig):
            self.guard, self.tallies = config.guard, config.tallies
        else:  # named on uvicorn's command line (`--http api.server:GuardedH11Protocol`)
            self.guard, self.tallies = Guard.from_settings(ApiSettings()), _CLI_TALLIES
        self.inner_app = self.app
        self.app = self.guarded_app
        self.refused = False
        self.header_timer: asyncio.TimerHandle | None = None
        self.body_timer: asyncio.TimerHandle | None = None
        self.body_waiting = False
        self.last_read = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Refuse the connection when the server is full; else start the header deadline."""
        if len(self.connections) >= self.guard.max_connections:
            self.refused = True
            transport.abort()
            self.tallies.refused.add(limit=self.guard.max_connections)
            return
        super().connection_made(transport)
        self.start_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the timers; a refused connection has nothing else to undo."""
        if self.refused:
            return
        self.stop_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Note when bytes last came, then let uvicorn parse them."""
        self.last_read = self.loop.time()
        super().data_received(data)

    def handle_events(self) -> None:
        """Parse what came; a new request's complete headers stop the header deadline."""
        before = self.cycle
        super().handle_events()
        if self.cycle is not before and self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def on_response_complete(self) -> None:
        """Give the next request on this connection its own header deadline."""
        if not self.transport.is_closing():
            self.start_header_deadline()
        super().on_response_complete()

    def start_header_deadline(self) -> None:
        """Close the connection unless a request's headers are complete within header_timeout_s."""
        if self.header_timer is not None:
            self.header_timer.cancel()
        self.header_timer = self.loop.call_later(self.guard.header_timeout_s, self.header_deadline_passed)

    def header_deadline_passed(self) -> None:
        """Cut the connection: no complete request headers in time."""
        self.header_timer = None
        if not self.transport.is_closing():
            self.tallies.header.add(limit=f"{self.guard.header_timeout_s:g}")
            self.cut()

    async def guarded_app(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        """Run the app with a `receive` that times out a stalled request body; refuse oversized headers.

        h11 caps only headers still arriving; a request whose headers came whole in one read is
        measured here (431, before the app sees it).
        """
        cycle = self.cycle
        http = cast(dict[str, Any], scope)
        size = len(http.get("raw_path") or b"") + len(http.get("query_string") or b"")
        size += sum(len(name) + len(value) + 4 for name, value in http.get("headers") or ())
        if size > self.guard.max_header_bytes:
            await _header_too_large(send, self.guard.max_header_bytes)
            return

        async def guarded_receive() -> ASGIReceiveEvent:
            if cycle is not self.cycle or not cycle.more_body or cycle.body or cycle.disconnected:
                return await receive()  # nothing to wait for, or the body is complete
            with self.body_watch():
                return await receive()

        await self.inner_app(scope, guarded_receive, send)

    @contextmanager
    def body_watch(self) -> Iterator[None]:
        """Watch for a stalled body while the app waits inside the block."""
        self.body_waiting = True
        self.last_read = max(self.last_read, self.loop.time())
        self.body_timer = self.loop.call_later(self.guard.body_timeout_s, self.body_check)
        try:
            yield
        finally:
            self.body_waiting = False
            if self.body_timer is not None:
                self.body_timer.cancel()
                self.body_timer = None

    def body_check(self) -> None:
        """Cut the connection if no body byte came for body_timeout_s; else look again later."""
        self.body_timer = None
        if not self.body_waiting or self.transport.is_closing():
            return
        quiet = self.loop.time() - self.last_read
        if self.flow.read_paused:  # uvicorn stopped reading: the wait is ours, not the client's
            self.last_read, quiet = self.loop.time(), 0.0
        if quiet >= self.guard.body_timeout_s:
            self.tallies.body.add(limit=f"{self.guard.body_timeout_s:g}")
            self.cut()
            return
        self.body_timer = self.loop.call_later(self.guard.body_timeout_s - quiet, self.body_check)

    def cut(self) -> None:
        """Close the connection now; uvicorn's connection_lost tells a waiting app it is gone."""
        self.stop_timers()
        if self.transport.get_write_buffer_size():
            self.transport.abort()  # a client that does not read would hold close() open
        else:
            self.transport.close()

    def stop_timers(self) -> None:
        """Cancel the header and body timers."""
        for timer in (self.header_timer, self.body_timer):
            if timer is not None:
                timer.cancel()
        self.header_timer = self.body_timer = None


_CLI_TALLIES = Tallies()


def open_files_limit() -> int:
    """Return the soft RLIMIT_NOFILE in force."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def prefer_the_event_loop(settings: ApiSettings) -> None:
    """Let the event loop take the interpreter back from a busy thread within SWITCH_INTERVAL_MS.

    Python's default (5 ms) lets an upload's writer thread or a tile render hold it for up to
    5 ms each time the loop asks: /healthz waited tens of milliseconds under two uploads.
    Measured with bench/soak.py: p99 of /healthz 50 → 42 ms, and the uploads were no slower.
    """
    sys.setswitchinterval(settings.switch_interval_ms / 1000)


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (as far as the kernel allows); return (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("无法提高打开文件上限 cannot raise the open-file limit to %d: %s", hard, exc)
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def connection_cap(wanted: int, open_files: int) -> int:
    """Return WANTED, lowered so that client connections leave FD_RESERVE open files (or half) for the rest.

    Examples
    --------
    >>> connection_cap(1000, 20000)
    1000
    >>> connection_cap(1000, 1024)
    896
    >>> connection_cap(1000, 100)
    50
    """
    reserve = min(FD_RESERVE, open_files // 2)
    return max(1, min(wanted, open_files - reserve))


def worker_share(total: int, workers: int) -> int:
    """Return one worker's part of TOTAL (at least 1): WORKERS of them hold no more than TOTAL.

    >>> worker_share(1000, 1), worker_share(1000, 3), worker_share(1, 4)
    (1000, 333, 1)
    """
    return max(1, total // max(1, workers))


def server_config(
    app: Callable[..., Any] | str,
    settings: ApiSettings,
    **options: Any,
) -> GuardedConfig:
    """Return the uvicorn config guatu is served with: APP under SETTINGS' limits.

    OPTIONS go to `uvicorn.Config` as they are (host, port, log_level, factory, reload,
    workers …); host, port and workers default to the settings'. With several workers the
    connection cap is shared out: each worker takes its part of `max_connections` (each
    within its own open-files limit), so together they hold no more.
    """
    options = {
        "host": settings.host,
        "port": settings.port,
        "workers": settings.workers,
        "loop": settings.loop,
    } | options
    workers = max(1, cast(int, options["workers"]) or 1)
    max_connections = connection_cap(worker_share(settings.max_connections, workers), open_files_limit())
    guard = Guard(settings.header_timeout_s, settings.body_timeout_s, max_connections)
    config = GuardedConfig(
        app,
        guard=guard,
        switch_interval_s=settings.switch_interval_ms / 1000 if workers > 1 else None,
        limit_concurrency=max_connections,
        timeout_keep_alive=settings.keep_alive_s,
        backlog=max_connections * workers,
        h11_max_incomplete_event_size=settings.max_header_bytes,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
        **options,
    )
    logging.getLogger("uvicorn.error").addFilter(_UVICORN_REPEATS)  # after uvicorn has configured logging
    return config


def limits_line(config: GuardedConfig, settings: ApiSettings) -> str:
    """Return one line saying the limits CONFIG enforces, for the log at start."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    guard = config.guard
    workers = config.workers if config.workers > 1 else 1
    each = f"，{workers} 个进程各 {guard.max_connections} (each of {workers} workers)" if workers > 1 else ""
    return (
        f"连接上限 max connections {guard.max_connections * workers}{each}（打开文件上限 open files {soft}/{hard}），"
        f"请求头超时 header timeout {guard.header_timeout_s:g} s，"
        f"请求体停顿超时 body timeout {guard.body_timeout_s:g} s，"
        f"keep-alive {settings.keep_alive_s} s，请求头上限 max header {settings.max_header_bytes} B，"
        f"信任代理 trusted proxies {settings.forwarded_allow_ips}"
    )


def serve(config: GuardedConfig) -> None:
    """Run the server of CONFIG in the foreground (under the reloader, or a supervisor of its workers).

    Several workers share one listening socket under uvicorn's supervisor: each is a process
    of its own (spawned, never forked) running the app factory; one that dies or stops
    answering its health check is replaced; SIGTERM or SIGINT lets each finish its requests
    and stop; SIGHUP replaces them one by one (each new one serving before the old stops).
    """
    server = uvicorn.Server(config)
    if config.should_reload:
        from uvicorn.supervisors import ChangeReload

        ChangeReload(config, target=server.run, sockets=[config.bind_socket()]).run()
    elif config.workers > 1:
        from uvicorn.supervisors import Multiprocess

        Multiprocess(config, sockets=[config.bind_socket()]).run()
    else:
        server.run()


_UVICORN_REPEATS = Repeats(NOISY_UVICORN)
