"""Several workers: throughput of a mixed read load with 1 and 2 `guatu serve` workers, one run.

Usage: `make bench` (or `.venv/bin/python bench/workers.py [--seconds 20] [--clients 8]`)
against the database `make run` uses (the demo street; loaded if empty). Each server is
started as `guatu serve` starts it (`api.server.server_config` and `serve`), on a free port,
then CLIENTS threads send a mix for SECONDS — vector tiles at z14–z17, features by bbox,
statistics of a view, a ledger page — each thread on keep-alive connections it opens
afresh every RECONNECT requests (so the kernel shares them out among the workers, as a
proxy's many connections are). Printed per server: requests/s, p50/p95, the share each
worker answered (`X-Guatu-Worker`), and the peak RSS of each process (VmHWM).

Beside asyncio + h11 (guarded, what guatu serves with), the same load on uvloop with the
guarded h11 protocol, and on uvloop + httptools — uvicorn's fast parser, which
`GuardedH11Protocol` does not wrap: no header deadline, no body stall timeout, no
connection cap (a reference only). The rows are left out when uvloop/httptools are not
installed (`pip install uvloop httptools`).

The goal (issue 15): 2 workers ≥ 1.6× the throughput of 1 on 2 cores. The client threads
run on the same machine and take their share of the cores.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import goals  # noqa: E402
from bench.procs import descendants, status_mb  # noqa: E402
from bench.signin import act, admin_token, bearer  # noqa: E402
from layers import demo  # noqa: E402
from layers.base import REGISTRY  # noqa: E402
from spatial.db import make_engine  # noqa: E402
from spatial.settings import db_settings  # noqa: E402
from tests.browser import free_port  # noqa: E402

GOAL = 1.6
RECONNECT = 25
SERVER = """
import sys
import uvicorn
from api import server
from api.settings import ApiSettings

port, workers, loop, http = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
settings = ApiSettings()
server.raise_open_files_limit()
server.prefer_the_event_loop(settings)
config = server.server_config(
    "api.main:app_factory", settings, factory=True, port=port, workers=workers, loop=loop, log_level="warning"
)
if http == "httptools":  # unguarded: uvicorn's own protocol with the same limits uvicorn has
    options = {k: getattr(config, k) for k in ("limit_concurrency", "timeout_keep_alive", "backlog", "workers")}
    config = uvicorn.Config(
        "api.main:app_factory", factory=True, host=config.host, port=port, loop=loop, http="httptools",
        ws="none", log_level="warning", proxy_headers=True, **options,
    )
server.serve(config)
"""


@dataclass
class Run:
    """What one server answered under the load."""

    name: str
    workers: int
    seconds: float = 0.0
    times: list[float] = field(default_factory=list)
    by_worker: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    rss: dict[int, float] = field(default_factory=dict)
    cpu_s: float = 0.0
    """CPU seconds (user + system) the server's processes used while measured."""
    load: float = 0.0
    """The machine's 1-minute load average at the end (everyone's work, not only this bench's)."""

    @property
    def rate(self) -> float:
        return len(self.times) / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms(self) -> float:
        """Server CPU milliseconds per answered request (less noisy than req/s on a shared machine)."""
        return 1000 * self.cpu_s / len(self.times) if self.times else 0.0

    def p(self, q: float) -> float:
        ordered = sorted(self.times)
        return ordered[max(0, math.ceil(len(ordered) * q) - 1)] * 1000


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    n = 2**z
    y = (1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n
    return z, int((lon + 180) / 360 * n), int(y)


def requests_of(extent: list[float], count: int, seed: int) -> list[str]:
    """Return COUNT paths of the mix: tiles 50%, features by bbox 20%, statistics 15%, ledger pages 15%."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        width = rng.uniform(0.002, 0.01)
        x = rng.uniform(extent[0], max(extent[0], extent[2] - width))
        y = rng.uniform(extent[1], max(extent[1], extent[3] - width * 0.6))
        bbox = f"{x:.6f},{y:.6f},{x + width:.6f},{y + width * 0.6:.6f}"
        kind = rng.random()
        if kind < 0.5:
            z, tx, ty = tile_of(x, y, rng.choice((14, 15, 16, 17)))
            out.append(f"/tiles/parcels/{z}/{tx}/{ty}.pbf")
        elif kind < 0.7:
            out.append(f"/api/layers/parcels/features?bbox={bbox}&limit=500")
        elif kind < 0.85:
            out.append(f"/api/layers/parcels/stats?bbox={bbox}")
        else:
            out.append(f"/api/layers/parcels/rows?page={rng.randint(1, 20)}&size=50")
    return out


def start(port: int, workers: int, loop: str, http: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, GUATU_WORKER_HEADER="1", GUATU_WORKERS=str(workers))
    return subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port), str(workers), loop, http],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def ready(base: str, workers: int, deadline_s: float = 180) -> None:
    """Wait until WORKERS different workers have answered /healthz."""
    seen: set[str] = set()
    deadline = time.monotonic() + deadline_s
    while len(seen) < workers:
        if time.monotonic() > deadline:
            raise SystemExit(f"{base}: only {len(seen)} of {workers} workers answered")
        try:
            with httpx.Client(timeout=5) as client:
                seen.add(client.get(base + "/healthz").headers["x-guatu-worker"])
        except httpx.HTTPError:
            time.sleep(0.3)


def cpu_seconds(pids: list[int]) -> float:
    """Return the user + system CPU seconds PIDS have used so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def load(run: Run, base: str, token: str, paths: list[str], clients: int, seconds: float, pids: list[int]) -> None:
    """Send PATHS from CLIENTS threads for SECONDS (after a warm-up); fill RUN."""
    lock = threading.Lock()
    stop = threading.Event()
    measuring = threading.Event()

    def client(index: int) -> None:
        rng = random.Random(index)
        sent = 0
        http = httpx.Client(base_url=base, headers=bearer(token), timeout=60)
        try:
            while not stop.is_set():
                path = paths[rng.randrange(len(paths))]
                started = time.perf_counter()
                try:
                    response = http.get(path)
                    ok = response.status_code in (200, 204, 304)
                except httpx.HTTPError:
                    response, ok = None, False
                took = time.perf_counter() - started
                if measuring.is_set() and not stop.is_set():
                    with lock:
                        if ok and response is not None:
                            run.times.append(took)
                            worker = response.headers.get("x-guatu-worker", "?")
                            run.by_worker[worker] = run.by_worker.get(worker, 0) + 1
                        else:
                            run.errors += 1
                sent += 1
                if sent % RECONNECT == 0:
                    http.close()
                    http = httpx.Client(base_url=base, headers=bearer(token), timeout=60)
        finally:
            http.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(min(5.0, seconds / 4))  # warm-up: pools, caches, imports
    cpu = cpu_seconds(pids)
    measuring.set()
    started = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    run.seconds = time.perf_counter() - started
    run.cpu_s = cpu_seconds(pids) - cpu
    run.load = os.getloadavg()[0]
    for thread in threads:
        thread.join(60)


def measure(
    name: str, workers: int, loop: str, http: str, token: str, paths: list[str], args: argparse.Namespace
) -> Run:
    port = free_port()
    server = start(port, workers, loop, http)
    base = f"http://127.0.0.1:{port}"
    run = Run(name, workers)
    try:
        ready(base, workers)
        load(run, base, token, paths, args.clients, args.seconds, [server.pid, *descendants(server.pid)])
        for pid in [server.pid, *descendants(server.pid)]:
            run.rss[pid] = status_mb(pid, "VmHWM")
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait(10)
    return run


def main() -> None:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1, help="run every server this many times, interleaved")
    args = parser.parse_args()

    engine = make_engine()
    with act(Session(engine)) as session:
        if not session.execute(REGISTRY["parcels"].model.__table__.select().limit(1)).first():
            demo.load(session)
            session.commit()
    from layers.features import layer_summary

    with act(Session(engine)) as session:
        summary = layer_summary(session, REGISTRY["parcels"])
    engine.dispose()
    paths = requests_of(summary["extent"], 4000, seed=15)
    token = admin_token(db_settings().owner_url())

    servers = [("asyncio + h11 (guarded), 1 worker", 1, "asyncio", "h11")]
    servers.append(("asyncio + h11 (guarded), 2 workers", 2, "asyncio", "h11"))
    if importlib.util.find_spec("uvloop"):
        servers.append(("uvloop + h11 (guarded), 1 worker", 1, "uvloop", "h11"))
        servers.append(("uvloop + h11 (guarded), 2 workers", 2, "uvloop", "h11"))
        if importlib.util.find_spec("httptools"):
            servers.append(("uvloop + httptools (UNGUARDED), 1 worker", 1, "uvloop", "httptools"))
    runs: dict[str, list[Run]] = {name: [] for name, *_ in servers}
    for _ in range(args.rounds):
        for name, workers, loop, http in servers:
            runs[name].append(measure(name, workers, loop, http, token, paths, args))

    cores = os.cpu_count()
    print(
        f"machine: {platform.node()} {platform.machine()}, {cores} cores (shared with other work), "
        f"{platform.python_implementation()} {platform.python_version()}"
    )
    print(
        f"parcels: {summary['count']}; mix: 50% tiles z14–z17, 20% features by bbox, 15% stats, 15% ledger pages; "
        f"{args.clients} client threads, {args.seconds:g} s each, {args.rounds} round(s), best round shown"
    )
    print(
        f"{'server':<44}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'CPU ms/req':>11}{'errors':>8}{'load':>6}"
        "  share per worker / peak RSS MB"
    )
    best: dict[str, Run] = {}
    for name, done in runs.items():
        run = best[name] = max(done, key=lambda r: r.rate)
        total = sum(run.by_worker.values()) or 1
        share = " ".join(f"{100 * n / total:.0f}%" for n in sorted(run.by_worker.values(), reverse=True))
        workers = [mb for pid, mb in run.rss.items() if str(pid) in run.by_worker]
        others = [mb for pid, mb in run.rss.items() if str(pid) not in run.by_worker]
        rss = "workers " + " ".join(f"{mb:.0f}" for mb in workers)
        if run.workers > 1:
            rss += f", supervisor {others[0]:.0f}" + "".join(f", other {mb:.0f}" for mb in others[1:])
        print(
            f"{name:<44}{run.rate:>8.1f}{run.p(0.5):>9.1f}{run.p(0.95):>9.1f}{run.cpu_ms:>11.2f}{run.errors:>8}{run.load:>6.1f}"
            f"  {share} / {rss}"
        )
    one, two = best[servers[0][0]], best[servers[1][0]]
    ratio = two.rate / one.rate
    verdict = "goal met" if ratio >= GOAL else "goal not met"
    print(f"2 workers / 1 worker throughput: {ratio:.2f}x (goal ≥ {GOAL}x on 2 cores): {verdict}")
    goals.record("workers", "2 workers / 1 worker throughput", ratio, GOAL, lower_is_better=False)
    print(f"2 workers / 1 worker server CPU per request: {two.cpu_ms / one.cpu_ms:.2f}x (1.0: no cost of its own)")
    print(f"('load': the machine's 1-minute load average at the end of each run, on {cores} cores: all its work)")
    if len(servers) > 2:
        for name in list(best)[2:]:
            base = one if best[name].workers == 1 else two
            print(
                f"{name} / asyncio + h11 same workers: {best[name].rate / base.rate:.2f}x throughput, "
                f"{best[name].cpu_ms / base.cpu_ms:.2f}x CPU per request"
            )
    print("(peak RSS per process, VmHWM; 'other': multiprocessing's resource tracker; the machine was shared)")
    if statistics.mean(r.errors for r in best.values()) > 0:
        print("note: some requests failed (errors column)")


if __name__ == "__main__":
    main()
