"""Soak: ten minutes of mixed, partly hostile traffic against one `guatu serve` on loopback.

At once, for the whole run:
- tile reads at the rate one worker sustains (one client, back to back, random parcel tiles z14–17);
- feature reads (one client: a bounding box of parcels, then one of them by id);
- 2 uploaders, each sending a 20 MB parcel file again and again (the first creates its rows,
  every later one changes all of them), retrying after a 503 as told;
- 4 printers, each asking for an A3 wall map of the demo street, again and again;
- 200 slow clients that open a connection and trickle a request's headers a byte at a time;
- a probe asking `/healthz` every 100 ms, from a process of its own.
Printed: p50/p95/p99 per route, /healthz p99, statuses (no 500 may appear), the server's peak
RSS (with its print workers) and open files, how long slow clients were held, and whether every
committed upload is in the database exactly (0 lost writes). The peer here is the server's own
idle self: the same probe before the load starts.

Usage: `make bench` or `.venv/bin/python bench/soak.py [--minutes 10]`. It uses its own
database (`guatu_bench_soak`) in the local cluster, or the DATABASE_URL server's. Every client
but the probe and the slow ones signs in as the bench's administrator (bench/signin.py: its
API token); the reset before the run (rows and change log of earlier soaks) is the owner's.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import multiprocessing
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procs import descendants, status_mb  # noqa: E402
from bench.signin import act, admin_token, bearer  # noqa: E402
from tests.browser import free_port  # noqa: E402

DATABASE = "guatu_bench_soak"
STREET = "370214001"
UPLOAD_MB = 20
SLOW_CLIENTS = 200
PRINTERS = 4
UPLOADERS = 2
GUATU = str(Path(sys.executable).parent / "guatu")
mix = {"uploaders": UPLOADERS, "printers": PRINTERS, "slow": SLOW_CLIENTS}
"""The traffic of this run (the defaults, or fewer to see what each part costs)."""
HEADERS: dict[str, str] = {}
"""What every signed-in client sends: the bench administrator's token (set once the database is ready)."""


def environment(folder: Path) -> dict[str, str]:
    """Return the environment of the soak's guatu: its own database and archive."""
    env = dict(os.environ, GUATU_ARCHIVE_DIR=str(folder / "archive"), GUATU_PG_DATABASE=DATABASE)
    env["GUATU_PER_CLIENT"] = "8"  # every simulated user comes from 127.0.0.1: their places are not one person's
    if env.get("DATABASE_URL"):
        base = env["DATABASE_URL"].rsplit("/", 1)[0]
        env["DATABASE_URL"] = f"{base}/{DATABASE}"
    return env


ROUND_MARK = "soak-round-mark-0000"
RUN = time.strftime("%m%d%H%M%S")


def parcels_file(loop: int, round_: int, target_mb: float) -> bytes:
    """Return about TARGET_MB of parcels of uploader LOOP, named for ROUND_ (same codes every round)."""
    return _template(loop, target_mb).replace(ROUND_MARK.encode(), round_name(loop, round_).encode())


def round_name(loop: int, round_: int) -> str:
    """Return the name uploader LOOP gives its parcels in ROUND_ of this run (never the same bytes twice:
    an upload of bytes sent before is answered from the record, and would measure nothing)."""
    return f"s{RUN}-{loop}-{round_:06d}"


@functools.lru_cache(maxsize=4)
def _template(loop: int, target_mb: float) -> bytes:
    """Return the parcels of uploader LOOP with a mark where each round's name goes (made once)."""
    side = 25 / 111_320
    out = ['{"type":"FeatureCollection","features":[']
    size, i = 0, 0
    while size < target_mb * 1e6:
        x = 120.50 + (i % 400) * side * 1.25
        y = 36.10 + loop * 0.05 + (i // 400) * side
        ring = [[x, y], [x + side, y], [x + side, y + side], [x, y + side], [x, y]]
        feature = {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [[[round(a, 8), round(b, 8)] for a, b in ring]]},
            "properties": {
                "code": f"37021409900{loop}{i:07d}",
                "name": ROUND_MARK,
                "land_use_code": "0103",
                "ownership": "集体",
                "use_status": "承包" if i % 11 else "闲置",
            },
        }
        piece = ("," if i else "") + json.dumps(feature, ensure_ascii=False)
        out.append(piece)
        size += len(piece.encode())
        i += 1
    out.append("]}")
    return "".join(out).encode()


def percentile(values: list[float], share: float) -> float:
    """Return the SHARE-th percentile of VALUES (nearest rank)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class Recorder:
    """Latencies and statuses per route."""

    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.status: dict[str, Counter[int]] = defaultdict(Counter)

    def add(self, route: str, seconds: float, status: int) -> None:
        self.latency[route].append(seconds)
        self.status[route][status] += 1


async def timed(client: httpx.AsyncClient, record: Recorder, route: str, method: str, url: str, **kw: Any) -> Any:
    started = time.perf_counter()
    try:
        response = await client.request(method, url, **kw)
    except httpx.HTTPError:
        record.add(route, time.perf_counter() - started, 0)
        return None
    record.add(route, time.perf_counter() - started, response.status_code)
    return response


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int]:
    import math

    n = 2**z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return x, y


async def tiles(base: str, record: Recorder, stop: float, extent: list[float]) -> None:
    """Read random parcel tiles of the demo street at z14–17, back to back, with the map's filters."""
    async with httpx.AsyncClient(base_url=base, timeout=60, headers=HEADERS) as client:
        while time.monotonic() < stop:
            z = random.randint(14, 17)
            x, y = tile_of(random.uniform(extent[0], extent[2]), random.uniform(extent[1], extent[3]), z)
            status = random.choice(["", "闲置", "闲置,出租", "自用"])
            params = {"status": status} if status else {}
            await timed(client, record, "tile", "GET", f"/tiles/parcels/{z}/{x}/{y}.pbf", params=params)


async def features(base: str, record: Recorder, stop: float, extent: list[float]) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=60, headers=HEADERS) as client:
        while time.monotonic() < stop:
            x = random.uniform(extent[0], extent[2] - 0.005)
            y = random.uniform(extent[1], extent[3] - 0.005)
            bbox = f"{x},{y},{x + 0.005},{y + 0.005}"
            listed = await timed(
                client,
                record,
                "features bbox",
                "GET",
                "/api/layers/parcels/features",
                params={"bbox": bbox, "limit": 200},
            )
            if listed is not None and listed.status_code == 200 and listed.json()["features"]:
                fid = random.choice(listed.json()["features"])["id"]
                await timed(client, record, "feature by id", "GET", f"/api/layers/parcels/features/{fid}")


async def uploads(base: str, record: Recorder, stop: float, loop: int, committed: dict[int, int]) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=900, headers=HEADERS) as client:
        round_ = 0
        while time.monotonic() < stop:
            body = await asyncio.to_thread(parcels_file, loop, round_, UPLOAD_MB)
            response = await timed(
                client,
                record,
                "upload 20 MB",
                "POST",
                "/api/layers/parcels/uploads",
                content=body,
                headers={"Content-Type": "application/geo+json"},
            )
            if response is not None and response.status_code == 201 and response.json()["status"] == "committed":
                committed[loop] = round_
                round_ += 1
            elif response is not None and response.status_code == 503:
                await asyncio.sleep(float(response.headers.get("retry-after", "5")))


async def prints(base: str, record: Recorder, stop: float) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=900, headers=HEADERS) as client:
        while time.monotonic() < stop:
            response = await timed(client, record, "print A3", "GET", "/api/print", params={"scope": STREET})
            if response is not None and response.status_code == 503:
                await asyncio.sleep(float(response.headers.get("retry-after", "5")))


async def slow_client(host: str, port: int, stop: float, held: list[float]) -> None:
    """Trickle a request's headers a byte every 2 s; when cut off, note how long and start again."""
    request = b"GET /healthz HTTP/1.1\r\nHost: soak\r\nX-Slow: " + b"a" * 10_000
    while time.monotonic() < stop:
        opened = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(1)
            continue
        try:
            for byte in request:
                writer.write(bytes([byte]))
                await writer.drain()
                try:
                    if await asyncio.wait_for(reader.read(1), 2) == b"":
                        break  # the server closed it
                except TimeoutError:
                    pass
                if time.monotonic() > stop:
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            held.append(time.monotonic() - opened)
            writer.close()


def probe(base: str, stop: float, out: Any) -> None:
    """Ask /healthz every 100 ms (own process: the load generator's loop does not skew it)."""
    latencies, statuses = [], Counter()
    with httpx.Client(base_url=base, timeout=10) as client:
        while time.time() < stop:
            started = time.perf_counter()
            try:
                statuses[client.get("/healthz").status_code] += 1
            except httpx.HTTPError:
                statuses[0] += 1
            latencies.append(time.perf_counter() - started)
            time.sleep(0.1)
    out.put((latencies, dict(statuses)))


async def sampler(pid: int, stop: float, peaks: dict[str, float]) -> None:
    while time.monotonic() < stop:
        tree = [pid, *descendants(pid)]
        peaks["rss_server"] = max(peaks.get("rss_server", 0), status_mb(pid, "VmRSS"))
        peaks["rss_all"] = max(peaks.get("rss_all", 0), sum(status_mb(p, "VmRSS") for p in tree))
        try:
            peaks["files"] = max(peaks.get("files", 0), len(os.listdir(f"/proc/{pid}/fd")))
        except OSError:
            pass
        await asyncio.sleep(1)


def start_server(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    log = open(Path(env["GUATU_ARCHIVE_DIR"]).parent / "server.log", "wb")  # noqa: SIM115 - lives with the child
    child = subprocess.Popen([GUATU, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return child
        except OSError:
            time.sleep(0.1)
    raise SystemExit("guatu serve did not start")


def idle_probe(base: str) -> list[float]:
    with httpx.Client(base_url=base, timeout=10) as client:
        out = []
        for _ in range(100):
            started = time.perf_counter()
            client.get("/healthz")
            out.append(time.perf_counter() - started)
            time.sleep(0.02)
    return out


async def soak(base: str, pid: int, seconds: float) -> tuple[Recorder, dict[int, int], list[float], dict[str, float]]:
    record = Recorder()
    committed: dict[int, int] = {}
    held: list[float] = []
    peaks: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=base, timeout=30, headers=HEADERS) as client:
        extent = (await client.get("/api/layers/divisions")).json()["extent"]  # the demo street, not the soak's rows
    stop = time.monotonic() + seconds
    port = int(base.rsplit(":", 1)[1])
    jobs = [tiles(base, record, stop, extent), features(base, record, stop, extent), sampler(pid, stop, peaks)]
    jobs += [uploads(base, record, stop, loop, committed) for loop in range(mix["uploaders"])]
    jobs += [prints(base, record, stop) for _ in range(mix["printers"])]
    jobs += [slow_client("127.0.0.1", port, stop, held) for _ in range(mix["slow"])]
    await asyncio.gather(*jobs)
    return record, committed, held, peaks


def _engine(env: dict[str, str], *, owner: bool = False) -> Any:
    """Return an engine on the soak's database: of the app's role, or of the owner's (OWNER)."""
    from spatial.db import make_engine
    from spatial.settings import db_settings

    os.environ.update({k: env[k] for k in ("GUATU_PG_DATABASE", "DATABASE_URL") if k in env})
    db_settings.cache_clear()
    return make_engine(url=db_settings().owner_url()) if owner else make_engine()


def sign_in(env: dict[str, str]) -> None:
    """Make the bench's administrator in the soak's database; every signed-in client sends its token."""
    from spatial.settings import db_settings

    _engine(env, owner=True).dispose()  # points db_settings at the soak's database
    HEADERS.update(bearer(admin_token(db_settings().owner_url())))


def reset(env: dict[str, str]) -> None:
    """Remove the rows earlier soaks uploaded, and their change log, as the owner: each run starts from the demo street.

    The demo street is loaded by `guatu demo load`, not uploaded: every change-log entry with an
    upload is a soak's.
    """
    engine = _engine(env, owner=True)
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL statement_timeout = 0"))  # each delete is logged whole
        conn.execute(text("DELETE FROM parcels WHERE code LIKE '37021409900%'"))
        conn.execute(text("DELETE FROM change_log WHERE upload_id IS NOT NULL OR before->>'code' LIKE '37021409900%'"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE parcels"))
        conn.execute(text("VACUUM ANALYZE change_log"))
    engine.dispose()


def lost_writes(env: dict[str, str], committed: dict[int, int]) -> list[str]:
    """Return what the database lacks of the committed uploads (empty: nothing lost)."""
    engine = _engine(env)
    problems = []
    from sqlalchemy.orm import Session

    with act(Session(engine)) as conn:  # the bench's administrator: the app role alone sees nothing
        for loop, round_ in committed.items():
            prefix = f"37021409900{loop}%"
            total, named = conn.execute(
                text("SELECT count(*), count(*) FILTER (WHERE name = :n) FROM parcels WHERE code LIKE :p"),
                {"p": prefix, "n": round_name(loop, round_)},
            ).one()
            expected = parcels_file(loop, round_, UPLOAD_MB).count(b'"code"')
            if total != expected or named != expected:
                problems.append(f"uploader {loop}: {total} rows, {named} of round {round_}, expected {expected}")
    engine.dispose()
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--uploaders", type=int, default=UPLOADERS)
    parser.add_argument("--printers", type=int, default=PRINTERS)
    parser.add_argument("--slow-clients", type=int, default=SLOW_CLIENTS)
    parser.add_argument("--server-log", type=Path, help="keep the server's log here")
    args = parser.parse_args()
    mix.update(uploaders=args.uploaders, printers=args.printers, slow=args.slow_clients)
    with tempfile.TemporaryDirectory() as folder:
        env = environment(Path(folder))
        for step in (["db", "upgrade"], ["demo", "load", "--if-empty"]):
            subprocess.run([GUATU, *step], env=env, check=True, capture_output=True)
        reset(env)
        sign_in(env)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = start_server(env, port)
        try:
            idle = idle_probe(base)
            stop_at = time.time() + args.minutes * 60
            results: multiprocessing.Queue[Any] = multiprocessing.Queue()
            prober = multiprocessing.Process(target=probe, args=(base, stop_at, results))
            prober.start()
            record, committed, held, peaks = asyncio.run(soak(base, server.pid, args.minutes * 60))
            health, health_status = results.get(timeout=120)
            prober.join(30)
        finally:
            server.terminate()
            server.wait(30)
        missing = lost_writes(env, committed)
        log = (Path(folder) / "server.log").read_text(errors="replace")
        if args.server_log:
            args.server_log.write_text(log)
    tracebacks = log.count("Traceback")
    print(
        f"# soak, {args.minutes:g} min, {mix['uploaders']} uploaders, {mix['printers']} printers, "
        f"{mix['slow']} slow clients, {platform.node()} ({platform.machine()}, {os.cpu_count()} cores), "
        f"{time.strftime('%Y-%m-%d %H:%M')}"
    )
    print("| route | requests | p50 ms | p95 ms | p99 ms | statuses |")
    print("|---|---|---|---|---|---|")
    for route in sorted(record.latency):
        values = [v * 1000 for v in record.latency[route]]
        statuses = ", ".join(f"{k}×{v}" for k, v in sorted(record.status[route].items()))
        print(
            f"| {route} | {len(values)} | {percentile(values, 0.5):.0f} | {percentile(values, 0.95):.0f} "
            f"| {percentile(values, 0.99):.0f} | {statuses} |"
        )
    health_ms = [v * 1000 for v in health]
    idle_ms = [v * 1000 for v in idle]
    print(
        f"| /healthz (probe, every 100 ms) | {len(health_ms)} | {percentile(health_ms, 0.5):.1f} "
        f"| {percentile(health_ms, 0.95):.1f} | {percentile(health_ms, 0.99):.1f} | "
        + ", ".join(f"{k}×{v}" for k, v in sorted(health_status.items()))
        + " |"
    )
    print(
        f"| /healthz idle, before the load (the peer) | {len(idle_ms)} | {percentile(idle_ms, 0.5):.1f} "
        f"| {percentile(idle_ms, 0.95):.1f} | {percentile(idle_ms, 0.99):.1f} | |"
    )
    print(f"\n/healthz p99 under load / idle: {percentile(health_ms, 0.99) / percentile(idle_ms, 0.99):.1f}×")
    print(
        f"peak RSS: server {peaks.get('rss_server', 0):.0f} MB, with print workers {peaks.get('rss_all', 0):.0f} MB; "
        f"peak open files {peaks.get('files', 0):.0f}"
    )
    print(
        f"slow clients: {len(held)} connections, held median {statistics.median(held):.1f} s, max {max(held):.1f} s"
        if held
        else "slow clients: none"
    )
    five_hundreds = sum(c[500] for c in record.status.values()) + health_status.get(500, 0)
    print(f"500s: {five_hundreds}; tracebacks in the server log: {tracebacks}")
    print(
        f"uploads committed per uploader: {dict(sorted(committed.items()))}; lost writes: "
        + ("; ".join(missing) if missing else "0")
    )


if __name__ == "__main__":
    main()
