"""A hot standby: read-only routes read it, writers read their own writes, a standby gone is no 500.

Two local clusters of their own under a temporary folder (a primary, and a standby made by
`pg_basebackup -R`: spatial.localpg.make_standby), migrated, and `guatu serve` in a child
process with DATABASE_URL on the primary and DATABASE_READ_URL on the standby. The answer's
``X-Guatu-Read`` header says which server a read-routed request read.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import psycopg.sql
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import make_url
from sqlalchemy.engine import Engine

from api.main import create_app
from spatial import localpg
from spatial.db import ReadRouter, make_engine
from spatial.settings import OWNER_ROLE, DbSettings, LocalPgSettings
from tests.accounts import bearer, tokens_for
from tests.browser import free_port
from tests.samples import sample

GUATU = str(Path(sys.executable).parent / "guatu")
WRITER, READER = "surveyor9", "viewer"
ROUTED = ("/api/layers/parcels/stats", "/api/layers/parcels/features", "/tiles/parcels/15/27341/12846.pbf")
"""The writer works in the samples' community; the reader sees the whole street around it."""


def _env(primary: LocalPgSettings) -> dict[str, str]:
    """Return the environment naming PRIMARY as the local cluster (no other DATABASE_URL)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATABASE_READ_URL")}
    env.update(GUATU_PG_DATA_DIR=str(primary.data_dir), GUATU_PG_PORT=str(primary.resolved_port()))
    return env


@pytest.fixture(scope="module")
def clusters() -> Iterator[tuple[LocalPgSettings, LocalPgSettings]]:
    """Yield a migrated primary and its running hot standby; stop and remove both whatever happens."""
    root = Path(tempfile.mkdtemp(prefix="guatu-replica-"))
    root.chmod(0o755)  # the postgres user keeps the data folders inside
    primary = LocalPgSettings(data_dir=root / "primary", port=free_port())
    standby = LocalPgSettings(data_dir=root / "standby", port=free_port())
    try:
        localpg.ensure_running(primary)
        migrated = subprocess.run([GUATU, "db", "upgrade"], env=_env(primary), capture_output=True, text=True)
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        localpg.make_standby(primary, standby)
        yield primary, standby
    finally:
        for each in (standby, primary):
            try:
                localpg.stop(each)
            except RuntimeError:
                pass
        for each in (standby, primary):
            folder = localpg.data_dir(each)
            if folder.exists() and root not in folder.parents:  # kept outside (unreachable tmp): remove it too
                subprocess.run(localpg._as_postgres(["rm", "-rf", str(folder)]), check=False)
        subprocess.run(["rm", "-rf", str(root)], check=False)
        shutil.rmtree(root, ignore_errors=True)


def _admin(settings: LocalPgSettings) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=settings.host,
        port=settings.resolved_port(),
        user=settings.user,
        password=settings.password(),
        dbname="guatu",
        autocommit=True,
        connect_timeout=5,
    )


@pytest.fixture(scope="module")
def served(clusters: tuple[LocalPgSettings, LocalPgSettings]) -> Iterator[tuple[str, Path]]:
    """Yield the base URL of `guatu serve` on the primary with the standby for reads, and its log file."""
    primary, standby = clusters
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="guatu-replica-log-")) / "serve.log"
    env = _env(primary) | {
        "DATABASE_URL": primary.admin_url(),  # a superuser: guatu connects as guatu_app
        "DATABASE_READ_URL": f"postgresql://127.0.0.1:{standby.resolved_port()}/guatu",
        "GUATU_READ_MAX_LAG_S": "3600",  # the test pauses replay: never "too far behind" here
        "GUATU_READ_RETRY_S": "600",
        "GUATU_ARCHIVE_DIR": str(log.parent),
    }
    with log.open("wb") as out:
        child = subprocess.Popen([GUATU, "serve", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert child.poll() is None and time.monotonic() < deadline, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", log
    finally:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(10)
        shutil.rmtree(log.parent, ignore_errors=True)


def _tile_of(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    n = 2**z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return z, x, y


def _generation(tile: httpx.Response) -> int:
    """Return the layer generation a tile's ETag carries (``"<generation>-<hash>"``)."""
    return int(tile.headers["ETag"].removeprefix("W/").strip('"').split("-")[0])


def _until(what: str, check: Any, seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.1)


def test_a_standby_cut_off_from_its_primary_is_left_for_the_primary_whoever_wrote(
    clusters: tuple[LocalPgSettings, LocalPgSettings],
) -> None:
    """Its receiver gone, a standby reports no lag of its own: the router measures it against the primary's WAL.

    The writes here are plain SQL from elsewhere (another worker, `guatu import`): the router
    never saw them.
    """
    primary, standby = clusters
    engines = [make_engine(url=primary.admin_url("guatu")), make_engine(url=standby.admin_url("guatu"))]
    router = ReadRouter(*engines, max_lag_s=1.0, retry_s=600, fresh_s=0.0, recheck_s=0.0)
    with _admin(standby) as on_standby, _admin(primary) as on_primary:
        conninfo = on_standby.execute("SHOW primary_conninfo").fetchone()[0]
        try:
            assert _until("the standby chosen", lambda: router.choose() == "standby")
            on_standby.execute("ALTER SYSTEM SET primary_conninfo = ''")
            on_standby.execute("SELECT pg_reload_conf()")
            _until("the receiver gone", lambda: not on_standby.execute("SELECT 1 FROM pg_stat_wal_receiver").fetchone())
            on_primary.execute("CREATE TABLE IF NOT EXISTS lag_probe (n int)")
            on_primary.execute("INSERT INTO lag_probe VALUES (1)")
            assert router.choose() == "standby"  # not yet max_lag_s behind
            time.sleep(1.5)
            assert router.choose() == "primary"  # 1.5 s behind what the primary had, though it says 0
            assert router.state.lag_s > 1.0
        finally:
            on_standby.execute(psycopg.sql.SQL("ALTER SYSTEM SET primary_conninfo = {}").format(conninfo))
            on_standby.execute("SELECT pg_reload_conf()")
            on_primary.execute("DROP TABLE IF EXISTS lag_probe")
        assert _until("the standby back", lambda: router.choose() == "standby", seconds=60)
    router.close()
    for engine in engines:
        engine.dispose()


def test_reads_go_to_the_standby_writers_read_their_writes_and_a_standby_gone_is_no_500(
    clusters: tuple[LocalPgSettings, LocalPgSettings], served: tuple[str, Path]
) -> None:
    primary, standby = clusters
    base, log = served
    tokens = tokens_for(primary.role_url(OWNER_ROLE), "guatu")
    writer = httpx.Client(base_url=base, headers=bearer(tokens[WRITER]), timeout=30)
    reader = httpx.Client(base_url=base, headers=bearer(tokens[READER]), timeout=30)
    features = "/api/layers/parcels/features"

    # the users reached the standby; a read-only route reads it
    _until("the standby has the test users", lambda: reader.get(features).status_code == 200)
    first = reader.get(features)
    assert first.status_code == 200 and first.headers["X-Guatu-Read"] == "standby", first.text

    parcel = sample("parcels")
    ring = parcel["geometry"]["coordinates"][0]
    lon, lat = sum(p[0] for p in ring[:-1]) / (len(ring) - 1), sum(p[1] for p in ring[:-1]) / (len(ring) - 1)
    z, x, y = _tile_of(lon, lat, 15)
    tile_path = f"/tiles/parcels/{z}/{x}/{y}.pbf"
    empty = reader.get(tile_path)
    assert empty.status_code == 204 and empty.headers["X-Guatu-Read"] == "standby"

    # replay paused: what the writer writes now is on the primary only
    with _admin(standby) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
    try:
        created = writer.post(features, json=parcel)
        assert created.status_code == 201, created.text
        fid = created.json()["id"]
        assert writer.cookies.get("guatu_read_after"), "no WAL position came back with the write"

        own = writer.get(f"{features}/{fid}")  # the writer reads its write at once: from the primary
        assert own.status_code == 200 and own.headers["X-Guatu-Read"] == "primary", own.text
        other = reader.get(f"{features}/{fid}")  # another user reads the standby, not yet there
        assert other.status_code == 404 and other.headers["X-Guatu-Read"] == "standby", other.text

        # tiles: the writer's is rendered on the primary at the new generation; the lagging standby's
        # old tile keeps its own, older generation and is never cached or served under the new one
        new = writer.get(tile_path)
        assert new.status_code == 200 and new.content and new.headers["X-Guatu-Read"] == "primary"
        for _ in range(2):  # the second from the cache, if anything was cached
            old = reader.get(tile_path)
            assert old.status_code == 204 and old.headers["X-Guatu-Read"] == "standby", old.status_code
            assert _generation(old) < _generation(new), (old.headers["ETag"], new.headers["ETag"])
    finally:
        with _admin(standby) as conn:
            conn.execute("SELECT pg_wal_replay_resume()")

    # replayed: the other user reads the change from the standby, the writer too
    seen = _until("the write replayed", lambda: (r := reader.get(f"{features}/{fid}")).status_code == 200 and r)
    assert seen.headers["X-Guatu-Read"] == "standby" and seen.json()["id"] == fid
    _until(
        "the writer back on the standby", lambda: writer.get(f"{features}/{fid}").headers["X-Guatu-Read"] == "standby"
    )
    tile = reader.get(tile_path)
    assert tile.status_code == 200 and tile.content and tile.headers["X-Guatu-Read"] == "standby"
    assert _generation(tile) == _generation(new) and tile.content == new.content
    stats = reader.get("/api/layers/parcels/stats")
    assert stats.status_code == 200 and stats.headers["X-Guatu-Read"] == "standby", stats.text
    assert "read standby unavailable" not in log.read_text()

    # the standby stopped: the same reads are answered from the primary, with one warning
    localpg.stop(standby)
    for _ in range(3):
        again = reader.get(f"{features}/{fid}")
        assert again.status_code == 200 and again.headers["X-Guatu-Read"] == "primary", again.text
        tile = reader.get(tile_path)
        assert tile.status_code == 200 and tile.content and tile.headers["X-Guatu-Read"] == "primary"
        listed = reader.get(features)
        assert listed.status_code == 200 and fid in [f["id"] for f in listed.json()["features"]]
    said = log.read_text()
    assert said.count("read standby unavailable") == 1, said
    assert "Traceback" not in said, said
    # writes never went anywhere but the primary
    with _admin(primary) as conn:
        row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    assert row == (False,)


def test_the_standby_url_names_the_server_and_keeps_the_app_role(monkeypatch: pytest.MonkeyPatch) -> None:
    """The standby is a physical copy: guatu logs in there as on the primary, whoever DATABASE_READ_URL names."""
    monkeypatch.setenv("DATABASE_READ_URL", "postgres://someone:else@10.0.0.12:5433/guatu?sslmode=require")
    settings = DbSettings()
    app, standby = make_url(settings.url()), make_url(settings.read_url() or "")
    assert (standby.host, standby.port, standby.database) == ("10.0.0.12", 5433, "guatu")
    assert (standby.username, standby.password) == (app.username, app.password)
    assert standby.query == {"sslmode": "require"}
    monkeypatch.delenv("DATABASE_READ_URL")
    assert DbSettings().read_url() is None


def test_a_standby_nobody_answers_sends_reads_to_the_primary_with_one_warning(
    engine: Engine, tokens: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listens where DATABASE_READ_URL points: every read is the primary's, no 500, one warning."""
    nowhere = engine.url.set(port=free_port()).render_as_string(hide_password=False)
    standby = make_engine(url=nowhere, connect_timeout=2)
    app = create_app(engine=engine, read_engine=standby)
    with (
        caplog.at_level(logging.WARNING, "guatu.replica"),
        TestClient(app, raise_server_exceptions=False, headers=bearer(tokens[READER])) as client,
    ):
        for _ in range(3):
            for path in (
                "/api/layers/parcels/stats",
                "/api/layers/parcels/features",
                "/tiles/parcels/15/27341/12846.pbf",
            ):
                answer = client.get(path)
                assert answer.status_code in (200, 204), answer.text
                assert answer.headers["X-Guatu-Read"] == "primary"
        assert "X-Guatu-Read" not in client.get("/api/layers").headers  # a route not routed says nothing
    said = [r.getMessage() for r in caplog.records if "read standby unavailable" in r.getMessage()]
    assert len(said) == 1, said
    standby.dispose()
