"""Read throughput with reads on the primary only, and with a hot standby taking them (DATABASE_READ_URL), one run.

Usage: `.venv/bin/python bench/replica.py [--parcels 100000] [--seconds 20] [--clients 8] [--rounds 2]`

Makes two local clusters of its own under a temporary folder (nothing of the checkout's cluster
is touched): a primary, migrated and filled with a generated county of parcels
(bench/tile_serving.py's generator), and a streaming-replication hot standby of it
(`spatial.localpg.make_standby`, pg_basebackup -R). Then, for each arrangement in turn, starts
`guatu serve` (one process, tile cache off so every tile is rendered by PostgreSQL):

- primary: DATABASE_URL only, every read on the primary;
- standby: the same, plus DATABASE_READ_URL: read-only routes on the standby.

CLIENTS threads, each with its own keep-alive connection, cycle through one seeded list of
requests (60 % tiles at z14–16, 20 % features in a small bbox, 20 % statistics of a bbox) for
SECONDS. Meanwhile a writer updates one parcel every 0.2 s on the primary (as the owner; each
write raises the layer's generation) and times how long the standby takes to replay it (the
replication lag a reader could see). Each arrangement runs ROUNDS times in ABBA order (drift on a
shared machine cancels) and the medians are compared. Prints requests/s, p50/p95, where the reads were served
(the `X-Guatu-Read` header) and the lag; `--json` prints the same as JSON.

Both clusters, the app and the clients share this one machine: a standby on its own machine
adds that machine's CPU and disk; here it only spreads the same cores over two servers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import signin  # noqa: E402
from bench.tile_serving import data_extent, generate, tile_of  # noqa: E402
from spatial import localpg  # noqa: E402
from spatial.db import parse_lsn  # noqa: E402
from spatial.settings import APP_ROLE, OWNER_ROLE, LocalPgSettings  # noqa: E402

GUATU = str(Path(sys.executable).parent / "guatu")
SEED = 15


def free_port() -> int:
    """Return a port nothing listens on."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def libpq(url: str) -> str:
    """Return a SQLAlchemy URL as a libpq one."""
    from sqlalchemy import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def env_of(primary: LocalPgSettings) -> dict[str, str]:
    """Return the environment naming PRIMARY as the local cluster."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATABASE_READ_URL")}
    env.update(GUATU_PG_DATA_DIR=str(primary.data_dir), GUATU_PG_PORT=str(primary.resolved_port()))
    return env


def requests_mix(extent: list[float], count: int) -> list[str]:
    """Return COUNT seeded request paths over EXTENT: tiles z14–16, features and statistics of small views."""
    rng = random.Random(SEED)
    west, south, east, north = extent
    out = []
    for _ in range(count):
        lon, lat = rng.uniform(west, east), rng.uniform(south, north)
        pick = rng.random()
        if pick < 0.6:
            z = rng.choice((14, 15, 16))
            x, y = tile_of(lon, lat, z)
            out.append(f"/tiles/parcels/{z}/{x}/{y}.pbf")
        else:
            box = f"{lon:.5f},{lat:.5f},{lon + 0.004:.5f},{lat + 0.003:.5f}"
            if pick < 0.8:
                out.append(f"/api/layers/parcels/features?bbox={box}&limit=200")
            else:
                out.append(f"/api/layers/parcels/stats?bbox={box}")
    return out


class Writer(threading.Thread):
    """Update one parcel every 0.2 s on the primary; time each write's replay on the standby."""

    def __init__(self, owner_dsn: str, standby_dsn: str, ids: int) -> None:
        super().__init__(daemon=True)
        self.owner_dsn, self.standby_dsn, self.ids = owner_dsn, standby_dsn, ids
        self.stop = threading.Event()
        self.lags_ms: list[float] = []
        self.errors = 0

    def run(self) -> None:
        """Write until stopped."""
        rng = random.Random(SEED + 1)
        with (
            psycopg.connect(self.owner_dsn, autocommit=True, options=signin.options()) as primary,
            psycopg.connect(self.standby_dsn, autocommit=True) as standby,
        ):
            while not self.stop.wait(0.2):
                fid = rng.randint(1, self.ids)
                primary.execute("UPDATE parcels SET geom = geom WHERE id = %s", (fid,))
                committed = time.perf_counter()
                row = primary.execute("SELECT pg_current_wal_lsn()::text").fetchone()
                target = parse_lsn(row[0] if row else None) or 0
                while True:
                    got = standby.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()
                    if (parse_lsn(got[0] if got else None) or 0) >= target:
                        self.lags_ms.append((time.perf_counter() - committed) * 1000)
                        break
                    if time.perf_counter() - committed > 30:
                        self.errors += 1
                        break
                    time.sleep(0.001)


def serve(primary: LocalPgSettings, standby: LocalPgSettings | None, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start `guatu serve` on PRIMARY (reads on STANDBY when given); return it and its base URL once it answers."""
    port = free_port()
    env = env_of(primary) | {
        "DATABASE_URL": primary.admin_url(),
        "GUATU_TILE_CACHE_SIZE": "0",
        "GUATU_ARCHIVE_DIR": str(log.parent),
    }
    if standby is not None:
        env["DATABASE_READ_URL"] = f"postgresql://127.0.0.1:{standby.resolved_port()}/guatu"
    with log.open("wb") as out:
        child = subprocess.Popen([GUATU, "serve", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if child.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"guatu serve did not start:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return child, base
        except httpx.HTTPError:
            time.sleep(0.2)


def load(base: str, token: str, paths: list[str], clients: int, seconds: float) -> dict[str, Any]:
    """Run CLIENTS threads over PATHS for SECONDS; return throughput, latencies and where reads were served."""
    latencies: list[float] = []
    served: dict[str, int] = {}
    errors = [0]
    lock = threading.Lock()
    end = time.perf_counter() + seconds

    def client(offset: int) -> None:
        mine: list[float] = []
        where: dict[str, int] = {}
        failed = 0
        with httpx.Client(base_url=base, headers=signin.bearer(token), timeout=60) as http:
            i = offset
            while time.perf_counter() < end:
                started = time.perf_counter()
                response = http.get(paths[i % len(paths)])
                mine.append(time.perf_counter() - started)
                if response.status_code >= 400:
                    failed += 1
                key = response.headers.get("X-Guatu-Read", "primary (no replica)")
                where[key] = where.get(key, 0) + 1
                i += 1
        with lock:
            latencies.extend(mine)
            errors[0] += failed
            for key, n in where.items():
                served[key] = served.get(key, 0) + n

    threads = [threading.Thread(target=client, args=(k * len(paths) // clients,)) for k in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "per_s": len(latencies) / wall,
        "p50_ms": statistics.median(latencies) * 1000,
        "p95_ms": latencies[int(0.95 * (len(latencies) - 1))] * 1000,
        "errors": errors[0],
        "served": served,
    }


def main() -> None:
    """Make the clusters, measure both arrangements, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parcels", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each arrangement, in ABBA order")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="guatu-bench-replica-"))
    root.chmod(0o755)
    primary = LocalPgSettings(data_dir=root / "primary", port=free_port())
    standby = LocalPgSettings(data_dir=root / "standby", port=free_port())
    report: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared with other work; both clusters on it",
        "parcels": args.parcels,
        "clients": args.clients,
        "seconds": args.seconds,
        "rounds": [],
    }
    try:
        print(f"clusters under {root} …", file=sys.stderr)  # noqa: T201
        localpg.ensure_running(primary)
        done = subprocess.run([GUATU, "db", "upgrade"], env=env_of(primary), capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(done.stdout + done.stderr)
        owner = libpq(primary.role_url(OWNER_ROLE))
        report["generate_s"] = generate(owner, args.parcels)
        localpg.make_standby(primary, standby)
        token = signin.admin_token(primary.role_url(OWNER_ROLE))
        extent = data_extent(libpq(primary.role_url(APP_ROLE)))
        paths = requests_mix(extent, 2000)
        standby_dsn = libpq(standby.admin_url())
        order = ["primary", "standby", "standby", "primary"] * ((args.rounds + 1) // 2)  # ABBA: drift cancels
        for slot, arrangement in enumerate(order[: 2 * args.rounds]):
            log = root / f"serve-{slot}-{arrangement}.log"
            child, base = serve(primary, standby if arrangement == "standby" else None, log)
            try:
                load(base, token, paths[:200], args.clients, 3)  # warm: pools, caches, connections
                writer = Writer(owner, standby_dsn, args.parcels)
                writer.start()
                measured = load(base, token, paths, args.clients, args.seconds)
                writer.stop.set()
                writer.join()
                measured["lags_ms"] = writer.lags_ms
                measured["unreplayed_30s"] = writer.errors
                measured["warnings"] = log.read_text().count("read standby unavailable")
                report["rounds"].append({"arrangement": arrangement, **measured})
            finally:
                child.terminate()
                child.wait(20)
    finally:
        for each in (standby, primary):
            try:
                localpg.stop(each)
            except RuntimeError as exc:
                print(exc, file=sys.stderr)  # noqa: T201
        subprocess.run(["rm", "-rf", str(root)], check=False)
    for name in ("primary", "standby"):
        rounds = [r for r in report["rounds"] if r["arrangement"] == name]
        lags = sorted(lag for r in rounds for lag in r.pop("lags_ms")) or [float("nan")]
        report[name] = {
            "per_s": statistics.median(r["per_s"] for r in rounds),
            "p50_ms": statistics.median(r["p50_ms"] for r in rounds),
            "p95_ms": statistics.median(r["p95_ms"] for r in rounds),
            "errors": sum(r["errors"] for r in rounds),
            "warnings": sum(r["warnings"] for r in rounds),
            "served": {k: sum(r["served"].get(k, 0) for r in rounds) for r in rounds for k in r["served"]},
            "lag_ms": {
                "writes": len(lags),
                "p50": statistics.median(lags),
                "p95": lags[int(0.95 * (len(lags) - 1))],
                "max": lags[-1],
                "unreplayed_30s": sum(r["unreplayed_30s"] for r in rounds),
            },
        }
    report["ratio"] = report["standby"]["per_s"] / report["primary"]["per_s"]
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))  # noqa: T201
        return
    print_report(report)


def print_report(report: dict[str, Any]) -> None:
    """Print the figures as a table."""
    out = print  # noqa: T202 - the bench's output
    out(f"只读副本 Read replica — {report['machine']}")
    out(f"{report['parcels']} parcels, {report['clients']} clients, {report['seconds']:.0f} s a round")
    for r in report["rounds"]:
        out(f"  round: reads on the {r['arrangement']:<8} {r['per_s']:8.1f} req/s  p50 {r['p50_ms']:.1f} ms")
    out("reads: 60% tiles z14-16 (cache off), 20% features in a bbox, 20% statistics of a bbox; one guatu process")
    out("median of the rounds:")
    out(f"{'arrangement':<26}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'errors':>8}  served by")
    for name, label in (("primary", "reads on the primary"), ("standby", "reads on the standby")):
        m = report[name]
        served = ", ".join(f"{k} {v}" for k, v in sorted(m["served"].items()))
        out(f"{label:<26}{m['per_s']:>8.1f}{m['p50_ms']:>9.1f}{m['p95_ms']:>9.1f}{m['errors']:>8}  {served}")
    out(f"throughput with the standby / primary only: {report['ratio']:.2f}x (issue 15 sets no figure for it)")
    for name in ("primary", "standby"):
        lag = report[name]["lag_ms"]
        out(
            f"replication lag under the '{name}' load: {lag['writes']} writes, replayed p50 {lag['p50']:.1f} ms,"
            f" p95 {lag['p95']:.1f} ms, max {lag['max']:.1f} ms ({lag['unreplayed_30s']} not within 30 s)"
        )


if __name__ == "__main__":
    main()
