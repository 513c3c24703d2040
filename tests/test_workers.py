"""`guatu serve --workers 2`: what one worker process knows, the other knows too.

The server runs as an operator runs it (a subprocess of `guatu serve`, uvicorn's supervisor,
spawned workers), on a database of this module's; `GUATU_WORKER_HEADER` makes each answer
say which worker gave it, and a request is sent again on fresh connections until both have
answered. The lanes' shared counting is also tested in one process, with two lanes on two
connections standing for two workers.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine

from api.server import limits_line, server_config
from api.settings import ApiSettings
from api.work import share_lanes
from spatial.errors import Busy, TooMany
from spatial.work import Lane, SharedLocks
from tests.accounts import PASSWORD, bearer, tokens_for
from tests.browser import free_port
from tests.conftest import app_url, migrated_database, owner_url
from tests.samples import X0, Y0, sample
from tests.test_tile_generations import ids_in, parcel, tile_of

DATABASE = "guatu_test_workers"
GUATU = Path(sys.executable).parent / "guatu"
START_S = 120.0
"""Two workers importing the app on a busy 2-core machine."""
TRIES = 60
"""Fresh connections tried before concluding one worker never answers (the kernel picks who accepts)."""


@pytest.fixture(scope="module")
def database() -> Iterator[tuple[Engine, dict[str, str]]]:
    """The app's engine on this module's database (the sample community and grid), and the users' tokens."""
    with migrated_database(DATABASE) as engine:
        tokens = tokens_for(owner_url(DATABASE), DATABASE)
        yield engine, tokens


def worker_of(response: httpx.Response) -> str:
    return response.headers["x-guatu-worker"]


def fresh(method: str, url: str, cookies: dict[str, str] | None = None, **options: Any) -> httpx.Response:
    """Send one request on a connection of its own (so any worker may take it).

    A request with COOKIES is the browser's (sent with no token: tests/conftest.py would add
    the token of the last page test's user to a request to 127.0.0.1 that has none).
    """
    if cookies is not None:
        options["headers"] = {"Authorization": "none", **(options.get("headers") or {})}
    with httpx.Client(timeout=30, cookies=cookies) as client:
        return client.request(method, url, **options)


def from_each(send: Callable[[], httpx.Response], workers: int = 2) -> dict[str, httpx.Response]:
    """Send again until WORKERS different workers have answered; return an answer of each."""
    answers: dict[str, httpx.Response] = {}
    for _ in range(TRIES):
        response = send()
        answers.setdefault(worker_of(response), response)
        if len(answers) >= workers:
            return answers
    raise AssertionError(f"only workers {sorted(answers)} answered in {TRIES} tries")


@pytest.fixture(scope="module")
def served(database: tuple[Engine, dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`guatu serve --workers 2` on a free port: one place in the uploads lane's queue, one per user."""
    folder = tmp_path_factory.mktemp("workers")
    port = free_port()
    env = dict(
        os.environ,
        DATABASE_URL=app_url(DATABASE),
        GUATU_WORKER_HEADER="1",
        GUATU_UPLOAD_WORKERS="1",
        GUATU_UPLOAD_QUEUE="1",
        GUATU_PER_CLIENT="1",
        GUATU_ARCHIVE_DIR=str(folder / "archive"),
    )
    env.pop("GUATU_WORKERS", None)
    log = (folder / "serve.log").open("w")
    process = subprocess.Popen(
        [str(GUATU), "serve", "--workers", "2", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_S
        seen: set[str] = set()
        while len(seen) < 2:
            assert process.poll() is None, (folder / "serve.log").read_text()
            assert time.monotonic() < deadline, (folder / "serve.log").read_text()
            try:
                seen.add(worker_of(fresh("GET", f"{base}/healthz")))
            except httpx.TransportError:
                time.sleep(0.5)
        for layer in ("divisions", "grids"):
            made = fresh(
                "POST", f"{base}/api/layers/{layer}/features", json=sample(layer), headers=bearer(database[1]["admin"])
            )
            assert made.status_code == 201, made.text
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        log.close()


def test_a_sign_in_on_one_worker_holds_on_the_other(served: str) -> None:
    signed = fresh("POST", f"{served}/api/login", json={"username": "planner", "password": PASSWORD})
    assert signed.status_code == 200, signed.text
    cookies = dict(signed.cookies)
    answers = from_each(lambda: fresh("GET", f"{served}/api/me", cookies=cookies))
    assert signed.headers["x-guatu-worker"] in answers
    for worker, me in answers.items():
        assert me.status_code == 200, (worker, me.text)
        assert me.json()["user"]["username"] == "planner"
    # a write carrying the session's CSRF token is taken by either worker (the token is the database's)
    headers = {"X-CSRF-Token": cookies["guatu_csrf"]}
    made = from_each(lambda: fresh("POST", f"{served}/api/tokens?name=w", cookies=cookies, headers=headers))
    for worker, answer in made.items():
        assert answer.status_code in (200, 201), (worker, answer.text)


def test_a_sign_out_on_one_worker_ends_the_session_on_the_other_at_once(served: str) -> None:
    """No worker trusts a sign-in it resolved earlier: the other worker's cache would outlive the sign-out."""
    signed = fresh("POST", f"{served}/api/login", json={"username": "planner", "password": PASSWORD})
    assert signed.status_code == 200, signed.text
    cookies = dict(signed.cookies)
    warm = from_each(lambda: fresh("GET", f"{served}/api/me", cookies=cookies))  # both have resolved it
    assert all(answer.status_code == 200 for answer in warm.values())
    out = fresh("POST", f"{served}/api/logout", cookies=cookies, headers={"X-CSRF-Token": cookies["guatu_csrf"]})
    assert out.status_code == 204, out.text
    after = from_each(lambda: fresh("GET", f"{served}/api/me", cookies=cookies))
    for worker, answer in after.items():
        assert answer.status_code == 401, (worker, answer.text)


def slow_upload(base: str, token: str) -> socket.socket:
    """Start an upload whose body never comes whole: it holds its place in the uploads lane."""
    port = int(base.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        b"POST /api/layers/parcels/uploads HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: Bearer {token}\r\n".encode()
        + b"Content-Type: application/geo+json\r\nContent-Length: 100000\r\n\r\n{"
    )
    return sock


def upload(base: str, token: str) -> httpx.Response:
    """Check one parcel (dry run): a quick upload when its place is free."""
    body = json.dumps({"type": "FeatureCollection", "features": [parcel(9, X0, Y0, X0 + 0.0005, Y0 + 0.0005)]})
    headers = {**bearer(token), "Content-Type": "application/geo+json"}
    return fresh("POST", f"{base}/api/layers/parcels/uploads?dry_run=true", content=body, headers=headers)


def test_the_uploads_lane_and_each_users_share_hold_across_workers(
    served: str, database: tuple[Engine, dict[str, str]]
) -> None:
    """Two places in all (one running, one queued), one per user: two slow uploads fill the lane for both workers."""
    users = database[1]
    held = [slow_upload(served, users["planner"])]
    try:
        deadline = time.monotonic() + 30  # the slow upload is admitted as soon as its worker reads its headers
        while (answer := upload(served, users["planner"])).status_code != 429:
            assert answer.status_code < 500, answer.text
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.2)
        refused = from_each(lambda: upload(served, users["planner"]))  # planner holds a place: their share
        for worker, answer in refused.items():
            assert answer.status_code == 429 and answer.json()["code"] == "too_many_requests", (worker, answer.text)
        assert upload(served, users["admin"]).status_code < 300  # the lane still has a place for others

        held.append(slow_upload(served, users["surveyor"]))
        deadline = time.monotonic() + 30
        while (answer := upload(served, users["admin"])).status_code != 503:
            assert answer.status_code < 300, answer.text
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.2)
        busy = from_each(lambda: upload(served, users["admin"]))  # both places taken, wherever they were taken
        for worker, answer in busy.items():
            assert answer.status_code == 503 and answer.json()["code"] == "busy", (worker, answer.text)
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 30  # the places come back once the uploads' clients have gone
    while (answer := upload(served, users["admin"])).status_code >= 300:
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.2)


def test_a_write_through_one_worker_reaches_the_others_tiles_and_extent(
    served: str, database: tuple[Engine, dict[str, str]]
) -> None:
    auth = bearer(database[1]["admin"])
    first = fresh(
        "POST", f"{served}/api/layers/parcels/features", json=parcel(1, X0, Y0, X0 + 0.001, Y0 + 0.0009), headers=auth
    )
    assert first.status_code == 201, first.text
    z, x, y = tile_of(X0 + 0.0013, Y0 + 0.0002, 17)
    here = f"{served}/tiles/parcels/{z}/{x}/{y}.pbf"
    far_lon, far_lat = X0 + 0.0032, Y0 + 0.0032  # beyond the layer's extent so far
    far = "{}/tiles/parcels/{}/{}/{}.pbf".format(served, *tile_of(far_lon, far_lat, 17))
    for worker, tile in from_each(lambda: fresh("GET", here, headers=auth)).items():  # each worker caches it
        assert ids_in(tile) == {first.json()["id"]}, worker
    for worker, tile in from_each(lambda: fresh("GET", far, headers=auth)).items():  # and knows the extent
        assert tile.status_code == 204, worker

    second = fresh(
        "POST",
        f"{served}/api/layers/parcels/features",
        json=parcel(2, X0 + 0.0011, Y0, X0 + 0.0015, Y0 + 0.0004),
        headers=auth,
    )
    third = fresh(
        "POST",
        f"{served}/api/layers/parcels/features",
        json=parcel(3, far_lon - 0.0002, far_lat - 0.0002, far_lon + 0.0002, far_lat + 0.0002),
        headers=auth,
    )
    assert second.status_code == 201 and third.status_code == 201, (second.text, third.text)
    for worker, tile in from_each(lambda: fresh("GET", here, headers=auth)).items():
        assert ids_in(tile) == {first.json()["id"], second.json()["id"]}, worker
    for worker, tile in from_each(lambda: fresh("GET", far, headers=auth)).items():
        assert ids_in(tile) == {third.json()["id"]}, worker
    for worker, tilejson in from_each(lambda: fresh("GET", f"{served}/tiles/parcels.json", headers=auth)).items():
        west, south, east, north = tilejson.json()["bounds"]
        assert east >= far_lon + 0.0002 - 1e-9 and north >= far_lat + 0.0002 - 1e-9, worker


def test_a_worker_that_dies_is_replaced(served: str) -> None:
    before = from_each(lambda: fresh("GET", f"{served}/healthz"))
    victim = next(iter(before))
    os.kill(int(victim), signal.SIGKILL)
    deadline = time.monotonic() + START_S
    while True:
        try:
            now = from_each(lambda: fresh("GET", f"{served}/healthz"))
            if victim not in now:
                break
        except (AssertionError, httpx.TransportError):
            pass
        assert time.monotonic() < deadline, "the dead worker was not replaced"
        time.sleep(0.5)
    assert len(now) == 2


def two_lanes(engine: Engine, **sizes: int) -> tuple[list[Lane], list[SharedLocks]]:
    """Two lanes of one name, each on its own connection: two workers' views of one lane."""
    lanes = [Lane("print", "挂图打印", "print", **sizes), Lane("print", "挂图打印", "print", **sizes)]
    return lanes, [share_lanes({"print": each}, engine) for each in lanes]


def test_shared_lanes_count_places_turns_and_shares_across_connections(
    database: tuple[Engine, dict[str, str]],
) -> None:
    engine = database[0]
    lanes, shared = two_lanes(engine, running=1, waiting=1, per_client=1)

    async def scenario() -> None:
        one, two = lanes
        async with one.place("user:a"):
            with pytest.raises(TooMany):  # a's share is held in the other process
                async with two.place("user:a"):
                    pass
            async with two.place("user:b"):
                with pytest.raises(Busy):  # both places are held, one in each process
                    async with one.place("user:c"):
                        pass
                async with one.turn():
                    waiting = asyncio.ensure_future(_turn(two))
                    await asyncio.sleep(0.6)
                    assert not waiting.done()  # the one running place is held by the other process
                await asyncio.wait_for(waiting, 10)
        await asyncio.sleep(0.3)  # the locks are let go on a thread
        assert shared[0].held() == 0 and shared[1].held() == 0
        async with two.place("user:a"), two.place("user:c"):  # all of it free again
            pass

    try:
        asyncio.run(scenario())
    finally:
        for each in shared:
            each.close()


async def _turn(lane: Lane) -> None:
    async with lane.turn():
        pass


def test_a_closed_connection_lets_its_places_go(database: tuple[Engine, dict[str, str]]) -> None:
    """A worker that dies (its connection closed) holds nothing: its places are everyone's again."""
    lanes, shared = two_lanes(database[0], running=1, waiting=0)

    async def scenario() -> None:
        one, two = lanes
        async with one.place("user:a"):
            with pytest.raises(Busy):
                async with two.place("user:b"):
                    pass
            shared[0].close()  # as when its process dies
            async with two.place("user:b"):
                pass

    try:
        asyncio.run(scenario())
    finally:
        for each in shared:
            each.close()


def test_the_connection_cap_is_shared_out_between_the_workers() -> None:
    settings = ApiSettings(max_connections=400)
    one = server_config("api.main:app_factory", settings, factory=True, port=free_port())
    two = server_config("api.main:app_factory", settings, factory=True, port=free_port(), workers=2)
    assert one.workers == 1 and one.guard.max_connections == 400
    assert two.workers == 2 and two.guard.max_connections == 200 and two.limit_concurrency == 200
    assert "2 个进程各 200" in limits_line(two, settings)
