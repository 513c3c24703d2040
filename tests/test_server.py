"""uvicorn as guatu serves it, over real sockets: slow clients cut, the server kept answering, a cap on connections."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy.engine import Engine

from api.main import create_app
from api.server import connection_cap, server_config
from api.settings import ApiSettings
from tests.browser import auth_line, free_port, running, url_of
from tests.conftest import migrated_database
from tests.sockets import wait_closed

HEADER_S = 1.0
BODY_S = 1.0
MARGIN_S = 3.0
"""Room for a busy 2-core machine; the deadlines themselves are the seconds above."""
SHORT = ApiSettings(header_timeout_s=HEADER_S, body_timeout_s=BODY_S, keep_alive_s=5, max_connections=400)


@pytest.fixture(scope="module")
def server_engine() -> Iterator[Engine]:
    with migrated_database("guatu_test_server") as engine:
        yield engine


@pytest.fixture(scope="module")
def guarded(server_engine: Engine) -> Iterator[uvicorn.Server]:
    """The app served as `guatu serve` serves it, with one-second deadlines."""
    with running(create_app(SHORT, engine=server_engine), SHORT) as server:
        yield server


class Records(logging.Handler):
    """Keep every log record: uvicorn's own loggers do not reach the root logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def errors(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= logging.ERROR or r.exc_info]

    def said(self, logger: str) -> list[str]:
        return [r.getMessage() for r in self.records if r.name == logger]


@pytest.fixture
def logged() -> Iterator[Records]:
    handler = Records()
    places = [logging.getLogger(), logging.getLogger("uvicorn")]
    for place in places:
        place.addHandler(handler)
    try:
        yield handler
    finally:
        for place in places:
            place.removeHandler(handler)


def address(server: uvicorn.Server) -> tuple[str, int]:
    return server.config.host, server.config.port


def connect(server: uvicorn.Server, first: bytes = b"") -> socket.socket:
    sock = socket.create_connection(address(server), timeout=5)
    if first:
        sock.sendall(first)
    sock.setblocking(False)
    return sock


def request(server: uvicorn.Server, path: str) -> int:
    return httpx.get(url_of(server) + path, timeout=10).status_code


def test_half_sent_headers_are_cut_within_the_deadline_while_others_are_served(
    guarded: uvicorn.Server, logged: Records
) -> None:
    """200 clients send part of their headers and then a byte now and then: all are cut, nobody else waits."""
    opened_at = time.monotonic()
    slow = [connect(guarded, b"GET /healthz HTTP/1.1\r\nHost: guatu\r\nX-Slow: ") for _ in range(200)]
    opened = time.monotonic() - opened_at
    answered = {"/healthz": 0, "/api/layers": 0}
    cut: dict[socket.socket, float] = {}
    deadline = time.monotonic() + opened + HEADER_S + MARGIN_S
    while len(cut) < len(slow) and time.monotonic() < deadline:
        for path in answered:  # the attack goes on; everyone else is answered all the while
            assert request(guarded, path) == 200
            answered[path] += 1
        cut |= wait_closed([s for s in slow if s not in cut], 0.3, trickle=b"a", every=0.1)
    try:
        assert len(cut) == len(slow), f"{len(slow) - len(cut)} of {len(slow)} slow clients still connected"
        assert max(cut.values()) - opened_at <= opened + HEADER_S + MARGIN_S
        assert min(cut.values()) - opened_at >= HEADER_S * 0.9  # the deadline cut them, not something else
        assert min(answered.values()) >= 2, answered
        assert len(guarded.server_state.connections) <= 2
        assert logged.errors() == []
        warned = [m for m in logged.said("guatu.server") if "request header timeout" in m]
        assert 1 <= len(warned) <= 3, warned  # counted, not one line per connection
    finally:
        for sock in slow:
            sock.close()


def test_the_header_deadline_runs_again_after_each_response(guarded: uvicorn.Server) -> None:
    """On a kept-alive connection the next request's headers have the same deadline, from the response's end."""
    sock = socket.create_connection(address(guarded), timeout=5)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: guatu\r\n\r\n")
    answer = b""
    while not answer.endswith(b'{"status":"ok"}'):
        answer += sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 200")
    answered_at = time.monotonic()
    sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # then one header byte at a time, never the blank line
    sock.setblocking(False)
    cut = wait_closed([sock], HEADER_S + MARGIN_S, trickle=b"X", every=0.2)
    sock.close()
    assert cut, "a client trickling its second request's headers was never cut"
    assert HEADER_S * 0.9 <= cut[sock] - answered_at <= HEADER_S + MARGIN_S


def test_headers_complete_within_the_deadline_are_served(guarded: uvicorn.Server) -> None:
    sock = socket.create_connection(address(guarded), timeout=5)
    for piece in (b"GET /healthz HTTP/1.1\r\n", b"Host: guatu\r\n", b"Connection: close\r\n\r\n"):
        sock.sendall(piece)
        time.sleep(HEADER_S / 5)
    answer = b""
    while chunk := sock.recv(4096):
        answer += chunk
    sock.close()
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"status":"ok"}')


def post_head(length: int) -> bytes:
    """Return the head of a feature POST; its Host is an allowed one, else the app refuses it before the body."""
    return (
        b"POST /api/layers/parcels/features HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + auth_line().encode()
        + b"Content-Type: application/geo+json\r\n"
        b"Content-Length: %d\r\n\r\n" % length
    )


def test_a_stalled_body_is_cut_and_the_app_sees_the_client_gone(guarded: uvicorn.Server, logged: Records) -> None:
    sock = connect(guarded, post_head(1000) + b'{"type": "Fea')
    sent_at = time.monotonic()
    cut = wait_closed([sock], BODY_S + MARGIN_S)
    sock.close()
    assert cut, "a request body that stalled was never cut"
    assert BODY_S * 0.9 <= cut[sock] - sent_at <= BODY_S + MARGIN_S
    deadline = time.monotonic() + MARGIN_S
    while guarded.server_state.tasks and time.monotonic() < deadline:  # the route saw a disconnect, not a hang
        time.sleep(0.05)
    assert not guarded.server_state.tasks
    assert request(guarded, "/healthz") == 200
    assert logged.errors() == []  # no traceback for a client that went away
    assert [m for m in logged.said("guatu.server") if "request body stalled" in m]


def test_a_body_that_keeps_coming_is_not_cut(guarded: uvicorn.Server) -> None:
    """The body timeout is for a stall: a slow upload that keeps sending outlives it."""
    body = b'{"type": "Feature", "properties": {}, "geometry": null}'
    sock = socket.create_connection(address(guarded), timeout=5)
    sock.sendall(post_head(len(body)))
    started = time.monotonic()
    for byte in body:  # one byte every BODY_S / 4 s: 14 s in all, far past the stall timeout
        sock.sendall(bytes([byte]))
        if time.monotonic() - started < 3 * BODY_S:
            time.sleep(BODY_S / 4)
    answer = sock.recv(4096)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 4"), answer[:80]  # answered (the feature is refused), not cut


def test_connections_past_the_cap_are_closed_at_once_and_service_resumes(
    server_engine: Engine, logged: Records
) -> None:
    settings = ApiSettings(header_timeout_s=60, max_connections=20)
    with running(create_app(settings, engine=server_engine), settings) as server:
        held = [connect(server) for _ in range(20)]
        deadline = time.monotonic() + MARGIN_S
        while len(server.server_state.connections) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(server.server_state.connections) == 20
        extra = [connect(server) for _ in range(30)]
        refused = wait_closed(extra, MARGIN_S)
        for sock in extra:
            sock.close()
        assert len(refused) == len(extra), f"{len(extra) - len(refused)} connections past the cap were kept"
        assert wait_closed(held, 0.2) == {}  # those already in are left alone
        for sock in held:
            sock.close()
        deadline = time.monotonic() + MARGIN_S
        while server.server_state.connections and time.monotonic() < deadline:
            time.sleep(0.05)
        assert request(server, "/healthz") == 200
    warned = [m for m in logged.said("guatu.server") if "max_connections=20" in m]
    assert 1 <= len(warned) <= 2, warned  # one warning now and then, not one per connection
    assert logged.errors() == []


def test_the_config_carries_the_settings() -> None:
    settings = ApiSettings(keep_alive_s=7, max_connections=300, forwarded_allow_ips="10.0.0.2", max_header_bytes=8192)
    config = server_config("api.main:app_factory", settings, factory=True)
    assert (config.host, config.port) == (settings.host, settings.port)
    assert config.timeout_keep_alive == 7 and config.limit_concurrency == 300 and config.backlog == 300
    assert config.h11_max_incomplete_event_size == 8192
    assert config.proxy_headers and config.forwarded_allow_ips == "10.0.0.2"
    assert config.guard.max_connections == 300 and config.guard.header_timeout_s == settings.header_timeout_s
    assert connection_cap(100_000, 1024) == 1024 - 128  # never up to the open-file limit


def test_oversized_headers_are_refused(guarded: uvicorn.Server) -> None:
    sock = socket.create_connection(address(guarded), timeout=5)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: guatu\r\nX-Big: " + b"a" * (SHORT.max_header_bytes + 1024))
    answer = sock.recv(4096)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 400")


@pytest.mark.parametrize("size", [4, 40])
def test_headers_that_arrive_whole_are_measured_too(guarded: uvicorn.Server, size: int) -> None:
    """h11 caps headers still arriving; 4 or 40 times the limit sent in one piece is refused all the same."""
    big = b"a" * (SHORT.max_header_bytes * size)
    sock = socket.create_connection(address(guarded), timeout=5)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: guatu\r\nX-Big: " + big + b"\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    sock.close()
    assert answer.split(b"\r\n")[0] in (b"HTTP/1.1 431 Request Header Fields Too Large", b"HTTP/1.1 400 Bad Request")
    assert b"200 OK" not in answer


def test_guatu_serve_runs_the_guarded_server_and_says_its_limits(server_engine: Engine, tmp_path) -> None:
    """The command itself, in a child process: its limits are logged and a half-sent request is cut."""
    port = free_port()
    env = dict(
        os.environ,
        DATABASE_URL=server_engine.url.render_as_string(hide_password=False),
        GUATU_HEADER_TIMEOUT_S="1",
        GUATU_MAX_CONNECTIONS="50",
        GUATU_ARCHIVE_DIR=str(tmp_path),
    )
    out = tmp_path / "serve.log"
    with out.open("wb") as log_file:
        child = subprocess.Popen(
            [str(Path(sys.executable).parent / "guatu"), "serve", "--port", str(port)],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert child.poll() is None and time.monotonic() < deadline, out.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: guatu\r\n")
        sock.setblocking(False)
        cut = wait_closed([sock], 1 + MARGIN_S, trickle=b"X", every=0.2)
        sock.close()
        assert cut, "guatu serve kept a half-sent request open"
    finally:
        child.terminate()
        child.wait(10)
    said = " ".join(out.read_text().split())  # rich wraps long lines
    assert "max connections 50" in said and "header timeout 1 s" in said, said
    assert "Traceback" not in said
