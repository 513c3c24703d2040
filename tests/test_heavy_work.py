"""Heavy work (prints, checks, uploads) is bounded: a burst is queued or refused with Retry-After,
a job whose client left is dropped, and light requests keep being answered meanwhile."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from api.main import create_app
from api.settings import ApiSettings
from tests.accounts import bearer
from tests.browser import auth_line, live_app, sign_in_as
from tests.conftest import demo_database

COMMUNITY = "370214001006"


@pytest.fixture(scope="module")
def demo() -> Iterator[Engine]:
    with demo_database("guatu_test_heavy") as engine:
        yield engine


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_a_burst_of_prints_is_queued_or_refused_while_healthz_answers(demo: Engine) -> None:
    app = create_app(ApiSettings(print_workers=1, print_queue=1, per_client=10), engine=demo)
    with live_app(app) as base:
        params = {"scope": COMMUNITY, "size": "A4"}
        health: list[float] = []
        done = threading.Event()

        def probe() -> None:
            with httpx.Client(base_url=base, timeout=5) as client:
                while not done.is_set():
                    started = time.monotonic()
                    assert client.get("/healthz").json() == {"status": "ok"}
                    health.append(time.monotonic() - started)
                    time.sleep(0.05)

        prober = threading.Thread(target=probe)
        prober.start()
        try:
            with ThreadPoolExecutor(6) as pool:
                answers = list(pool.map(lambda _: httpx.get(f"{base}/api/print", params=params, timeout=120), range(6)))
        finally:
            done.set()
            prober.join(10)
    statuses = sorted(a.status_code for a in answers)
    assert 500 not in statuses
    busy = [a for a in answers if a.status_code == 503]
    assert len(busy) >= 3, statuses  # one drawing, one queued: the rest refused at once
    assert all(a.json()["code"] == "busy" and int(a.headers["retry-after"]) > 0 for a in busy)
    assert any(a.status_code == 200 and a.content.startswith(b"%PDF") for a in answers)
    assert len(health) >= 5  # /healthz kept answering while the prints ran (each within its 5 s timeout)


def raw_request(base: str, path: str) -> socket.socket:
    """Send a GET and return the socket without reading the answer (a client that will leave)."""
    url = urlsplit(base)
    sock = socket.create_connection((url.hostname, url.port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {url.netloc}\r\n{auth_line()}\r\n".encode())
    return sock


def test_a_print_whose_client_leaves_gives_its_place_back(demo: Engine) -> None:
    app = create_app(ApiSettings(print_workers=1, print_queue=3, per_client=10), engine=demo)
    lane = app.state.lanes["print"]
    with live_app(app) as base:
        drawing = raw_request(base, "/api/print?size=A0")
        assert wait_for(lambda: lane.admitted == 1, 10)
        waiting = raw_request(base, "/api/print?size=A0&format=png")
        assert wait_for(lambda: lane.admitted == 2, 10)
        waiting.close()  # gone while queued: dropped
        assert wait_for(lambda: lane.admitted == 1, 5), lane.admitted
        drawing.close()  # gone while its map is drawn: the worker process is stopped
        assert wait_for(lambda: lane.admitted == 0, 5), lane.admitted
        after = httpx.get(f"{base}/api/print", params={"scope": COMMUNITY, "size": "A4"}, timeout=120)
        assert after.status_code == 200 and after.content.startswith(b"%PDF")


def test_one_client_holds_no_more_than_its_share_of_a_lane(demo: Engine) -> None:
    app = create_app(ApiSettings(print_workers=2, print_queue=6, per_client=2), engine=demo)
    lane = app.state.lanes["print"]
    with live_app(app) as base:
        mine = [raw_request(base, "/api/print?size=A0"), raw_request(base, "/api/print?size=A0&format=png")]
        assert wait_for(lambda: lane.admitted == 2, 10)
        third = httpx.get(f"{base}/api/print", params={"size": "A4"}, timeout=30)
        assert third.status_code == 429 and third.json()["code"] == "too_many_requests"
        assert int(third.headers["retry-after"]) > 0
        assert lane.admitted == 2  # the lane itself still has room for others
        for sock in mine:
            sock.close()
        assert wait_for(lambda: lane.admitted == 0, 10)


def test_an_exhausted_connection_pool_is_a_503_not_a_500(demo: Engine) -> None:
    tight = create_engine(demo.url, pool_size=1, max_overflow=0, pool_timeout=0.5)
    try:
        signed = bearer(sign_in_as(demo))
        with (
            tight.connect(),
            TestClient(create_app(engine=tight), raise_server_exceptions=False, headers=signed) as client,
        ):
            response = client.get("/api/layers/parcels/features", params={"limit": 1})
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "busy" and response.headers["retry-after"]
            assert client.get("/healthz").status_code == 200
    finally:
        tight.dispose()


def test_a_lane_refuses_beyond_its_queue_and_a_check_runs_in_it(demo: Engine) -> None:
    app = create_app(ApiSettings(check_workers=1, check_queue=0), engine=demo)
    lane = app.state.lanes["checks"]
    with TestClient(app, raise_server_exceptions=False, headers=bearer(sign_in_as(demo))) as client:
        lane.admitted = 1  # as if a county's check were running
        refused = client.get("/api/checks", params={"scope": COMMUNITY})
        assert refused.status_code == 503 and refused.json()["code"] == "busy"
        assert refused.headers["retry-after"] == str(lane.retry_after_s)
        lane.admitted = 0
        found = client.get("/api/checks", params={"scope": COMMUNITY})
        assert found.status_code == 200 and found.json()["scope"] == COMMUNITY
        assert lane.admitted == 0
