"""Vector tiles of a county: guatu's tile endpoint beside the raw ST_AsMVT query and tipg, one run.

Usage: `.venv/bin/python bench/tile_serving.py [--parcels 1000000] [--tiles 500] [--runs 1]`
(needs the database server `make database` starts, or DATABASE_URL's). Works in its own
database, `guatu_bench_tiles` on that server, migrated with guatu's migrations (as the owner
role, which also fills it, in SQL, with a generated county of parcels: truncating and
re-indexing are the owner's); the county is kept between runs (`--regenerate`
rebuilds it). A fixed, seeded list of tiles at zooms 12–18 over the county is fetched one tile at a
time, the contenders taking turns tile by tile (the machine's load drifts; each tile is
timed under the same load for all), then by 8 concurrent clients sharing the list (each tile
once), contender after contender, by:

- raw: the statement guatu renders a tile with (`layers.tiles`), through psycopg, no HTTP,
  planned for every tile as guatu's are (see RawClient);
- guatu: `GET /tiles/parcels/{z}/{x}/{y}.pbf` from uvicorn, one worker, tile cache and tile store off;
- tipg (PyPI, in its own venv bench/.venv-tipg, made on first use) serving the same table,
  with the same properties, tile buffer and no feature cap;
- guatu with its tile store on (tiles up to z14 on disk, as deployed), in-memory cache off: after
  the warm-up the store holds the list's z12–14 tiles, the rest are rendered;
- guatu again with its tile cache on, every fetch a hit (the floor of its HTTP path).

Each client keeps its own connection (psycopg, or an httpx keep-alive one) from pass to pass.
Each contender first fetches the whole list once, untimed, with 8 clients, so PostgreSQL's
cache, the servers' pools and every connection are equally warm. HTTP is asked for without
compression (tipg gzips otherwise; guatu does not). Prints p50/p95 per tile, wall time,
tiles/s, the database connections each pass opened, guatu's ratios to raw and tipg beside
issue 15's goals ("goal not met" where not) and its per-tile overhead over raw by zoom;
`--json` prints the same as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import httpx
import psycopg
from mapbox_vector_tile.Mapbox import vector_tile_pb2  # type: ignore[import-untyped]
from psycopg import sql as pgsql
from sqlalchemy import create_engine, make_url, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import goals, signin  # noqa: E402
from layers import migrate  # noqa: E402
from layers.base import REGISTRY  # noqa: E402
from layers.tiles import BUFFER, EXTENT, SESSION_SETTINGS, tile_params, tile_properties, tile_statement  # noqa: E402
from layers.tiles import Tile as TileAddress  # noqa: E402
from spatial import roles  # noqa: E402
from spatial.db import make_engine  # noqa: E402
from spatial.settings import db_settings  # noqa: E402
from tests.browser import free_port  # noqa: E402

DATABASE = "guatu_bench_tiles"
LAYER = REGISTRY["parcels"]
COUNTY = (120.3, 36.1, 120.8, 36.5)
"""The generated county (west, south, east, north) in EPSG:4490: about 45 × 44 km east of Qingdao."""
ZOOM_SHARES = {12: 4, 13: 8, 14: 16, 15: 20, 16: 20, 17: 18, 18: 14}
"""Percent of the tile list at each zoom: most at street level, where a map is read."""
SEED = 4490
CLIENTS = 8
STORE_MAX_ZOOM = 14
"""guatu's default: tiles up to z14 are kept in its tile store on disk (GUATU_TILE_STORE_MAX_ZOOM)."""
CONTENDERS = ("raw", "guatu", "tipg", "guatu-store", "guatu-cached")
GOALS = (
    ("sequential", "raw", "p50", 1.3, False),
    ("sequential", "raw", "p95", 1.1, False),
    ("concurrent", "tipg", "p50", 1.0, True),
    ("concurrent", "tipg", "p95", 1.0, True),
)
"""Issue 15's goals: (mode, peer, statistic, ratio limit, strictly below): p50 within 1.3x and p95 within
1.1x of the raw statement one tile at a time; ahead of tipg at p50 and p95 with 8 clients."""
TIPG_VERSION = "1.6.1"
TIPG_VENV = ROOT / "bench" / ".venv-tipg"
USE_STATUS_SHARES = {
    "承包": 25,
    "自用": 22,
    "出租": 20,
    "闲置": 12,
    "入股": 5,
    "在建": 5,
    "出借": 4,
    "待处置": 4,
    "已处置": 3,
}
LAND_USE = ("0101", "0103", "0201", "0301", "0601", "0702", "1006", "1104")

Tile = tuple[int, int, int]


# --- the database -------------------------------------------------------------------------


def bench_url() -> str:
    """Return the app's SQLAlchemy URL of the bench database, on the server guatu is configured for.

    Every contender reads as the app role (guatu_app on the local cluster): the role guatu serves as,
    and as the same administrator (bench/signin.py): guatu by an API token, raw and tipg by
    stating that actor when they connect, so all see the same rows through the same policies.
    """
    return db_settings().url(DATABASE)


def owner_url() -> str:
    """Return the owner's SQLAlchemy URL of the bench database: it migrates, truncates and re-indexes."""
    return db_settings().owner_url(DATABASE)


def libpq_dsn(url: str) -> str:
    """Return URL (a SQLAlchemy URL) as a libpq one, for psycopg and tipg."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def prepare_database() -> None:
    """Create the bench database if missing (owned by guatu_owner, as guatu's own), migrate it as the owner."""
    settings = db_settings()
    try:
        roles.provision(settings.admin_url(DATABASE), settings.role_password_file)
    except psycopg.OperationalError as exc:
        raise SystemExit(f"database server unreachable ({exc}): run `make database` first") from None
    engine = make_engine(url=owner_url())
    try:
        migrate.upgrade(engine, app_role=make_url(bench_url()).username)
    finally:
        engine.dispose()


def grid(n: int) -> tuple[int, int]:
    """Return (columns, rows) of a grid of at least N cells over the county, cells near square on the ground."""
    west, south, east, north = COUNTY
    aspect = (east - west) * math.cos(math.radians((south + north) / 2)) / (north - south)
    columns = max(1, math.ceil(math.sqrt(n * aspect)))
    return columns, math.ceil(n / columns)


def generation_sql(n: int) -> str:
    """Return the INSERT that writes N parcels, one per grid cell in rows from the south-west.

    Each parcel is a pentagon (four corners and a point on its north edge) set 10% in from its
    cell, every vertex moved by up to 8% of the cell: irregular, valid, never overlapping.
    Codes are 12-digit village codes (2,000 parcels a village) and a 7-digit sequence.
    """
    west, south, east, north = COUNTY
    columns, rows = grid(n)
    dx, dy = (east - west) / columns, (north - south) / rows

    def shares(values: dict[str, int]) -> str:
        total, bound, arms = sum(values.values()), 0, []
        for value, share in values.items():
            bound += share
            arms.append(f"WHEN r_status < {bound / total:.4f} THEN '{value}'")
        return "CASE " + " ".join(arms[:-1]) + f" ELSE '{list(values)[-1]}' END"

    def jitter(name: str, base: float, size: float) -> str:
        return f"{name} + {size!r} * ({base} + 0.08 * (2 * random() - 1))"

    land_use = ", ".join(f"'{code}'" for code in LAND_USE)
    return f"""
        INSERT INTO parcels (geom, code, community_code, name, land_use_code, ownership, use_status,
                             stage, idle_since)
        SELECT ST_Multi(ST_SetSRID(ST_MakePolygon(ST_MakeLine(ARRAY[p1, p2, p3, p4, p5, p1])), 4490)),
               village || lpad((i % 2000 + 1)::text, 7, '0'),
               village,
               CASE WHEN r_name < 0.2 THEN '地块' || (i + 1) END,
               (ARRAY[{land_use}])[1 + floor(r_land * {len(LAND_USE)})::int],
               CASE WHEN r_owner < 0.88 THEN '集体' WHEN r_owner < 0.98 THEN '国有' ELSE '争议' END,
               status,
               CASE WHEN status = '闲置' THEN '未盘活' END,
               CASE WHEN status = '闲置' THEN date '2020-01-01' + floor(r_land * 1800)::int END
        FROM (
            SELECT i, village, r_name, r_land, r_owner, {shares(USE_STATUS_SHARES)} AS status,
                   ST_MakePoint({jitter("x", 0.1, dx)}, {jitter("y", 0.1, dy)}) AS p1,
                   ST_MakePoint({jitter("x", 0.9, dx)}, {jitter("y", 0.1, dy)}) AS p2,
                   ST_MakePoint({jitter("x", 0.9, dx)}, {jitter("y", 0.9, dy)}) AS p3,
                   ST_MakePoint({jitter("x", 0.5, dx)}, {jitter("y", 0.9, dy)}) AS p4,
                   ST_MakePoint({jitter("x", 0.1, dx)}, {jitter("y", 0.9, dy)}) AS p5
            FROM (
                SELECT i, {west!r} + (i % {columns}) * {dx!r} AS x, {south!r} + (i / {columns}) * {dy!r} AS y,
                       (370214100000 + i / 2000)::text AS village,
                       random() AS r_name, random() AS r_land, random() AS r_owner, random() AS r_status
                FROM generate_series(0, {n - 1}) AS i
            ) AS cell
            OFFSET 0  -- each vertex drawn once: p1 closes the ring it opens
        ) AS parcel
    """


def parcel_count(dsn: str) -> int:
    """Return the number of parcels in the bench database (as the bench's administrator)."""
    with psycopg.connect(dsn, options=signin.options()) as conn:
        row = conn.execute("SELECT count(*) FROM parcels").fetchone()
        return int(row[0]) if row else 0


def generate(dsn: str, n: int) -> float:
    """Replace the parcels of the bench database by N generated ones, as DSN (the owner); return the seconds taken.

    The non-unique indexes (the GiST one above all) are dropped first and built again after
    the insert, from their own definitions: faster, and a better tree than one grown row by row.
    """
    started = time.perf_counter()
    with psycopg.connect(dsn) as conn:
        conn.execute("SET statement_timeout = 0")
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute("SET synchronous_commit = off")
        indexes = conn.execute(
            """SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i
               JOIN pg_class c ON c.oid = i.indexrelid
               WHERE i.indrelid = 'parcels'::regclass AND NOT i.indisunique"""
        ).fetchall()
        conn.execute("TRUNCATE parcels RESTART IDENTITY")
        for name, _ in indexes:
            conn.execute(pgsql.SQL("DROP INDEX {}").format(pgsql.Identifier(name)))
        conn.execute("SELECT setseed(%s)", (SEED / 10_000,))
        conn.execute(generation_sql(n).encode())
        for _, definition in indexes:  # parcels are partitioned by county: an index ON ONLY the parent builds none
            conn.execute(definition.replace(" ON ONLY ", " ON ", 1).encode())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute("VACUUM (ANALYZE) parcels")
    return time.perf_counter() - started


def data_extent(dsn: str) -> list[float]:
    """Return the extent of the bench parcels (west, south, east, north)."""
    with psycopg.connect(dsn, options=signin.options()) as conn:
        row = conn.execute(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT ST_Extent(geom) AS e FROM parcels) s"
        ).fetchone()
    if not row or row[0] is None:
        raise SystemExit("the bench database holds no parcels")
    return [float(v) for v in row]


def server_versions(dsn: str) -> dict[str, str]:
    """Return the PostgreSQL, PostGIS, GEOS and PROJ versions of the server."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT current_setting('server_version'), postgis_lib_version(), postgis_geos_version(),"
            " postgis_proj_version()"
        ).fetchone()
    assert row is not None
    return {"postgresql": row[0], "postgis": row[1], "geos": row[2].split("-")[0], "proj": row[3].split()[0]}


# --- the tiles ----------------------------------------------------------------------------


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int]:
    """Return the column and row of the tile at zoom Z holding (LON, LAT)."""
    n = 2**z
    column = int((lon + 180) / 360 * n)
    row = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return min(column, n - 1), min(row, n - 1)


def quotas(count: int) -> dict[int, int]:
    """Split COUNT tiles over the zooms by ZOOM_SHARES (largest remainders get the rest)."""
    exact = {z: count * share / sum(ZOOM_SHARES.values()) for z, share in ZOOM_SHARES.items()}
    out = {z: int(v) for z, v in exact.items()}
    for z in sorted(exact, key=lambda z: exact[z] - out[z], reverse=True)[: count - sum(out.values())]:
        out[z] += 1
    return out


def tile_list(count: int, extent: tuple[float, float, float, float], seed: int = SEED) -> list[Tile]:
    """Return COUNT distinct tiles over EXTENT, split by zoom as ZOOM_SHARES says, in a seeded shuffled order."""
    rng = random.Random(seed)
    west, south, east, north = extent
    tiles: list[Tile] = []
    for z, wanted in quotas(count).items():
        x0, y0 = tile_of(west, north, z)
        x1, y1 = tile_of(east, south, z)
        width, height = x1 - x0 + 1, y1 - y0 + 1
        if wanted > width * height:
            raise SystemExit(f"only {width * height} tiles at zoom {z} over the county; asked for {wanted}")
        tiles += [(z, x0 + i % width, y0 + i // width) for i in rng.sample(range(width * height), wanted)]
    rng.shuffle(tiles)
    return tiles


def fingerprint(tiles: list[Tile]) -> str:
    """Return a short hash of the tile list, to tell runs over the same list."""
    return hashlib.sha256("\n".join(f"{z}/{x}/{y}" for z, x, y in tiles).encode()).hexdigest()[:16]


# --- the contenders -----------------------------------------------------------------------


class Client(Protocol):
    """One client of a contender: its own connection."""

    def fetch(self, tile: Tile) -> bytes:
        """Return the MVT bytes of TILE (empty for an empty tile)."""

    def close(self) -> None:
        """Close the connection."""


@dataclass
class Contender:
    """A way of serving tiles, with its clients: each its own connection, kept from pass to pass."""

    key: str
    label: str
    connect: Callable[[], Client]
    clients: list[Client] = field(default_factory=list)

    def open(self, count: int) -> list[Client]:
        """Return COUNT clients, connecting those not yet open (a pass never pays for a new connection)."""
        while len(self.clients) < count:
            self.clients.append(self.connect())
        return self.clients[:count]

    def close(self) -> None:
        """Close every client."""
        for client in self.clients:
            client.close()
        self.clients.clear()


def raw_statement() -> str:
    """Return guatu's tile statement, compiled as SQLAlchemy sends it through psycopg."""
    dialect = create_engine("postgresql+psycopg://").dialect  # compiles only: never connects
    return str(text(tile_statement(LAYER)).compile(dialect=dialect))


def raw_params(tile: Tile) -> dict[str, Any]:
    """Return the parameters guatu binds for TILE (layers.tiles.tile_params)."""
    return tile_params(LAYER, TileAddress(*tile))


class RawClient:
    """guatu's tile statement through one psycopg connection, with guatu's options, planned as guatu's.

    Never prepared: guatu's connections roll back after every request and psycopg forgets its
    prepared statements at a rollback, so each of guatu's tiles is planned afresh (a custom
    plan). A raw client left to prepare after 5 runs would get PostgreSQL's generic plan, a
    different plan for the same statement, and the ratio would no longer be guatu's overhead.
    """

    def __init__(self, dsn: str) -> None:
        settings = db_settings()
        options = f"-c jit=off -c statement_timeout={settings.statement_timeout_ms}"
        options += "".join(f" -c {name}={value}" for name, value in SESSION_SETTINGS)  # as guatu sets per tile
        options += " " + signin.options()  # the actor guatu states per request
        self.conn = psycopg.connect(dsn, autocommit=True, options=options, prepare_threshold=None)
        self.statement = raw_statement()

    def fetch(self, tile: Tile) -> bytes:
        row = self.conn.execute(self.statement, raw_params(tile)).fetchone()
        return bytes(row[0]) if row and row[0] else b""

    def close(self) -> None:
        self.conn.close()


class HttpClient:
    """One keep-alive HTTP connection to a tile server, asking for uncompressed tiles."""

    def __init__(self, base: str, template: str, headers: dict[str, str] | None = None) -> None:
        self.template = template
        headers = {"Accept-Encoding": "identity"} | (headers or {})
        self.client = httpx.Client(base_url=base, headers=headers, timeout=300)
        self.client.get("/healthz").raise_for_status()  # connect now, not in the first timed fetch

    def fetch(self, tile: Tile) -> bytes:
        z, x, y = tile
        response = self.client.get(self.template.format(z=z, x=x, y=y))
        response.raise_for_status()
        return response.content if response.status_code == 200 else b""

    def close(self) -> None:
        self.client.close()


class Server:
    """A uvicorn child process (one worker, no access log), its output kept for errors."""

    def __init__(self, name: str, python: Path, app: list[str], env: dict[str, str], cwd: Path) -> None:
        self.name = name
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log: IO[bytes] = tempfile.TemporaryFile()
        argv = [str(python), "-m", "uvicorn", *app, "--host", "127.0.0.1", "--port", str(self.port)]
        argv += ["--workers", "1", "--log-level", "warning", "--no-access-log"]
        self.child = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.child.poll() is not None:
                raise SystemExit(f"{name} exited on start:\n{self.output()}")
            try:
                if httpx.get(self.base + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise SystemExit(f"{name} did not answer /healthz in 120 s:\n{self.output()}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()[-4000:].decode(errors="replace")

    def stop(self) -> None:
        if self.child.poll() is None:
            self.child.terminate()
            try:
                self.child.wait(10)
            except subprocess.TimeoutExpired:
                self.child.kill()
                self.child.wait()
        self.log.close()


def tipg_python() -> Path:
    """Return the Python of bench/.venv-tipg, made and given tipg TIPG_VERSION first if needed."""
    python = TIPG_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TIPG_VENV)], check=True)
    probe = [str(python), "-c", "import importlib.metadata as m; print(m.version('tipg'), m.version('uvicorn'))"]
    if subprocess.run(probe, capture_output=True, text=True).stdout.split()[:1] != [TIPG_VERSION]:
        log(f"installing tipg {TIPG_VERSION} into {TIPG_VENV.relative_to(ROOT)}")
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, f"tipg=={TIPG_VERSION}", "uvicorn"], check=True)
    return python


def tipg_env(dsn: str) -> dict[str, str]:
    """Return tipg's environment: the bench database, public.parcels only, guatu's tile buffer, no cap.

    The actor is stated by the URL's query: asyncpg sends the parameters it does not know as
    the connection's server settings.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUATU_", "TIPG_")) and k != "DATABASE_URL"}
    actor = "&".join(f"{name}={value}" for name, value in signin.server_settings().items())
    return env | {
        "DATABASE_URL": dsn + ("&" if "?" in dsn else "?") + actor,
        "TIPG_DB_SCHEMAS": '["public"]',
        "TIPG_DB_TABLES": '["public.parcels"]',
        "TIPG_TILE_BUFFER": str(BUFFER),
        "TIPG_TILE_RESOLUTION": str(EXTENT),
        "TIPG_MAX_FEATURES_PER_TILE": "10000000",  # default 10,000 silently drops the rest of a tile
        "TIPG_SET_MVT_LAYERNAME": "true",  # layer named parcels, as guatu's, not "default"
        "TIPG_CATALOG_TTL": "0",  # no catalog refresh in the middle of a pass
    }


# --- the passes ---------------------------------------------------------------------------


@dataclass
class Pass:
    """One contender fetching the whole list once: seconds and bytes per tile, wall time, connections opened."""

    seconds: list[float]
    sizes: list[int]
    wall: float
    digests: list[str] = field(default_factory=list)
    sessions: int = 0


def sessions(dsn: str) -> int:
    """Return how many sessions the bench database has had (this one is counted by the next call).

    Backends report their connection to the statistics within a second, so wait that long first.
    """
    time.sleep(1.1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()").fetchone()
    return int(row[0]) if row else 0


def run_pass(contender: Contender, tiles: list[Tile], clients: int, *, keep: bool = False) -> Pass:
    """Fetch every tile once with CLIENTS clients sharing the list in order; time each fetch."""
    seconds = [0.0] * len(tiles)
    sizes = [0] * len(tiles)
    digests = [""] * len(tiles) if keep else []
    opened = contender.open(clients)
    lock = threading.Lock()
    position = iter(range(len(tiles)))
    start = threading.Barrier(clients + 1)
    failures: list[BaseException] = []

    def work(client: Client) -> None:
        start.wait()
        try:
            while True:
                with lock:
                    i = next(position, None)
                if i is None:
                    return
                began = time.perf_counter()
                data = client.fetch(tiles[i])
                seconds[i] = time.perf_counter() - began
                sizes[i] = len(data)
                if keep:
                    digests[i] = hashlib.sha1(data, usedforsecurity=False).hexdigest()
        except BaseException as exc:  # reported after the pass
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(client,)) for client in opened]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    if failures:
        raise SystemExit(f"{contender.label}: {failures[0]!r}")
    return Pass(seconds, sizes, wall, digests)


def tile_contents(data: bytes) -> tuple[int, list[str]]:
    """Return the number of features in the MVT DATA and the property names of its layers."""
    if not data:
        return 0, []
    decoded = vector_tile_pb2.tile.FromString(data)
    return sum(len(layer.features) for layer in decoded.layers), sorted({k for ly in decoded.layers for k in ly.keys})


# --- the report ---------------------------------------------------------------------------


def log(message: str) -> None:
    """Print progress to stderr (stdout is for the table or the JSON)."""
    print(message, file=sys.stderr, flush=True)


def p50_p95(samples: list[float]) -> tuple[float, float]:
    """Return the median and the 95th percentile (nearest rank) in milliseconds."""
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[max(0, math.ceil(len(ordered) * 0.95) - 1)] * 1000


def per_tile_median(passes: list[Pass]) -> list[float]:
    """Return each tile's median seconds over PASSES."""
    return [statistics.median(done.seconds[i] for done in passes) for i in range(len(passes[0].seconds))]


def git_state() -> str:
    """Return the commit guatu runs at, marked when the work tree differs from it."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if dirty else "")


@contextmanager
def contenders(url: str, dsn: str, wanted: set[str]) -> Iterator[list[Contender]]:
    """Start the servers the WANTED contenders need; yield the contenders; close and stop all at the end."""
    started: dict[str, Server] = {}
    out: list[Contender] = []
    guatu_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"DATABASE_URL": url}
    # guatu's own protocol (slow clients cut, connections capped), as `guatu serve` runs it
    guatu_app = ["api.main:create_app", "--factory", "--http", "api.server:GuardedH11Protocol"]
    guatu_path = f"/tiles/{LAYER.id}/{{z}}/{{x}}/{{y}}.pbf"
    empty = tempfile.TemporaryDirectory()  # tipg's working folder: it would read a .env there

    token = signin.admin_token(owner_url())

    def http(key: str, label: str, server: Server, path: str, signed: bool = True) -> None:
        started[key] = server
        headers = signin.bearer(token) if signed else None
        out.append(Contender(key, label, lambda: HttpClient(server.base, path, headers)))

    try:
        if "raw" in wanted:
            out.append(Contender("raw", "raw ST_AsMVT (psycopg, no HTTP)", lambda: RawClient(dsn)))
        if "guatu" in wanted:
            env = guatu_env | {"GUATU_TILE_CACHE_SIZE": "0", "GUATU_TILE_STORE_MB": "0"}
            server = Server("guatu (tile cache off)", Path(sys.executable), guatu_app, env, ROOT)
            http("guatu", "guatu /tiles (cache off)", server, guatu_path)
        if "guatu-store" in wanted:
            store = {"GUATU_TILE_STORE_DIR": str(Path(empty.name) / "store"), "GUATU_TILE_STORE_MB": "1000"}
            env = guatu_env | {"GUATU_TILE_CACHE_SIZE": "0"} | store
            server = Server("guatu (tile store)", Path(sys.executable), guatu_app, env, ROOT)
            http("guatu-store", f"guatu, tile store z<={STORE_MAX_ZOOM}", server, guatu_path)
        if "tipg" in wanted:
            server = Server("tipg", tipg_python(), ["tipg.main:app"], tipg_env(dsn), Path(empty.name))
            properties = ",".join(["id", *tile_properties(LAYER)])
            path = f"/collections/public.parcels/tiles/WebMercatorQuad/{{z}}/{{x}}/{{y}}?properties={properties}"
            http("tipg", f"tipg {TIPG_VERSION}", server, path, signed=False)  # tipg has no accounts
        if "guatu-cached" in wanted:
            env = guatu_env | {"GUATU_TILE_CACHE_SIZE": "4096", "GUATU_TILE_STORE_MB": "0"}
            server = Server("guatu (tile cache on)", Path(sys.executable), guatu_app, env, ROOT)
            http("guatu-cached", "guatu, cache on (all hits)", server, guatu_path)
        yield out
    finally:
        for contender in out:
            contender.close()
        for server in started.values():
            server.stop()
        empty.cleanup()


@dataclass
class Measured:
    """What the passes gave: timed passes by mode and contender, the warm-up, the sample tiles' contents."""

    passes: dict[str, dict[str, list[Pass]]]
    warm: dict[str, Pass]
    samples: dict[str, list[tuple[int, list[str]]]]


def measure(lineup: list[Contender], tiles: list[Tile], sample_tiles: list[Tile], runs: int, dsn: str) -> Measured:
    """Warm every contender up, look into the sample tiles, then time RUNS passes of each mode.

    The contenders take turns within a mode, the first of the turn rotating from run to run.
    The database connections each pass opened are counted too (a pool too small for the
    clients opens and closes them; each new backend sets up PROJ on its first ST_Transform).
    """
    measured = Measured({"sequential": {}, "concurrent": {}}, {}, {})
    for contender in lineup:
        log(f"warm-up: {contender.label}, {len(tiles)} tiles, {CLIENTS} clients (untimed)")
        measured.warm[contender.key] = run_pass(contender, tiles, CLIENTS, keep=True)
        client = contender.open(1)[0]
        measured.samples[contender.key] = [tile_contents(client.fetch(t)) for t in sample_tiles]
    for run in range(runs):
        order = lineup[run % len(lineup) :] + lineup[: run % len(lineup)]
        before = sessions(dsn)
        interleaved = run_interleaved(order, tiles)
        opened = sessions(dsn) - before - 1  # less the session that counted `before`
        for contender in order:
            done = interleaved[contender.key]
            done.sessions = opened  # all the contenders' together
            measured.passes["sequential"].setdefault(contender.key, []).append(done)
            report_pass(run, "sequential", contender, done)
        for contender in order:
            before = sessions(dsn)
            done = run_pass(contender, tiles, CLIENTS)
            done.sessions = sessions(dsn) - before - 1
            measured.passes["concurrent"].setdefault(contender.key, []).append(done)
            report_pass(run, "concurrent", contender, done)
    return measured


def report_pass(run: int, mode: str, contender: Contender, done: Pass) -> None:
    """Log one timed pass."""
    p50, p95 = p50_p95(done.seconds)
    log(
        f"run {run + 1} {mode:<10} {contender.label:<32} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms"
        f"  wall {done.wall:6.1f} s  new connections {done.sessions}"
    )


def run_interleaved(lineup: list[Contender], tiles: list[Tile]) -> dict[str, Pass]:
    """Fetch every tile once per contender, one client each, the contenders taking turns tile by tile.

    On a machine shared with other work the load drifts within seconds; taking turns per tile
    puts every contender under the same load, so the ratios hold even when the times do not.
    The first of each turn rotates.
    """
    clients = {c.key: c.open(1)[0] for c in lineup}
    seconds = {c.key: [0.0] * len(tiles) for c in lineup}
    sizes = {c.key: [0] * len(tiles) for c in lineup}
    walls = dict.fromkeys(clients, 0.0)
    for i, tile in enumerate(tiles):
        for contender in lineup[i % len(lineup) :] + lineup[: i % len(lineup)]:
            began = time.perf_counter()
            data = clients[contender.key].fetch(tile)
            spent = time.perf_counter() - began
            seconds[contender.key][i], sizes[contender.key][i] = spent, len(data)
            walls[contender.key] += spent
    return {key: Pass(seconds[key], sizes[key], walls[key]) for key in clients}


def summarise(measured: Measured, tiles: list[Tile]) -> dict[str, Any]:
    """Return the figures: per mode and contender, guatu's ratios, the goal, guatu's overhead by zoom."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for mode, by_key in measured.passes.items():
        summary[mode] = {}
        for key, passes in by_key.items():
            p50, p95 = p50_p95([s for done in passes for s in done.seconds])
            wall = statistics.median(done.wall for done in passes)
            summary[mode][key] = {
                "p50_ms": round(p50, 2),
                "p95_ms": round(p95, 2),
                "wall_s": round(wall, 3),
                "tiles_per_s": round(len(tiles) / wall, 1),
                "new_connections": statistics.median(done.sessions for done in passes),
            }
    ratios: dict[str, dict[str, float]] = {}
    for mode, row in summary.items():
        ratios[mode] = {}
        for mine in ("guatu", "guatu-store"):
            for peer in ("raw", "tipg") if mine in row else ():
                for stat in ("p50_ms", "p95_ms") if peer in row else ():
                    ratios[mode][f"{mine}/{peer} {stat[:3]}"] = round(row[mine][stat] / row[peer][stat], 3)
    goal: list[dict[str, Any]] = []
    for mode, peer, stat, limit, strict in GOALS:
        for mine in ("guatu", "guatu-store"):
            name = f"{mine}/{peer} {stat}"
            if name in ratios.get(mode, {}):
                ratio = ratios[mode][name]
                met = ratio < limit if strict else ratio <= limit
                goal.append({"mode": mode, "ratio": name, "value": ratio, "goal": f"{'<' if strict else '<='} {limit}"})
                goal[-1]["met"] = met
    overhead: dict[str, float] = {}
    sequential = measured.passes["sequential"]
    if "raw" in sequential and "guatu" in sequential:
        by_zoom: dict[int, list[float]] = {}
        pairs = zip(tiles, per_tile_median(sequential["guatu"]), per_tile_median(sequential["raw"]), strict=True)
        for tile, guatu, raw in pairs:
            by_zoom.setdefault(tile[0], []).append((guatu - raw) * 1000)
        overhead = {str(z): round(statistics.median(v), 2) for z, v in sorted(by_zoom.items())}
    warm = measured.warm
    identical = None
    if "raw" in warm and "guatu" in warm:
        identical = sum(a == b for a, b in zip(warm["raw"].digests, warm["guatu"].digests, strict=True))
    kb_by_zoom = {
        key: {
            str(z): round(statistics.median(s for t, s in zip(tiles, done.sizes, strict=True) if t[0] == z) / 1024, 1)
            for z in sorted({t[0] for t in tiles})
        }
        for key, done in warm.items()
    }
    return {
        "median_kb_by_zoom": kb_by_zoom,
        "guatu_tiles_identical_to_raw": identical,
        "results": summary,
        "ratios": ratios,
        "goal": goal,
        "guatu_minus_raw_ms_by_zoom_sequential": overhead,
    }


def main() -> None:
    """Prepare the county, fetch the tiles each way, print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--parcels", type=int, default=1_000_000, help="parcels in the generated county")
    parser.add_argument("--tiles", type=int, default=500, help="tiles in the fixed list (z12–18)")
    parser.add_argument("--runs", type=int, default=1, help="timed passes per contender and mode")
    parser.add_argument("--regenerate", action="store_true", help="generate the county even if it is there")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--save-tiles", type=Path, help="also write the tile list here, one z/x/y a line")
    parser.add_argument(
        "--only",
        default=",".join(CONTENDERS),
        help=f"contenders to run, comma-separated ({', '.join(CONTENDERS)})",
    )
    args = parser.parse_args()
    wanted = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = wanted - set(CONTENDERS)
    if unknown:
        raise SystemExit(f"unknown contenders: {', '.join(sorted(unknown))}")

    prepare_database()
    url = bench_url()
    dsn = libpq_dsn(url)
    log(f"database {make_url(url).render_as_string(hide_password=True)}")
    held = parcel_count(dsn)
    generated: float | None = None
    if args.regenerate or held != args.parcels:
        log(f"generating {args.parcels:,} parcels (the table holds {held:,}) …")
        generated = generate(libpq_dsn(owner_url()), args.parcels)
        log(f"generated in {generated:.1f} s")
    tiles = tile_list(args.tiles, COUNTY)
    if args.save_tiles:
        args.save_tiles.write_text("".join(f"{z}/{x}/{y}\n" for z, x, y in tiles))
    per_zoom = {z: sum(1 for t in tiles if t[0] == z) for z in ZOOM_SHARES}
    sample_tiles = [next(t for t in tiles if t[0] == z) for z in ZOOM_SHARES if per_zoom[z]]
    with contenders(url, dsn, wanted) as lineup:
        measured = measure(lineup, tiles, sample_tiles, args.runs, dsn)
        labels = {c.key: c.label for c in lineup}

    report: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            **server_versions(dsn),
            "tipg": TIPG_VERSION if "tipg" in wanted else "—",
            "guatu": git_state(),
        },
        "database": {
            "name": DATABASE,
            "parcels": args.parcels,
            "generated_s": None if generated is None else round(generated, 1),
            "extent": [round(v, 5) for v in data_extent(dsn)],
        },
        "tiles": {
            "count": len(tiles),
            "per_zoom": {str(z): c for z, c in per_zoom.items()},
            "seed": SEED,
            "sha256_16": fingerprint(tiles),
            "list": [f"{z}/{x}/{y}" for z, x, y in tiles],
        },
        "warm_up": f"one untimed pass of all tiles per contender, {CLIENTS} clients, before timing",
        "runs": args.runs,
        "clients_concurrent": CLIENTS,
        "labels": labels,
        "sample_tiles": {
            "/".join(map(str, t)): {
                key: {"features": found[i][0], "properties": found[i][1]} for key, found in measured.samples.items()
            }
            for i, t in enumerate(sample_tiles)
        },
        **summarise(measured, tiles),
    }
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print_report(report)


def print_report(report: dict[str, Any]) -> None:
    """Print REPORT as tables."""
    m, db, tl, labels = report["machine"], report["database"], report["tiles"], report["labels"]
    print(
        f"machine: {m['platform']}, {m['cpus']} CPUs, CPython {m['python']}; PostgreSQL {m['postgresql']},"
        f" PostGIS {m['postgis']} (GEOS {m['geos']}, PROJ {m['proj']}); tipg {m['tipg']}; guatu {m['guatu']}"
    )
    made = "kept from an earlier run" if db["generated_s"] is None else f"generated in {db['generated_s']:.1f} s"
    print(f"database {db['name']}: {db['parcels']:,} parcels ({made}), extent {db['extent']}")
    zooms = ", ".join(f"z{z} {c}" for z, c in tl["per_zoom"].items())
    print(f"tiles: {tl['count']} ({zooms}), seed {tl['seed']}, list sha256 {tl['sha256_16']}")
    print(f"warm-up: {report['warm_up']}; timed: {report['runs']} run(s), HTTP without compression")
    keys = list(labels)
    print("\nsample tiles: features (median KB of the zoom)")
    print(f"{'tile':<16}" + "".join(f"{labels[k][:24]:>26}" for k in keys))
    for name, row in report["sample_tiles"].items():
        zoom = name.split("/")[0]
        cells = [f"{row[k]['features']} ({report['median_kb_by_zoom'][k][zoom]} KB)" for k in keys]
        print(f"{name:<16}" + "".join(f"{c:>26}" for c in cells))
    for k in keys:
        props: list[str] = next((r[k]["properties"] for r in report["sample_tiles"].values() if r[k]["properties"]), [])
        print(f"  properties, {labels[k]}: {', '.join(props)}")
    if report["guatu_tiles_identical_to_raw"] is not None:
        print(f"  guatu's tiles byte-identical to raw: {report['guatu_tiles_identical_to_raw']} of {tl['count']}")
    print(f"\n{'mode':<12}{'contender':<36}{'p50 ms':>9}{'p95 ms':>9}{'wall s':>9}{'tiles/s':>9}{'new conns':>11}")
    for mode, rows in report["results"].items():
        for key, row in rows.items():
            print(
                f"{mode:<12}{labels[key]:<36}{row['p50_ms']:>9.1f}{row['p95_ms']:>9.1f}"
                f"{row['wall_s']:>9.2f}{row['tiles_per_s']:>9.1f}{row['new_connections']:>11.0f}"
            )
    print()
    for mode, ratios in report["ratios"].items():
        print(f"{mode}: " + ", ".join(f"{name} {value:.2f}x" for name, value in ratios.items()))
    for check in report["goal"]:
        verdict = "met" if check["met"] else "goal not met"
        print(f"goal, {check['mode']}: {check['ratio']} {check['value']:.2f}x (goal {check['goal']}x): {verdict}")
        goals.record("tiles", f"{check['mode']} {check['ratio']}", check["value"], float(check["goal"].split()[-1]))
    if report["guatu_minus_raw_ms_by_zoom_sequential"]:
        by_zoom = report["guatu_minus_raw_ms_by_zoom_sequential"]
        print(
            "guatu − raw per tile, sequential, median ms by zoom: " + ", ".join(f"z{z} {v}" for z, v in by_zoom.items())
        )


if __name__ == "__main__":
    main()
