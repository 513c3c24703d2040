"""GIS formats and OGC API – Features (issue 14): guatu beside GDAL, tipg and raw SQL, each in one run.

Usage: `.venv/bin/python bench/gis_formats.py [--import-n 100000] [--parcels 100000] [--runs 1]
[--oapif-features 20000] [--only imports,exports,ogc,oapif]` (needs the database server
`make database` starts, or DATABASE_URL's; `make bench` runs it). Four parts:

1. **imports**: N generated parcels as a GeoPackage and as a zipped Shapefile (GBK .dbf, field
   names as a 三调 file gives them: DKBM, DLBM, QSXZ coded 30, and the Chinese label 利用现状,
   all mapped by the proposed mapping) through `guatu import` (CLI, a fresh process) and
   `POST /api/layers/parcels/uploads` (a warm `guatu serve`), beside `ogr2ogr -f PostgreSQL`
   of the same file (COPY mode). GDAL validates nothing and makes a bare table; guatu reads the
   file, maps its fields, checks every feature (schema, geometry, codes), diffs against the
   table, commits in one transaction and archives the file. Into the app's database, as
   bench/import_parcels.py does (its reset between runs). Goal (issue 15): ≤ 1.0× ogr2ogr.
2. **exports** of a generated county (`--parcels`, in its own database `guatu_bench_gis`, made
   as bench/tile_serving.py makes `guatu_bench_tiles`; kept between runs) through
   `GET /api/layers/parcels/export.{gpkg,shp.zip,geojson}` (time to the last byte, peak RSS of
   the server process during that export) beside `ogr2ogr -f GPKG / "ESRI Shapefile" (.shp.zip)
   / GeoJSON PG:… -sql "SELECT <the same columns> …"` (wall time, its peak RSS), reading as the
   app role and the same administrator (same row-level security).
3. **ogc**: a fixed list of OGC API – Features items requests (`limit` 1000 and 10000; plain
   pages by offset, a bbox, a CQL2 filter, both) through guatu's `/ogc/collections/parcels/items`,
   tipg's `/collections/public.parcels/items` (same properties, `sortby=id` as guatu's id order)
   and the statements guatu runs (page and count) through psycopg without HTTP; one client,
   then 8 clients sharing the list. Each contender is warmed up by one untimed pass.
4. **oapif**: `ogr2ogr -f GPKG out.gpkg OAPIF:…` (GDAL's OGC API – Features driver) of the
   parcels of a box holding about `--oapif-features`, from guatu and from tipg, pages of 1000.

Goals: imports ≤ 1.0× ogr2ogr (issue 15); the rest is reported, not judged.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import platform
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy import make_url, text, update
from sqlalchemy.dialects import postgresql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import goals, signin  # noqa: E402
from bench.import_parcels import COMMUNITY, change_mark, reset  # noqa: E402
from bench.import_parcels import generate as generate_parcels  # noqa: E402
from bench.procs import measured, status_mb  # noqa: E402
from bench.tile_serving import (  # noqa: E402
    COUNTY,
    Server,
    generate,
    libpq_dsn,
    server_versions,
    tipg_env,
    tipg_python,
)
from layers import migrate, ogc  # noqa: E402
from layers.base import REGISTRY  # noqa: E402
from spatial import roles  # noqa: E402
from spatial.db import make_engine  # noqa: E402
from spatial.settings import db_settings  # noqa: E402

DATABASE = "guatu_bench_gis"
LAYER = REGISTRY["parcels"]
SEED = 14
CLIENTS = 8
GUATU_APP = ["api.main:create_app", "--factory", "--http", "api.server:GuardedH11Protocol"]
CQL2 = "use_status IN ('闲置','出租')"
"""The CQL2 text filter of the items requests: about a third of the county."""


def log(message: str) -> None:
    """Print progress to stderr (stdout is for the figures)."""
    print(message, file=sys.stderr, flush=True)


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b else "—"


# --- databases ----------------------------------------------------------------------------


def bench_url() -> str:
    """Return the app role's URL of the bench database."""
    return db_settings().url(DATABASE)


def owner_url() -> str:
    """Return the owner's URL of the bench database (migrates, generates)."""
    return db_settings().owner_url(DATABASE)


def prepare_county(n: int) -> str:
    """Make and migrate the bench database, fill it with N parcels unless it holds that many; return its DSN."""
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
    dsn = libpq_dsn(bench_url())
    with psycopg.connect(dsn, options=signin.options()) as conn:
        row = conn.execute(f"SELECT count(*) FROM {LAYER.table}").fetchone()
    held = int(row[0]) if row else 0
    if held != n:
        log(f"generating a county of {n:,} parcels in {DATABASE} (it holds {held:,}) …")
        log(f"generated in {generate(libpq_dsn(owner_url()), n):.1f} s")
    return dsn


def pg_source(url: str, actor: bool) -> str:
    """Return URL as GDAL's PG: connection string (ACTOR: stating the bench's administrator, as the app role)."""
    u = make_url(url)
    out = f"PG:host={u.host} port={u.port} dbname={u.database} user={u.username}"
    if u.password:
        out += f" password={u.password}"
    if actor:
        out += f" options='{signin.options()}'"
    return out


# --- 1. imports ---------------------------------------------------------------------------


def sandiao_properties(i: int) -> dict[str, Any]:
    """Return parcel I's properties as a 三调 file names them, with one Chinese label (利用现状)."""
    return {
        "DKBM": f"{COMMUNITY}{i:07d}",
        "DLBM": "0103",
        "QSXZ": "30",  # 三调 集体土地所有权: read as 集体
        "利用现状": "承包" if i % 11 else "闲置",
    }


def generate_sandiao(n: int, path: Path) -> None:
    """Write N parcels (bench/import_parcels.py's squares) with 三调 field names."""
    generate_parcels(n, path, sandiao_properties)


def make_files(n: int, folder: Path) -> dict[str, Path]:
    """Write the GeoPackage and the zipped GBK Shapefile of N parcels into FOLDER (by ogr2ogr from a GeoJSON)."""
    source = folder / "source.geojson"
    generate_sandiao(n, source)
    gpkg = folder / "parcels.gpkg"
    common = ["-a_srs", "EPSG:4490", "-nln", "parcels", "-nlt", "MULTIPOLYGON"]
    subprocess.run(["ogr2ogr", "-f", "GPKG", str(gpkg), str(source), *common], check=True)
    shp_dir = folder / "shp"
    shp_dir.mkdir()
    subprocess.run(
        ["ogr2ogr", "-f", "ESRI Shapefile", str(shp_dir / "parcels.shp"), str(source), *common, "-lco", "ENCODING=GBK"],
        check=True,
    )
    shp = folder / "parcels.zip"
    with zipfile.ZipFile(shp, "w", zipfile.ZIP_DEFLATED) as zf:
        for part in sorted(shp_dir.iterdir()):
            zf.write(part, part.name)
    source.unlink()
    return {"gpkg": gpkg, "shp.zip": shp}


MEDIA = {"gpkg": "application/geopackage+sqlite3", "shp.zip": "application/zip"}


def run_imports(n: int, runs: int, kinds: tuple[str, ...] = ("gpkg", "shp.zip")) -> dict[str, Any]:
    """Import N parcels as GPKG and zipped Shapefile (KINDS of them) each way RUNS times; return the figures."""
    url = db_settings().owner_url()  # ogr2ogr makes a table: the owner's job; resets are too
    engine = make_engine(url=url)
    ogr_base = ["ogr2ogr", "-f", "PostgreSQL", pg_source(url, actor=False), "", "-nln", "bench_ogr_parcels"]
    ogr_base += ["-lco", "GEOMETRY_NAME=geom", "-a_srs", "EPSG:4490", "-nlt", "PROMOTE_TO_MULTI"]
    ogr_base += ["--config", "PG_USE_COPY", "YES"]
    guatu = str(Path(sys.executable).parent / "guatu")
    out: dict[str, Any] = {"n": n, "runs": runs, "formats": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        files = make_files(n, folder)
        log(f"imports: wrote {n:,} parcels as GPKG and zipped Shapefile in {time.perf_counter() - started:.1f} s")
        env = dict(os.environ, GUATU_ARCHIVE_DIR=str(folder / "archive"))
        biggest = max(p.stat().st_size for p in files.values())
        if biggest * 1.1 > 200e6:  # a million parcels: beyond the server's default upload limit
            env["GUATU_MAX_UPLOAD_BYTES"] = str(int(biggest * 1.1))
        token = signin.admin_token(url)
        mark = change_mark(engine)
        server = Server("guatu serve", Path(sys.executable), GUATU_APP, env, ROOT)
        client = httpx.Client(base_url=server.base, headers=signin.bearer(token), timeout=1800)
        try:
            (folder / "warm").mkdir()
            for fmt, path in make_files(200, folder / "warm").items():  # the server's first upload of each, untimed
                client.post(
                    f"/api/layers/{LAYER.id}/uploads",
                    params={"dry_run": "true"},
                    content=path.read_bytes(),
                    headers={"Content-Type": MEDIA[fmt]},
                ).raise_for_status()
                reset(engine, hashlib.sha256(path.read_bytes()).hexdigest(), mark)
            for fmt, path in files.items():
                if fmt not in kinds:
                    continue
                sha = hashlib.sha256(path.read_bytes()).hexdigest()
                source = str(path) if fmt == "gpkg" else f"/vsizip/{path}"
                results: dict[str, list[tuple[float, float]]] = {"ogr": [], "cli": [], "api": []}
                stored = 0
                for run in range(runs):
                    reset(engine, sha, mark)
                    argv = list(ogr_base)
                    argv[4] = source
                    results["ogr"].append(timed(argv))
                    reset(engine, sha, mark)
                    results["cli"].append(timed([guatu, "import", str(path), "--layer", LAYER.id], env))
                    stored = stored_rows(engine)
                    reset(engine, sha, mark)
                    results["api"].append(upload(client, server, path, MEDIA[fmt]))
                    log(
                        f"imports {fmt} run {run + 1}: "
                        + ", ".join(f"{k} {v[-1][0]:.2f} s" for k, v in results.items())
                    )
                stored_api = stored_rows(engine)
                reset(engine, sha, mark)
                out["formats"][fmt] = {
                    "mb": round(path.stat().st_size / 1e6, 1),
                    "stored_cli": stored,
                    "stored_api": stored_api,
                    **{
                        k: {
                            "s": statistics.median(r[0] for r in v),
                            "min_s": min(r[0] for r in v),
                            "mb": max(r[1] for r in v),
                        }
                        for k, v in results.items()
                    },
                }
        finally:
            client.close()
            server.stop()
            engine.dispose()
    return out


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run ARGV; return (seconds, its peak RSS MB) — bench/procs.py's launcher; fail on a non-zero exit."""
    with tempfile.TemporaryFile() as output:
        seconds, peak, code = measured(argv, env, output)
        if code != 0:
            output.seek(0)
            raise SystemExit(f"{' '.join(argv[:3])} … failed:\n{output.read()[-3000:].decode(errors='replace')}")
    return seconds, peak


def reset_peak(pid: int) -> None:
    """Reset the peak RSS (VmHWM) of process PID to its current RSS (Linux: 5 → /proc/PID/clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def upload(client: httpx.Client, server: Server, path: Path, media: str) -> tuple[float, float]:
    """POST PATH to the uploads endpoint; return (seconds, the server's peak RSS during it, MB)."""
    reset_peak(server.child.pid)
    body = path.read_bytes()
    started = time.perf_counter()
    response = client.post(f"/api/layers/{LAYER.id}/uploads", content=body, headers={"Content-Type": media})
    elapsed = time.perf_counter() - started
    answer = response.json()
    if response.status_code >= 300 or answer.get("status") != "committed":
        raise SystemExit(f"upload of {path.name}: HTTP {response.status_code}, {str(answer)[:2000]}")
    return elapsed, status_mb(server.child.pid, "VmHWM")


def stored_rows(engine: Any) -> int:
    """Return how many of the bench's parcels the table holds mapped right (集体 from QSXZ 30, 利用现状 read)."""
    with engine.begin() as conn:
        found = conn.execute(
            text(
                f"SELECT count(*) FROM {LAYER.table} WHERE {LAYER.key_field} LIKE :p"
                " AND ownership = '集体' AND use_status IN ('承包', '闲置')"
            ),
            {"p": COMMUNITY + "%"},
        )
        return int(found.scalar_one())


def user_tokens(count: int) -> list[str]:
    """Return API tokens of COUNT administrators (bench-1 …), made as the owner in the bench database.

    Eight clients are eight users: guatu holds each user to 2 jobs in its exports lane (a page
    of more than 1,000 items is one), and refuses a third at once (429).
    """
    from sqlalchemy.orm import Session

    from layers import accounts
    from layers.access import ADMIN

    engine = make_engine(url=owner_url())
    tokens = []
    try:
        with Session(engine) as session:
            for i in range(count):
                name = f"{signin.USERNAME}-{i + 1}"
                user = accounts.add_user(session, name, ADMIN, None, secrets.token_urlsafe(24), name)
                session.execute(
                    update(accounts.ApiToken).where(accounts.ApiToken.user_id == user.id).values(revoked=True)
                )
                tokens.append(accounts.add_token(session, user, "bench"))
            session.commit()
    finally:
        engine.dispose()
    return tokens


# --- 2. exports ---------------------------------------------------------------------------


def export_sql() -> str:
    """Return the SELECT of the export's columns (the fields, the area, the id, the outline) in guatu's row order."""
    columns = [*LAYER.field_names, "area_m2", "id"]
    return f"SELECT {', '.join(columns)}, geom FROM {LAYER.table} ORDER BY {LAYER.key_field}"


PEERS = {
    "gpkg": ["-f", "GPKG", "{out}.gpkg", "{src}", "-nln", LAYER.id],
    "shp.zip": ["-f", "ESRI Shapefile", "{out}.shp.zip", "{src}", "-nln", LAYER.id, "-lco", "ENCODING=UTF-8"],
    "geojson": ["-f", "GeoJSON", "{out}.geojson", "{src}", "-lco", "RFC7946=YES", "-lco", "COORDINATE_PRECISION=7"],
}


def run_exports(server: Server, token: str, count: int) -> dict[str, Any]:
    """Export the county in each format through guatu and through ogr2ogr; return seconds, MB, peak RSS."""
    out: dict[str, Any] = {}
    source = pg_source(bench_url(), actor=True)
    with tempfile.TemporaryDirectory() as tmp, httpx.Client(base_url=server.base, timeout=1800) as client:
        for fmt, template in PEERS.items():
            target = Path(tmp) / f"guatu.{fmt}"
            base_mb = status_mb(server.child.pid, "VmRSS")
            reset_peak(server.child.pid)
            started = time.perf_counter()
            with client.stream("GET", f"/api/layers/{LAYER.id}/export.{fmt}", headers=signin.bearer(token)) as r:
                if r.status_code != 200:
                    r.read()
                    raise SystemExit(f"export.{fmt}: HTTP {r.status_code} {r.text[:1000]}")
                with target.open("wb") as f:
                    for chunk in r.iter_raw(1 << 20):
                        f.write(chunk)
            guatu_s = time.perf_counter() - started
            guatu_mb = status_mb(server.child.pid, "VmHWM")
            peer = Path(tmp) / "peer"
            argv = ["ogr2ogr", *[a.format(out=peer, src=source) for a in template], "-sql", export_sql()]
            peer_s, peer_mb = timed(argv)
            peer_file = next(Path(tmp).glob("peer.*"))
            row = {
                "guatu_s": guatu_s,
                "guatu_rss_mb": guatu_mb,
                "guatu_base_mb": base_mb,
                "guatu_file_mb": target.stat().st_size / 1e6,
                "guatu_features": features_in(target, fmt),
                "peer_s": peer_s,
                "peer_rss_mb": peer_mb,
                "peer_file_mb": peer_file.stat().st_size / 1e6,
                "peer_features": features_in(peer_file, fmt),
            }
            out[fmt] = row
            log(
                f"exports {fmt}: guatu {guatu_s:.2f} s ({base_mb:.0f} → {guatu_mb:.0f} MB),"
                f" ogr2ogr {peer_s:.2f} s ({peer_mb:.0f} MB)"
            )
            target.unlink()
            peer_file.unlink()
    if any(r["guatu_features"] != count for r in out.values()):
        log(f"WARNING: an export of guatu holds another number of features than the county's {count}")
    return out


def features_in(path: Path, fmt: str) -> int:
    """Return the number of features GDAL reads in PATH (a zipped Shapefile through /vsizip/)."""
    import pyogrio

    name = f"/vsizip/{path}" if fmt == "shp.zip" else str(path)
    return int(pyogrio.read_info(name)["features"])


# --- 3. OGC API – Features items ----------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One items request: its page size, offset, box (west, south, east, north) and CQL2 text, and its kind."""

    kind: str
    limit: int
    offset: int = 0
    bbox: tuple[float, float, float, float] | None = None
    cql: str | None = None

    def params(self) -> dict[str, str]:
        out = {"limit": str(self.limit)}
        if self.offset:
            out["offset"] = str(self.offset)
        if self.bbox:
            out["bbox"] = ",".join(f"{v:.6f}" for v in self.bbox)
        if self.cql:
            out |= {"filter": self.cql, "filter-lang": "cql2-text"}
        return out


def request_list(parcels: int, per_kind: dict[int, int]) -> list[Request]:
    """Return the fixed, seeded list: per page size, PER_KIND[limit] requests of each kind, shuffled.

    Plain pages start at seeded offsets; boxes are seeded squares-on-the-ground over the county
    sized to hold about twice the page (the page is full; the count reads more).
    """
    rng = random.Random(SEED)
    west, south, east, north = COUNTY
    out: list[Request] = []
    for limit, count in per_kind.items():
        share = min(1.0, 2 * limit / parcels)  # of the county's area
        width, height = (east - west) * math.sqrt(share), (north - south) * math.sqrt(share)

        def box(width: float = width, height: float = height) -> tuple[float, float, float, float]:
            x = west + rng.random() * (east - west - width)
            y = south + rng.random() * (north - south - height)
            return (x, y, x + width, y + height)

        pages = max(1, parcels // limit - 1)
        cql_pages = max(1, int(parcels * 0.3) // limit - 1)  # the filter keeps about 32%
        for _ in range(count):
            out.append(Request("plain", limit, offset=rng.randrange(pages) * limit))
            out.append(Request("bbox", limit, bbox=box()))
            out.append(Request("cql2", limit, offset=rng.randrange(cql_pages) * limit, cql=CQL2))
            out.append(Request("cql2+bbox", limit, bbox=box(), cql=CQL2))
    rng.shuffle(out)
    return out


class _Recorder:
    """Stands for a session: records the statements layers.ogc.items runs, answers nothing."""

    def __init__(self) -> None:
        self.statements: list[Any] = []

    def execute(self, statement: Any, *args: Any, **kwargs: Any) -> _Recorder:
        self.statements.append(statement)
        return self

    def all(self) -> list[Any]:
        return []

    def scalar_one(self) -> int:
        return 0


def guatu_statements(req: Request) -> list[str]:
    """Return the SQL guatu runs for REQ (the page, then the count), compiled with its values."""
    conditions: list[Any] = []
    box = ogc.bbox_condition(LAYER, req.params().get("bbox"), ogc.parse_crs_uri(None, "bbox-crs"))
    cql = ogc.filter_condition(LAYER, req.cql, "cql2-text" if req.cql else None, ogc.parse_crs_uri(None, "filter-crs"))
    conditions += [c for c in (box, cql) if c is not None]
    recorder = _Recorder()
    ogc.items(recorder, LAYER, conditions, ogc.parse_crs_uri(None, "crs"), limit=req.limit, offset=req.offset)  # type: ignore[arg-type]
    dialect = postgresql.psycopg.dialect()  # type: ignore[attr-defined]
    return [str(s.compile(dialect=dialect, compile_kwargs={"literal_binds": True})) for s in recorder.statements]


class RawClient:
    """guatu's statements for a request through one psycopg connection, as the bench's administrator."""

    def __init__(self, dsn: str, statements: dict[Request, list[str]]) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True, options="-c jit=off " + signin.options())
        self.statements = statements

    def fetch(self, req: Request) -> int:
        size = 0
        for sql in self.statements[req]:
            for row in self.conn.execute(sql.encode()).fetchall():
                size += sum(len(v) if isinstance(v, str) else 8 for v in row)
        return size

    def close(self) -> None:
        self.conn.close()


class ItemsClient:
    """One keep-alive HTTP connection to an OGC API – Features server, asking for one collection's items."""

    def __init__(self, base: str, path: str, extra: dict[str, str], headers: dict[str, str] | None = None) -> None:
        self.client = httpx.Client(
            base_url=base, headers={"Accept-Encoding": "identity"} | (headers or {}), timeout=600
        )
        self.path, self.extra = path, extra
        self.client.get("/healthz").raise_for_status()

    def fetch(self, req: Request) -> int:
        response = self.client.get(self.path, params=req.params() | self.extra)
        if response.status_code != 200:
            raise RuntimeError(f"{self.path} {req}: HTTP {response.status_code} {response.text[:500]}")
        return len(response.content)

    def close(self) -> None:
        self.client.close()


@dataclass
class Pass:
    """The requests fetched once: seconds and bytes per request, wall time."""

    seconds: list[float]
    sizes: list[int]
    wall: float


def run_pass(clients: list[Any], requests: list[Request]) -> Pass:
    """Fetch every request once, the CLIENTS sharing the list in order; time each."""
    seconds, sizes = [0.0] * len(requests), [0] * len(requests)
    lock = threading.Lock()
    position = iter(range(len(requests)))
    barrier = threading.Barrier(len(clients) + 1)
    failures: list[BaseException] = []

    def work(client: Any) -> None:
        barrier.wait()
        try:
            while True:
                with lock:
                    i = next(position, None)
                if i is None:
                    return
                began = time.perf_counter()
                sizes[i] = client.fetch(requests[i])
                seconds[i] = time.perf_counter() - began
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    barrier.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(repr(failures[0]))
    return Pass(seconds, sizes, time.perf_counter() - began)


def p50_p95(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[max(0, math.ceil(len(ordered) * 0.95) - 1)] * 1000


def run_items(lineup: dict[str, Callable[[int], Any]], requests: list[Request]) -> dict[str, dict[str, Any]]:
    """Warm each contender up (8 clients, untimed), then time one pass sequential and one with 8 clients."""
    out: dict[str, dict[str, Any]] = {}
    for key, connect in lineup.items():
        clients = [connect(i) for i in range(CLIENTS)]
        try:
            run_pass(clients, requests)
            sequential = run_pass(clients[:1], requests)
            concurrent = run_pass(clients, requests)
        finally:
            for client in clients:
                client.close()
        out[key] = {"sequential": sequential, "concurrent": concurrent}
        log(f"items {key}: sequential wall {sequential.wall:.1f} s, {CLIENTS} clients wall {concurrent.wall:.1f} s")
    return out


def items_rows(requests: list[Request], passes: dict[str, dict[str, Pass]]) -> list[dict[str, Any]]:
    """Return p50/p95 per (limit, kind) sequential and per limit with 8 clients, for each contender."""
    rows = []
    groups: dict[tuple[int, str], list[int]] = {}
    for i, req in enumerate(requests):
        groups.setdefault((req.limit, req.kind), []).append(i)
        groups.setdefault((req.limit, "all"), []).append(i)
    for (limit, kind), idx in sorted(groups.items()):
        for mode in ("sequential", "concurrent") if kind == "all" else ("sequential",):
            row: dict[str, Any] = {"limit": limit, "kind": kind, "mode": mode, "n": len(idx)}
            for key, by_mode in passes.items():
                done = by_mode[mode]
                row[key] = p50_p95([done.seconds[i] for i in idx])
                row[key + "_kb"] = statistics.median(done.sizes[i] for i in idx) / 1024
            rows.append(row)
    return rows


# --- 4. ogr2ogr from OAPIF ----------------------------------------------------------------


def run_oapif(guatu: Server, tipg: Server, token: str, parcels: int, wanted: int) -> dict[str, Any]:
    """Copy the parcels of a box holding about WANTED with ogr2ogr from guatu's and tipg's OGC API; time it."""
    west, south, east, north = COUNTY
    share = min(1.0, wanted / parcels)
    x1, y1 = west + (east - west) * math.sqrt(share), south + (north - south) * math.sqrt(share)
    spat = [str(v) for v in (west, south, x1, y1)]
    out: dict[str, Any] = {"spat": spat}
    with tempfile.TemporaryDirectory() as tmp:
        for key, server, collection, env in (
            ("guatu", guatu, LAYER.id, {"GDAL_HTTP_HEADERS": f"Authorization: Bearer {token}"}),
            ("tipg", tipg, f"public.{LAYER.table}", {}),
        ):
            target = Path(tmp) / f"{key}.gpkg"
            root = f"{server.base}/ogc" if key == "guatu" else server.base
            argv = ["ogr2ogr", "-f", "GPKG", str(target), f"OAPIF:{root}", collection, "-spat", *spat]
            argv += ["-oo", "PAGE_SIZE=1000", "-nln", LAYER.id]
            seconds, rss = timed(argv, dict(os.environ, GDAL_HTTP_TIMEOUT="600", **env))
            out[key] = {"s": seconds, "rss_mb": rss, "features": features_in(target, "gpkg")}
            log(f"oapif {key}: {seconds:.2f} s, {out[key]['features']} features")
    return out


# --- the run ------------------------------------------------------------------------------


def git_state() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--import-n", type=int, default=100_000, help="parcels in the imported GPKG and Shapefile")
    parser.add_argument("--runs", type=int, default=1, help="import runs per path and format (median)")
    parser.add_argument("--import-formats", default="gpkg,shp.zip", help="files imported: gpkg, shp.zip or both")
    parser.add_argument("--parcels", type=int, default=100_000, help="parcels in the county exported and served")
    parser.add_argument("--oapif-features", type=int, default=20_000, help="parcels copied through OAPIF (about)")
    parser.add_argument("--requests", type=int, default=6, help="items requests per kind at limit 1000 (half at 10000)")
    parser.add_argument("--only", default="imports,exports,ogc,oapif", help="parts to run, comma-separated")
    args = parser.parse_args()
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    if unknown := parts - {"imports", "exports", "ogc", "oapif"}:
        raise SystemExit(f"unknown parts: {', '.join(sorted(unknown))}")
    if not shutil.which("ogr2ogr"):
        raise SystemExit("ogr2ogr not found: `make bench` installs gdal-bin")
    started = time.perf_counter()
    report: dict[str, Any] = {"load_before": os.getloadavg()}
    if "imports" in parts:
        report["imports"] = run_imports(args.import_n, args.runs, tuple(args.import_formats.split(",")))
    if parts & {"exports", "ogc", "oapif"}:
        dsn = prepare_county(args.parcels)
        report["versions"] = server_versions(dsn)
        token = signin.admin_token(owner_url())
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"DATABASE_URL": bench_url()}
        empty = tempfile.TemporaryDirectory()
        guatu = Server("guatu", Path(sys.executable), GUATU_APP, env, ROOT)
        tipg: Server | None = None
        try:
            if "exports" in parts:
                report["exports"] = run_exports(guatu, token, args.parcels)
            if parts & {"ogc", "oapif"}:
                tipg = Server("tipg", tipg_python(), ["tipg.main:app"], tipg_env(dsn), Path(empty.name))
            if "ogc" in parts and tipg is not None:
                requests = request_list(args.parcels, {1000: args.requests, 10_000: max(1, args.requests // 2)})
                statements = {req: guatu_statements(req) for req in requests}
                properties = ",".join([*LAYER.field_names, "area_m2", "updated_at"])
                tipg_base, guatu_base = tipg.base, guatu.base
                tokens = user_tokens(CLIENTS)
                lineup: dict[str, Callable[[int], Any]] = {
                    "raw": lambda i: RawClient(dsn, statements),
                    "guatu": lambda i: ItemsClient(
                        guatu_base, f"/ogc/collections/{LAYER.id}/items", {}, signin.bearer(tokens[i])
                    ),
                    "tipg": lambda i: ItemsClient(
                        tipg_base,
                        f"/collections/public.{LAYER.table}/items",
                        {"properties": properties, "sortby": "id"},
                    ),
                }
                passes = run_items(lineup, requests)
                report["ogc"] = {"requests": len(requests), "rows": items_rows(requests, passes)}
                report["ogc"]["wall"] = {k: {m: p.wall for m, p in v.items()} for k, v in passes.items()}
            if "oapif" in parts and tipg is not None:
                report["oapif"] = run_oapif(guatu, tipg, token, args.parcels, args.oapif_features)
        finally:
            guatu.stop()
            if tipg is not None:
                tipg.stop()
            empty.cleanup()
    report["load_after"] = os.getloadavg()
    report["minutes"] = (time.perf_counter() - started) / 60
    print_report(report, args)


def print_report(report: dict[str, Any], args: argparse.Namespace) -> None:
    """Print the figures as plain tables."""
    v = report.get("versions", {})
    gdal = subprocess.run(["ogr2ogr", "--version"], capture_output=True, text=True).stdout.strip()
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, CPython {platform.python_version()};"
        f" PostgreSQL {v.get('postgresql', '?')}, PostGIS {v.get('postgis', '?')};"
        f" {gdal}; guatu {git_state()}"
    )
    lb, la = report["load_before"], report["load_after"]
    print(
        f"load average before {lb[0]:.2f} {lb[1]:.2f} {lb[2]:.2f}, after {la[0]:.2f} {la[1]:.2f} {la[2]:.2f};"
        f" took {report['minutes']:.1f} min"
    )
    if "imports" in report:
        imp = report["imports"]
        print(
            f"\n1. import of {imp['n']:,} parcels (三调 names DKBM/DLBM/QSXZ + 利用现状; Shapefile .dbf in GBK),"
            f" median of {imp['runs']} run(s); ogr2ogr validates nothing, guatu maps, checks, diffs, commits in one"
            " transaction. Goal ≤ 1.00× ogr2ogr (issue 15)"
        )
        print(
            f"{'file':<10}{'MB':>6}{'ogr2ogr s':>11}{'guatu CLI s':>13}{'guatu API s':>13}{'CLI/ogr':>9}{'API/ogr':>9}"
            f"{'RSS MB ogr/CLI/API':>22}  stored"
        )
        for fmt, r in imp["formats"].items():
            o, c, a = r["ogr"]["s"], r["cli"]["s"], r["api"]["s"]
            goal = "met" if max(c, a) <= o else "not met"
            goals.record("import", f"{fmt} {imp['n']:,} guatu CLI / ogr2ogr", c / o, 1.0)
            goals.record("import", f"{fmt} {imp['n']:,} guatu API / ogr2ogr", a / o, 1.0)
            print(
                f"{fmt:<10}{r['mb']:>6.1f}{o:>11.2f}{c:>13.2f}{a:>13.2f}{ratio(c, o):>9}{ratio(a, o):>9}"
                f"{r['ogr']['mb']:>8.0f}/{r['cli']['mb']:.0f}/{r['api']['mb']:.0f}"
                f"  {r['stored_cli']:,}/{r['stored_api']:,} (goal {goal})"
            )
    if "exports" in report:
        print(f"\n2. export of the county ({args.parcels:,} parcels, {DATABASE}): time to last byte; peak RSS")
        print(
            f"{'format':<9}{'guatu s':>9}{'ogr2ogr s':>11}{'ratio':>8}{'guatu MB':>10}{'ogr MB':>8}"
            f"{'RSS guatu srv':>15}{'RSS ogr2ogr':>13}  features guatu/ogr"
        )
        for fmt, r in report["exports"].items():
            print(
                f"{fmt:<9}{r['guatu_s']:>9.2f}{r['peer_s']:>11.2f}{ratio(r['guatu_s'], r['peer_s']):>8}"
                f"{r['guatu_file_mb']:>10.1f}{r['peer_file_mb']:>8.1f}{r['guatu_rss_mb']:>15.0f}{r['peer_rss_mb']:>13.0f}"
                f"  {r['guatu_features']:,}/{r['peer_features']:,}"
            )
    if "ogc" in report:
        o = report["ogc"]
        print(
            f"\n3. OGC API – Features items, {o['requests']} requests (CQL2 `{CQL2}`), p50 / p95 ms;"
            " raw = guatu's page + count statements through psycopg"
        )
        print(
            f"{'limit':>6} {'kind':<10}{'mode':<11}{'n':>3}{'raw':>16}{'guatu':>16}{'tipg':>16}"
            f"{'guatu/tipg p50':>15}{'guatu/raw p50':>14}{'KB guatu/tipg':>15}"
        )
        for r in o["rows"]:
            cells = "".join(f"{r[k][0]:>8.0f} /{r[k][1]:>6.0f}" for k in ("raw", "guatu", "tipg"))
            print(
                f"{r['limit']:>6} {r['kind']:<10}{r['mode']:<11}{r['n']:>3}{cells}"
                f"{ratio(r['guatu'][0], r['tipg'][0]):>15}{ratio(r['guatu'][0], r['raw'][0]):>14}"
                f"{r['guatu_kb']:>8.0f}/{r['tipg_kb']:.0f}"
            )
        walls = ", ".join(f"{k} {w['sequential']:.1f} / {w['concurrent']:.1f} s" for k, w in o["wall"].items())
        print(f"wall, sequential / {CLIENTS} clients: {walls}")
    if "oapif" in report:
        r = report["oapif"]
        g, t = r["guatu"], r["tipg"]
        print(f"\n4. ogr2ogr -f GPKG from OAPIF, -spat {' '.join(r['spat'])}, PAGE_SIZE=1000")
        print(
            f"guatu {g['s']:.2f} s ({g['features']:,} features), tipg {t['s']:.2f} s ({t['features']:,} features),"
            f" ratio {ratio(g['s'], t['s'])}"
        )


if __name__ == "__main__":
    main()
