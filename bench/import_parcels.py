"""Import of generated parcels: `guatu import` beside `ogr2ogr -f PostgreSQL`, one run, same database.

Usage: `make bench` (or `.venv/bin/python bench/import_parcels.py --n 100000`). ogr2ogr
validates nothing; guatu checks every feature (schema, geometry validity, codes against
location) and diffs against the table before one transaction. Prints time, peak RSS and
the ratio. guatu imports as the app role, as it serves, acting as the bench's administrator
(bench/signin.py: the CLI states its operator as an administrator itself, the API is sent an
API token), so its writes pass row-level security and are recorded in the change log;
ogr2ogr, which makes its own table, and the resets between runs (DELETE from the upload log
and of the change log the bench wrote, VACUUM) run as the owner.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import make_url, text
from sqlalchemy.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import goals  # noqa: E402
from bench.procs import descendants, measured, status_mb  # noqa: E402
from bench.signin import admin_token, bearer  # noqa: E402
from spatial.db import make_engine  # noqa: E402
from spatial.settings import db_settings  # noqa: E402
from tests.browser import free_port  # noqa: E402

COMMUNITY = "370214009001"
OTHER = "370214009002"


def ledger_properties(i: int) -> dict[str, Any]:
    """Return parcel I's properties under the layer's own field names."""
    return {
        "code": f"{COMMUNITY}{i:07d}",
        "land_use_code": "0103",
        "ownership": "集体",
        "use_status": "承包" if i % 11 else "闲置",
    }


def generate(n: int, path: Path, properties: Callable[[int], dict[str, Any]] = ledger_properties) -> None:
    """Write N parcels (25 m squares in rows east of Chengyang) with PROPERTIES as a GeoJSON FeatureCollection."""
    side = 25 / 111_320
    per_row = 400
    with path.open("w", encoding="utf-8") as out:
        out.write('{"type": "FeatureCollection", "features": [\n')
        for i in range(n):
            x = 120.50 + (i % per_row) * side * 1.25
            y = 36.10 + (i // per_row) * side
            ring = [[x, y], [x + side, y], [x + side, y + side], [x, y + side], [x, y]]
            feature = {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [[[round(a, 8), round(b, 8)] for a, b in ring]]},
                "properties": properties(i),
            }
            out.write(("," if i else "") + json.dumps(feature, ensure_ascii=False) + "\n")
        out.write("]}\n")


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run ARGV; return (seconds, peak RSS in MB of that child alone: bench/procs.py's launcher)."""
    with tempfile.TemporaryFile() as out:
        elapsed, peak_mb, code = measured(argv, env, out)
        if code != 0:
            out.seek(0)
            raise SystemExit(f"{argv[0]} failed:\n{out.read()[-4000:].decode(errors='replace')}")
    return elapsed, peak_mb


class Server:
    """`guatu serve` in a child process, for timing uploads through the API (warm, as users meet it)."""

    def __init__(self, env: dict[str, str], token: str) -> None:
        self.port = free_port()
        self.headers = {"Content-Type": "application/geo+json"} | bearer(token)
        guatu = str(Path(sys.executable).parent / "guatu")
        self.child = subprocess.Popen(
            [guatu, "serve", "--port", str(self.port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 180  # a loaded machine: the start-up's imports alone may take a while
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1).read()
                return
            except OSError:
                if self.child.poll() is not None:
                    break
                time.sleep(0.1)
        raise SystemExit("guatu serve did not start")

    def upload(self, path: Path) -> tuple[float, float]:
        """POST the file; return (seconds, the server's peak RSS so far in MB)."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/layers/parcels/uploads",
            data=path.read_bytes(),
            headers=self.headers,
        )
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=600) as response:
            body = json.loads(response.read())
        elapsed = time.perf_counter() - started
        if body.get("status") != "committed":
            raise SystemExit(f"upload through the API ended {body.get('status')}")
        status = Path(f"/proc/{self.child.pid}/status").read_text()
        peak_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
        return elapsed, peak_kb / 1024

    def peaks(self) -> tuple[float, float]:
        """Return the peak RSS in MB of the server process, and the sum of its worker processes' peaks."""
        main = status_mb(self.child.pid, "VmHWM")
        workers = sum(status_mb(pid, "VmHWM") for pid in descendants(self.child.pid))
        return main, workers

    def post(self, body: bytes) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/layers/parcels/uploads",
            data=body,
            headers=self.headers,
        )
        with urllib.request.urlopen(request, timeout=1800) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer

    def stop(self) -> None:
        self.child.terminate()
        self.child.wait(10)


def server_memory(env: dict[str, str], token: str, files: list[Path]) -> tuple[float, float, float]:
    """Upload FILES at once to a fresh server; return (seconds, server peak MB, worker processes' peaks MB)."""
    from concurrent.futures import ThreadPoolExecutor

    server = Server(env, token)
    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(len(files)) as pool:
            answers = list(pool.map(lambda path: server.post(path.read_bytes()), files))
        elapsed = time.perf_counter() - started
        if any(a.get("status") != "committed" for a in answers):
            raise SystemExit(f"a big upload ended {[a.get('status') for a in answers]}")
        main, workers = server.peaks()
    finally:
        server.stop()
    return elapsed, main, workers


def change_mark(engine: Engine) -> int:
    """Return the last change-log entry before the bench writes any (what :func:`reset` goes back to)."""
    with engine.begin() as conn:
        return int(conn.execute(text("SELECT coalesce(max(id), 0) FROM change_log")).scalar_one())


def reset(engine: Engine, sha: str, mark: int) -> None:
    """Remove the bench's rows, uploads and change-log entries (after MARK), as ENGINE (the owner's).

    So the next import is a fresh one into the same tables. VACUUM too: dead copies of the same
    keys would slow the next run's unique-index checks.
    """
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL statement_timeout = 0"))  # 600,000 deletes, each logged whole
        conn.execute(text("DROP TABLE IF EXISTS bench_ogr_parcels"))
        conn.execute(text("DELETE FROM parcels WHERE code LIKE :p"), {"p": COMMUNITY + "%"})
        conn.execute(text("DELETE FROM uploads WHERE sha256 = :s"), {"s": sha})
        conn.execute(text("DELETE FROM change_log WHERE id > :m"), {"m": mark})  # the bench's, the delete's too
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("SET statement_timeout = 0"))  # a million rows' dead copies: minutes on a busy machine
        conn.execute(text("VACUUM ANALYZE parcels"))
        conn.execute(text("VACUUM ANALYZE change_log"))


def main() -> None:
    """Generate, import each way RUNS times, print the comparison."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--memory-mb", type=int, default=0, help="also import a file of this size; report peak RSS")
    args = parser.parse_args()
    ogr2ogr = shutil.which("ogr2ogr")
    if not ogr2ogr:
        raise SystemExit("ogr2ogr not found: `make bench` installs gdal-bin")
    url = db_settings().owner_url()  # ogr2ogr creates a table: the owner's job, never the app's
    engine = make_engine(url=url)
    libpq = make_url(url)
    pg = f"PG:host={libpq.host} port={libpq.port} dbname={libpq.database} user={libpq.username}" + (
        f" password={libpq.password}" if libpq.password else ""
    )
    ogr_argv = [ogr2ogr, "-f", "PostgreSQL", pg, "", "-nln", "bench_ogr_parcels", "-lco", "GEOMETRY_NAME=geom"]
    ogr_argv += ["-a_srs", "EPSG:4490", "-nlt", "PROMOTE_TO_MULTI", "--config", "PG_USE_COPY", "YES"]
    guatu = str(Path(sys.executable).parent / "guatu")
    results: dict[str, list[tuple[float, float]]] = {"ogr": [], "cli": [], "api": []}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "parcels.geojson"
        started = time.perf_counter()
        generate(args.n, path)
        size_mb = path.stat().st_size / 1e6
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        print(f"generated {args.n} parcels ({size_mb:.0f} MB) in {time.perf_counter() - started:.1f} s", flush=True)
        env = dict(os.environ, GUATU_ARCHIVE_DIR=str(Path(folder) / "archive"))
        if path.stat().st_size * 1.1 > 200e6:  # a million parcels: beyond the server's default upload limit
            env["GUATU_MAX_UPLOAD_BYTES"] = str(int(path.stat().st_size * 1.1))
        ogr_argv[4] = str(path)
        token = admin_token(url)
        mark = change_mark(engine)
        server = Server(env, token)
        try:
            for run in range(args.runs):
                reset(engine, sha, mark)
                results["ogr"].append(timed(ogr_argv))
                said = results["ogr"][-1]
                print(f"run {run + 1}: ogr2ogr {said[0]:.2f} s, peak RSS {said[1]:.0f} MB", flush=True)
                reset(engine, sha, mark)
                results["cli"].append(timed([guatu, "import", str(path), "--layer", "parcels"], env=env))
                said = results["cli"][-1]
                print(f"run {run + 1}: guatu import {said[0]:.2f} s, peak RSS {said[1]:.0f} MB", flush=True)
                reset(engine, sha, mark)
                results["api"].append(server.upload(path))
                print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1][0]:.2f} s" for k, v in results.items()), flush=True)
        finally:
            server.stop()
        with engine.begin() as conn:
            stored = conn.execute(text("SELECT count(*) FROM parcels WHERE code LIKE :p"), {"p": COMMUNITY + "%"})
            stored_count = stored.scalar()
        reset(engine, sha, mark)
        memory = None
        if args.memory_mb:
            big = Path(folder) / "big.geojson"
            n_big = int(args.n * args.memory_mb / size_mb)
            generate(n_big, big)
            big_sha = hashlib.sha256(big.read_bytes()).hexdigest()
            reset(engine, big_sha, mark)
            seconds, rss = timed([guatu, "import", str(big), "--layer", "parcels"], env=env)
            memory = (n_big, big.stat().st_size / 1e6, seconds, rss)
            reset(engine, big_sha, mark)
            other = Path(folder) / "big2.geojson"  # the same parcels under other codes, uploaded at the same time
            other.write_bytes(big.read_bytes().replace(f'"{COMMUNITY}'.encode(), f'"{OTHER}'.encode()))
            roomy = dict(env, GUATU_MAX_UPLOAD_BYTES=str(int(big.stat().st_size * 1.1)))  # "200 MB": about the limit
            served = [server_memory(roomy, token, [big])]
            reset(engine, big_sha, mark)  # not a replay: the same bytes again are answered from the record
            served.append(server_memory(roomy, token, [big, other]))
            with engine.begin() as conn:
                conn.execute(text("SET LOCAL statement_timeout = 0"))
                conn.execute(text("DELETE FROM parcels WHERE code LIKE :p"), {"p": OTHER + "%"})
                other_sha = hashlib.sha256(other.read_bytes()).hexdigest()
                conn.execute(text("DELETE FROM uploads WHERE sha256 = :s"), {"s": other_sha})
            reset(engine, big_sha, mark)

    def median(values: list[float]) -> float:
        return statistics.median(values)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, CPython {platform.python_version()}")
    print(f"{args.n} parcels, {size_mb:.0f} MB, median of {args.runs} runs (min in brackets)")
    print(f"{'path':<58}{'seconds':>16}{'peak RSS MB':>14}")
    rows = [
        ("ogr", "ogr2ogr -f PostgreSQL (validates nothing)"),
        ("cli", "guatu import (CLI, cold start, checks + diff + 1 txn)"),
        ("api", "guatu POST /api/layers/parcels/uploads (warm server)"),
    ]
    for key, label in rows:
        secs = [r[0] for r in results[key]]
        rss = max(r[1] for r in results[key])
        print(f"{label:<58}{median(secs):>9.2f} ({min(secs):.2f}){rss:>14.0f}")
    ogr = median([r[0] for r in results["ogr"]])
    for key in ("cli", "api"):
        ratio = median([r[0] for r in results[key]]) / ogr
        goal = "goal met" if ratio <= 1.0 else "goal not met"
        print(f"ratio guatu {key} / ogr2ogr: {ratio:.2f}x (goal ≤ 1.0×, issue 15: {goal})")
        goals.record("import", f"GeoJSON guatu {key} / ogr2ogr", ratio, 1.0)
    print("peak RSS: each process its own (guatu import and ogr2ogr: the command alone; API: the server process)")
    print(f"rows stored by guatu in the last run: {stored_count}")
    if memory:
        n_big, mb, seconds, rss = memory
        print(f"memory: {n_big} parcels, {mb:.0f} MB file: guatu import {seconds:.1f} s, peak RSS {rss:.0f} MB")
        for count, (took, main, workers) in zip((1, 2), served, strict=True):
            print(
                f"memory: {count} × {mb:.0f} MB at once through guatu serve: {took:.1f} s, peak RSS server "
                f"{main:.0f} MB, its worker processes {workers:.0f} MB (sum of their peaks), "
                f"together {main + workers:.0f} MB"
            )


if __name__ == "__main__":
    main()
