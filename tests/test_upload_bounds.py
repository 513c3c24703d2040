"""Uploads bounded in memory and disk: bodies spooled to disk, only files that parse archived,
a place per upload (503 beyond), the archive pruned, concurrent copies never collide."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from api.main import create_app
from api.settings import ApiSettings
from layers import archive
from tests.browser import auth_line, live_app
from tests.conftest import migrated_database
from tests.samples import COMMUNITY, X0, Y0, sample

UPLOAD = "/api/layers/shops/uploads"


def shops(n: int) -> bytes:
    out = []
    for i in range(n):
        shop = sample("shops")
        shop["properties"]["code"] = COMMUNITY + f"21{i:05d}"
        shop["geometry"]["coordinates"] = [X0 + 0.00001 * (i % 1000), Y0 + 0.00001 * (i // 1000)]
        out.append(shop)
    return json.dumps({"type": "FeatureCollection", "features": out}, ensure_ascii=False).encode()


def archived(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def empty() -> Iterator[Engine]:
    with migrated_database("guatu_test_upload_bounds") as engine:
        yield engine


def test_only_files_that_parse_are_archived(client: TestClient, archive_in_tmp: Path) -> None:
    for junk in (os.urandom(200_000), b'{"type": "FeatureCollection", "features": [', b"\x00" * 1000):
        assert client.post(UPLOAD, content=junk).status_code == 400
    assert archived(archive_in_tmp) == []  # refused junk is not kept, and nothing is left in the spool
    good = shops(2)
    assert client.post(UPLOAD, content=good, params={"dry_run": "true"}).status_code == 200
    kept = [p for p in archived(archive_in_tmp) if p.suffix == ".geojson"]
    assert len(kept) == 1 and kept[0].read_bytes() == good
    assert not list((archive_in_tmp / archive.SPOOL).iterdir())


def raw_upload(base: str, size: int, sent: bytes) -> socket.socket:
    """Start an upload of SIZE bytes, send SENT of it, and return the socket (the rest never comes)."""
    url = urlsplit(base)
    sock = socket.create_connection((url.hostname, url.port))
    head = f"POST {UPLOAD} HTTP/1.1\r\nHost: {url.netloc}\r\n{auth_line()}Content-Length: {size}\r\n\r\n"
    sock.sendall(head.encode() + sent)
    return sock


def wait_for(condition, seconds: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


def test_a_body_goes_to_disk_as_it_arrives_and_a_full_lane_answers_503(empty: Engine, archive_in_tmp: Path) -> None:
    app = create_app(ApiSettings(upload_workers=1, upload_queue=0, per_client=5), engine=empty)
    body = shops(12_000)
    with live_app(app) as base:
        slow = raw_upload(base, len(body), body[: len(body) // 2])
        spool = archive_in_tmp / archive.SPOOL

        def spooled() -> int:
            return sum(p.stat().st_size for p in spool.glob("*.part")) if spool.exists() else 0

        # half the body is on disk (less what waits for the next 1 MB write), not held in memory
        assert wait_for(lambda: spooled() >= len(body) // 2 - (1 << 20), 10), spooled()
        busy = httpx.post(base + UPLOAD, content=shops(1), timeout=30)
        assert busy.status_code == 503 and busy.json()["code"] == "busy" and int(busy.headers["retry-after"]) > 0
        slow.close()  # the client gives up: its spooled half is removed, its place freed
        assert wait_for(lambda: spooled() == 0 and app.state.lanes["uploads"].admitted == 0, 10)
        done = httpx.post(base + UPLOAD, content=shops(3), timeout=60)
        assert done.status_code == 201, done.text


def test_the_same_bytes_at_once_with_different_options_never_collide(empty: Engine, archive_in_tmp: Path) -> None:
    app = create_app(ApiSettings(upload_workers=4, upload_queue=4, per_client=8), engine=empty)
    body = shops(3_000)
    combos = [
        {"dry_run": "true", "mode": mode, "repair": repair, "crs": crs}
        for mode in ("all-or-nothing", "valid-only")
        for repair in ("false", "true")
        for crs in ("CGCS2000", "WGS84")
    ]
    with live_app(app) as base, ThreadPoolExecutor(len(combos)) as pool:
        send = lambda params: httpx.post(base + UPLOAD, content=body, params=params, timeout=120)  # noqa: E731
        answers = list(pool.map(send, combos))
    assert sorted({a.status_code for a in answers}) == [200], [a.text[:200] for a in answers if a.status_code != 200]
    kept = [p for p in archived(archive_in_tmp) if p.suffix == ".geojson"]
    assert len(kept) == 1 and kept[0].read_bytes() == body
    assert not [p for p in archived(archive_in_tmp) if p.name.endswith(".part")]


def test_prune_removes_what_is_past_retention_or_beyond_the_cap(archive_in_tmp: Path) -> None:
    now = time.time()
    old = archive.keep(b'{"old": 1}', "aa" + "0" * 62)
    recent = archive.keep(b'{"recent": 2}' * 100, "bb" + "0" * 62)
    newest = archive.keep(b'{"newest": 3}' * 100, "cc" + "0" * 62)
    report = archive.save_report(7, {"features": [1, 2, 3]})
    leftover = archive.spool_file()
    os.utime(old, (now - 40 * 86400, now - 40 * 86400))
    os.utime(report, (now - 40 * 86400, now - 40 * 86400))
    os.utime(recent, (now - 5 * 86400, now - 5 * 86400))
    os.utime(leftover, (now - 2 * 86400, now - 2 * 86400))
    gone = archive.prune(days=30, max_bytes=0, now=now)
    assert gone.files == 3 and not old.exists() and not report.exists() and not leftover.exists()
    assert recent.exists() and newest.exists()
    capped = archive.prune(days=30, max_bytes=newest.stat().st_size + 10, now=now)
    assert capped.files == 1 and not recent.exists() and newest.exists()  # the oldest goes first
    assert archive.load_report(7) is None


def test_guatu_archive_prune_says_what_it_removed(archive_in_tmp: Path) -> None:
    stale = archive.keep(b"{}", "dd" + "0" * 62)
    os.utime(stale, (time.time() - 400 * 86400,) * 2)
    env = {**os.environ, "GUATU_ARCHIVE_DIR": str(archive_in_tmp)}
    guatu = Path(sys.executable).parent / "guatu"
    result = subprocess.run(
        [str(guatu), "archive", "prune", "--days", "365"], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    assert not stale.exists()
    assert "1" in result.stderr and "清理" in result.stderr


def read_answer(sock: socket.socket, seconds: float) -> bytes:
    """Return what the server has answered on SOCK within SECONDS (empty: nothing yet)."""
    sock.settimeout(seconds)
    try:
        return sock.recv(65536)
    except TimeoutError:
        return b""


def test_a_multipart_body_without_length_is_cut_at_the_limit_not_spooled_whole(
    empty: Engine, archive_in_tmp: Path
) -> None:
    app = create_app(ApiSettings(max_upload_bytes=100_000), engine=empty)
    with live_app(app) as base:
        url = urlsplit(base)
        sock = socket.create_connection((url.hostname, url.port))
        head = (
            f"POST {UPLOAD} HTTP/1.1\r\nHost: {url.netloc}\r\n{auth_line()}Transfer-Encoding: chunked\r\n"
            "Content-Type: multipart/form-data; boundary=XYZ\r\n\r\n"
        )
        part = b'--XYZ\r\nContent-Disposition: form-data; name="file"; filename="big.geojson"\r\n\r\n' + b"x" * 300_000
        sock.sendall(head.encode() + f"{len(part):x}\r\n".encode() + part + b"\r\n")
        answer = read_answer(sock, 10)  # the rest (gigabytes, for all the server knows) is never sent
        sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_a_trickled_body_gives_its_place_back(
    empty: Engine, archive_in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from api.routes import uploads as route

    monkeypatch.setattr(route, "RATE_GRACE_S", 1.0)
    app = create_app(ApiSettings(upload_workers=1, upload_queue=0, upload_min_rate_kbs=50), engine=empty)
    with live_app(app) as base:
        sock = raw_upload(base, 1_000_000, b"{")
        for _ in range(30):  # 100 bytes every 0.1 s: 1 kB/s, far below the 50 kB/s asked for
            time.sleep(0.1)
            try:
                sock.sendall(b" " * 100)
            except OSError:
                break
        answer = read_answer(sock, 5)
        sock.close()
        assert b" 408 " in answer.split(b"\r\n")[0] and b"upload_too_slow" in answer, answer[:300]
        assert wait_for(lambda: app.state.lanes["uploads"].admitted == 0, 5)
        assert httpx.post(base + UPLOAD, content=shops(2), timeout=60).status_code == 201


def test_prune_touches_nothing_guatu_did_not_write(archive_in_tmp: Path) -> None:
    old = time.time() - 400 * 86400
    kept = archive.keep(b"{}", "ee" + "0" * 62)
    folder = archive_in_tmp
    strangers = [folder / "thesis.docx", folder / "ee" / "notes.txt", folder / "reports" / "x.pdf"]
    strangers[2].parent.mkdir(exist_ok=True)
    for path in strangers:
        path.write_bytes(b"mine")
    for path in [kept, *strangers]:
        os.utime(path, (old, old))
    gone = archive.prune(days=30, max_bytes=1)
    assert gone.files == 1 and not kept.exists()
    assert all(path.exists() for path in strangers)


def test_the_size_cap_is_kept_as_files_arrive_not_only_hourly(
    archive_in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from layers.settings import layer_settings

    monkeypatch.setattr(layer_settings(), "archive_max_mb", 1)
    archive.prune_now_and_then()  # the hourly prune has just run
    for n in range(12):
        archive.keep(os.urandom(200_000), f"{n:02x}" + "0" * 62)
        time.sleep(0.01)  # an order to the files' ages
        archive.prune_now_and_then()
    total = sum(p.stat().st_size for p in archived(archive_in_tmp))
    assert total <= 1_000_000 + 200_000, total  # within the cap and one file, though 2.4 MB came
