"""County-wide boundary checks: guatu's check in pieces beside the PostGIS self-join, one run (issue 15).

Usage: `.venv/bin/python bench/county_checks.py [--parcels 1000000] [--workers 1,2] [--regenerate]`
(needs the database server `make database` starts, or DATABASE_URL's). Works in its own
database, `guatu_bench_checks`, migrated with guatu's migrations and filled in SQL (as the
owner role) with the county of bench/tile_serving.py (same extent and cell grid, one parcel a
cell) and, over it, the units the checks need: one county, a street per row of blocks, a
community per block of 45 × 45 cells (about 2,000 parcels), nine grids per community. Planted
defects of known number: parcels grown over their east neighbour (overlaps), grown across
their grid's edge (straddling), named after the wrong grid, shifted out of the county (outside
every grid); grids shrunk from their north edge (gaps) or grown over their east neighbour
(overlaps). Kept between runs (`--regenerate` rebuilds it).

Both sides read as the app role, stating the same administrator (row-level security):
- peer: one SQL statement a rule family (parcels within grids; parcels overlapping; grids and
  divisions tiling their parents: gaps and overlaps), through psycopg, returning the findings'
  rule and codes;
- guatu: `layers.checks.check_all` with rules within, overlap and coverage, county-wide, with 1
  and 2 workers, each run in a fresh process (its peak RSS is its own, `ru_maxrss`).
Prints seconds, the findings per rule on both sides, the ratio and the peak RSS beside the goal
(not slower than the self-join; memory bounded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import goals, signin  # noqa: E402
from bench.tile_serving import COUNTY, grid  # noqa: E402
from layers import migrate  # noqa: E402
from spatial import roles  # noqa: E402
from spatial.db import make_engine  # noqa: E402
from spatial.settings import db_settings  # noqa: E402

DATABASE = "guatu_bench_checks"
BLOCK = 45
"""Cells a community is across (45 × 45 ≈ 2,000 parcels)."""
GRID = 15
"""Cells a grid is across (nine grids a community)."""
PLANTED = {"overlap": 200, "straddle": 200, "mismatch": 200, "outside": 100, "grid_gap": 50, "grid_overlap": 50}
RULES = ("within", "overlap", "coverage")
GOAL = "goal: guatu ≤ 1.0× the self-join's time, memory bounded"


def bench_url() -> str:
    """Return the app's SQLAlchemy URL of the bench database."""
    return db_settings().url(DATABASE)


def owner_url() -> str:
    """Return the owner's SQLAlchemy URL of the bench database."""
    return db_settings().owner_url(DATABASE)


def libpq(url: str) -> str:
    """Return a SQLAlchemy URL as a libpq one."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def prepare_database() -> None:
    """Create the bench database if missing and migrate it as the owner."""
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


def generation(n: int) -> list[str]:
    """Return the statements that write the county: units, N parcels, then the planted defects."""
    west, south, east, north = COUNTY
    columns, rows = grid(n)
    dx, dy = (east - west) / columns, (north - south) / rows

    def x(col: str) -> str:
        return f"({west!r} + ({col}) * {dx!r})"

    def y(row: str) -> str:
        return f"({south!r} + ({row}) * {dy!r})"

    blocks_x, blocks_y = -(-columns // BLOCK), -(-rows // BLOCK)
    # street s (from the north, 1-based) holds block row by = blocks_y - s; community c = block column + 1
    street = f"('370214' || lpad(({blocks_y} - by)::text, 3, '0'))"
    community = f"({street} || lpad((bx + 1)::text, 3, '0'))"
    cell = (
        f"SELECT i, i % {columns} AS col, i / {columns} AS row, (i % {columns}) / {BLOCK} AS bx,"
        f" (i / {columns}) / {BLOCK} AS by, ((i % {columns}) % {BLOCK}) / {GRID} AS gx,"
        f" ((i / {columns}) % {BLOCK}) / {GRID} AS gy, random() AS r1, random() AS r2"
        f" FROM generate_series(0, {n - 1}) AS i"
    )
    grid_no = "lpad(((2 - gy) * 3 + gx + 1)::text, 3, '0')"  # west → east, north → south

    def jitter(base: float) -> str:
        return f"({base} + 0.08 * (2 * random() - 1))"

    parcel = (
        f"ST_Multi(ST_SetSRID(ST_MakeEnvelope({x(f'col + {jitter(0.1)}')}, {y(f'row + {jitter(0.1)}')},"
        f" {x(f'col + {jitter(0.9)}')}, {y(f'row + {jitter(0.9)}')}), 4490))"
    )
    units = f"""
        INSERT INTO divisions (code, name, level, parent_code, geom)
        SELECT '370214', '基准县', '区县', NULL,
               ST_Multi(ST_MakeEnvelope({west!r}, {south!r}, {x(str(columns))}, {y(str(rows))}, 4490))
        UNION ALL
        SELECT {street}, '街道' || by, '街道', '370214',
               ST_Multi(ST_MakeEnvelope({x("0")}, {y(f"by * {BLOCK}")}, {x(str(columns))},
                                        {y(f"least((by + 1) * {BLOCK}, {rows})")}, 4490))
        FROM generate_series(0, {blocks_y - 1}) AS by
        UNION ALL
        SELECT {community}, '社区' || by || '-' || bx, '社区', {street},
               ST_Multi(ST_MakeEnvelope({x(f"bx * {BLOCK}")}, {y(f"by * {BLOCK}")},
                                        {x(f"least((bx + 1) * {BLOCK}, {columns})")},
                                        {y(f"least((by + 1) * {BLOCK}, {rows})")}, 4490))
        FROM generate_series(0, {blocks_y - 1}) AS by, generate_series(0, {blocks_x - 1}) AS bx
    """
    grids = f"""
        INSERT INTO grids (code, name, kind, community_code, valid_from, geom)
        SELECT {community} || {grid_no}, '网格' || {grid_no}, '基础网格', {community}, date '2024-01-01',
               ST_Multi(ST_MakeEnvelope({x(f"bx * {BLOCK} + gx * {GRID}")}, {y(f"by * {BLOCK} + gy * {GRID}")},
                                        {x(f"least(bx * {BLOCK} + (gx + 1) * {GRID}, {columns})")},
                                        {y(f"least(by * {BLOCK} + (gy + 1) * {GRID}, {rows})")}, 4490))
        FROM generate_series(0, {blocks_y - 1}) AS by, generate_series(0, {blocks_x - 1}) AS bx,
             generate_series(0, 2) AS gx, generate_series(0, 2) AS gy
        WHERE bx * {BLOCK} + gx * {GRID} < {columns} AND by * {BLOCK} + gy * {GRID} < {rows}
    """
    parcels = f"""
        INSERT INTO parcels (geom, code, community_code, grid_code, land_use_code, ownership, use_status)
        SELECT {parcel}, {community} || lpad(i::text, 7, '0'), {community}, {community} || {grid_no},
               (ARRAY['0101', '0103', '0201', '0301', '0601', '1006', '1104'])[1 + floor(r1 * 7)::int],
               CASE WHEN r2 < 0.9 THEN '集体' ELSE '国有' END, '自用'
        FROM ({cell}) AS c
    """
    # the planted defects: cells picked by a seeded hash of their number, apart from each other
    pick = "abs(hashtext('guatu' || i)) % 1000"
    box_east = (
        f"ST_Multi(ST_SetSRID(ST_MakeEnvelope({x('col + 0.1')}, {y('row + 0.2')}, {x('col + 1.3')},"
        f" {y('row + 0.8')}), 4490))"
    )
    interior = f"col % {GRID} < {GRID - 2} AND row % 4 = 1"
    defects = [
        f"""UPDATE parcels p SET geom = {box_east} FROM ({cell}) c
            WHERE p.code = {community} || lpad(c.i::text, 7, '0') AND c.i IN (
              SELECT i FROM ({cell}) c WHERE {interior} AND col % 5 = 2
              ORDER BY {pick}, i LIMIT {PLANTED["overlap"]})""",
        f"""UPDATE parcels p SET geom = {box_east} FROM ({cell}) c
            WHERE p.code = {community} || lpad(c.i::text, 7, '0') AND c.i IN (
              SELECT i FROM ({cell}) c WHERE col % {GRID} = {GRID - 1} AND col < {columns - 1} AND row % 4 = 3
              ORDER BY {pick}, i LIMIT {PLANTED["straddle"]})""",
        f"""UPDATE parcels p SET grid_code = {community} || lpad(((2 - gy) * 3 + (gx + 1) % 3 + 1)::text, 3, '0')
            FROM ({cell}) c WHERE p.code = {community} || lpad(c.i::text, 7, '0') AND c.i IN (
              SELECT i FROM ({cell}) c WHERE {interior} AND col % 5 = 4 AND bx * {BLOCK} + {BLOCK} <= {columns}
              AND by * {BLOCK} + {BLOCK} <= {rows} ORDER BY {pick}, i LIMIT {PLANTED["mismatch"]})""",
        f"""UPDATE parcels p SET geom = ST_Translate(p.geom, {-0.5 * dx!r}, 0) FROM ({cell}) c
            WHERE p.code = {community} || lpad(c.i::text, 7, '0') AND c.i IN (
              SELECT i FROM ({cell}) c WHERE col = 0 AND row % 2 = 0 ORDER BY {pick}, i LIMIT {PLANTED["outside"]})""",
        f"""UPDATE grids SET geom = ST_Multi(ST_MakeEnvelope(ST_XMin(geom), ST_YMin(geom), ST_XMax(geom),
              ST_YMax(geom) - {0.05 * dy!r}, 4490))
            WHERE code IN (SELECT code FROM grids WHERE right(code, 3) IN ('004', '006')
              ORDER BY abs(hashtext(code)) % 1000, code LIMIT {PLANTED["grid_gap"]})""",
        f"""UPDATE grids SET geom = ST_Multi(ST_MakeEnvelope(ST_XMin(geom), ST_YMin(geom),
              ST_XMax(geom) + {0.05 * dx!r}, ST_YMax(geom), 4490))
            WHERE code IN (SELECT code FROM grids WHERE right(code, 3) IN ('001', '008')
              ORDER BY abs(hashtext(code || 'x')) % 1000, code LIMIT {PLANTED["grid_overlap"]})""",
    ]
    return [units, grids, parcels, *defects]


def count(dsn: str) -> int:
    """Return the number of parcels in the bench database."""
    with psycopg.connect(dsn, options=signin.options()) as conn:
        row = conn.execute("SELECT count(*) FROM parcels").fetchone()
        return int(row[0]) if row else 0


def generate(n: int) -> float:
    """Fill the bench database with the county of N parcels (as the owner); return the seconds taken."""
    started = time.perf_counter()
    with psycopg.connect(libpq(owner_url())) as conn:
        conn.execute("SET statement_timeout = 0")
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute("SET synchronous_commit = off")
        conn.execute("TRUNCATE parcels, grids, divisions RESTART IDENTITY CASCADE")
        history = conn.execute("SELECT to_regclass('grids_history')").fetchone()
        if history and history[0]:
            conn.execute("TRUNCATE grids_history")
        conn.execute("SELECT setseed(0.4490)")
        for statement in generation(n):
            conn.execute(statement.encode())
        if history and history[0]:
            conn.execute("TRUNCATE grids_history")  # the planted edits are the grids as they are, not new versions
    with psycopg.connect(libpq(owner_url()), autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) parcels, grids, divisions")
    return time.perf_counter() - started


# --- the peer: the PostGIS self-join ----------------------------------------------------------

PEER = {
    "within": """
        WITH shares AS MATERIALIZED (
            SELECT p.code, g.code AS grid, ST_Area(ST_Intersection(p.geom, g.geom)::geography) AS area
            FROM parcels p JOIN grids g ON ST_Intersects(p.geom, g.geom)
        ), hits AS (
            SELECT code, count(*) AS n, (array_agg(grid ORDER BY area DESC))[1] AS located
            FROM shares WHERE area >= 1 GROUP BY code
        )
        SELECT 'outside_frame', p.code, NULL FROM parcels p
        WHERE ST_Area(ST_Difference(p.geom, COALESCE(
            (SELECT ST_Union(g.geom) FROM grids g WHERE ST_Intersects(g.geom, p.geom)),
            ST_SetSRID('POLYGON EMPTY'::geometry, 4490)))::geography) >= 1
        UNION ALL
        SELECT 'straddles_frames', code, NULL FROM hits WHERE n > 1
        UNION ALL
        SELECT 'attribute_location_mismatch', p.code, NULL FROM parcels p JOIN hits h USING (code)
        WHERE p.grid_code IS NOT NULL AND p.grid_code <> h.located
    """,
    "overlap": """
        SELECT 'overlap', a.code, b.code
        FROM parcels a JOIN parcels b ON a.code < b.code AND ST_Intersects(a.geom, b.geom)
        WHERE ST_Relate(a.geom, b.geom, '2********') AND ST_Area(ST_Intersection(a.geom, b.geom)::geography) >= 1
    """,
    "coverage": """
        WITH tiling AS (  -- (parent, child) of each coverage rule: grids in communities, divisions in theirs
            SELECT d.code AS parent, d.geom AS parent_geom, g.code AS child, g.geom
            FROM divisions d JOIN grids g ON g.community_code = d.code WHERE d.level IN ('社区', '行政村')
            UNION ALL
            SELECT d.code, d.geom, c.code, c.geom FROM divisions d JOIN divisions c ON c.parent_code = d.code
        )
        SELECT 'overlap', a.child, b.child
        FROM tiling a JOIN tiling b ON a.parent = b.parent AND a.child < b.child AND ST_Intersects(a.geom, b.geom)
        WHERE ST_Relate(a.geom, b.geom, '2********') AND ST_Area(ST_Intersection(a.geom, b.geom)::geography) >= 1
        UNION ALL
        SELECT 'gap', parent, NULL FROM (
            SELECT parent, (ST_Dump(ST_Difference((array_agg(parent_geom))[1], ST_Union(geom)))).geom AS part
            FROM tiling GROUP BY parent
        ) parts WHERE ST_Area(part::geography) >= 1
    """,
}


def run_peer(dsn: str, budget_s: float) -> dict[str, Any]:
    """Run the peer's statements within BUDGET_S seconds in all; return seconds (each and in all) and findings per rule.

    A statement still running when the budget is spent is cancelled and named in ``unfinished``:
    the peer's time is then at least what it had spent (the ratio an upper bound).
    """
    found: dict[str, int] = {}
    seconds: dict[str, float] = {}
    unfinished: list[str] = []
    with psycopg.connect(dsn, options=signin.options() + " -c statement_timeout=0 -c jit=off") as conn:
        for name, statement in PEER.items():
            left_ms = max(1000, int((budget_s - sum(seconds.values())) * 1000))
            conn.execute(f"SET statement_timeout = {left_ms}".encode())
            started = time.perf_counter()
            try:
                rows = conn.execute(statement.encode()).fetchall()
            except psycopg.errors.QueryCanceled:
                conn.rollback()
                seconds[name] = time.perf_counter() - started
                unfinished.append(name)
                continue
            seconds[name] = time.perf_counter() - started
            for rule, *_ in rows:
                key = f"{name}:{rule}"
                found[key] = found.get(key, 0) + 1
    total = sum(seconds.values())
    return {"seconds": total, "each": seconds, "found": dict(sorted(found.items())), "unfinished": unfinished}


# --- guatu -------------------------------------------------------------------------------------


def run_guatu(workers: int) -> dict[str, Any]:
    """Run guatu's county-wide check in this process; return seconds, findings per rule and peak RSS."""
    from contextlib import contextmanager

    from sqlalchemy.orm import Session

    from layers.checks import check_all
    from spatial.db import state

    engine = make_engine(url=bench_url())

    @contextmanager
    def sessions() -> Any:
        with Session(engine) as session:
            state(session, signin.ACTOR.settings())
            yield session

    started = time.perf_counter()
    checked = check_all(sessions, rules=RULES, workers=workers, limit=10_000)
    seconds = time.perf_counter() - started
    found: dict[str, int] = {}
    for (_, rule), n in checked.counts.items():
        found[rule] = found.get(rule, 0) + n
    return {
        "seconds": seconds,
        "workers": workers,
        "pieces": checked.pieces,
        "listed": len(checked.findings),
        "total": checked.total,
        "found": dict(sorted(found.items())),
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def peer_by_rule(found: dict[str, int]) -> dict[str, int]:
    """Return the peer's findings per guatu rule name."""
    out: dict[str, int] = {}
    for key, n in found.items():
        rule = key.split(":", 1)[1]
        out[rule] = out.get(rule, 0) + n
    return dict(sorted(out.items()))


def main() -> None:
    """Generate the county if needed, run both sides, print the comparison."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--parcels", type=int, default=1_000_000)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("--guatu-only", type=int, default=None, help=argparse.SUPPRESS)  # one run, in a child
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--peer-budget-s",
        type=float,
        default=1800,
        help="stop the self-join after this long (its time is then a floor)",
    )
    args = parser.parse_args()
    if args.guatu_only is not None:
        print(json.dumps(run_guatu(args.guatu_only)))  # noqa: T201
        return
    prepare_database()
    dsn = libpq(bench_url())
    if args.regenerate or count(dsn) != args.parcels:
        print(f"generating {args.parcels:,} parcels …", flush=True)  # noqa: T201
        print(f"generated in {generate(args.parcels):.0f} s", flush=True)  # noqa: T201
    print("peer: the PostGIS self-join …", flush=True)  # noqa: T201
    peer = run_peer(dsn, args.peer_budget_s)
    runs = []
    for workers in [int(w) for w in args.workers.split(",")]:
        print(f"guatu: {workers} worker(s) …", flush=True)  # noqa: T201
        child = subprocess.run(
            [sys.executable, __file__, "--guatu-only", str(workers)], check=True, capture_output=True, text=True
        )
        runs.append(json.loads(child.stdout.strip().splitlines()[-1]))
    report = {
        "parcels": args.parcels,
        "planted": PLANTED,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPython {platform.python_version()}",
        "peer": peer,
        "guatu": runs,
    }
    if args.json:
        print(json.dumps(report, indent=2))  # noqa: T201
        return
    print(f"machine: {report['machine']} (shared with other work)")  # noqa: T201
    print(f"county: {args.parcels:,} parcels; planted: {PLANTED}")  # noqa: T201
    each = ", ".join(f"{k} {v:.1f} s" for k, v in peer["each"].items())
    stopped = f"; STOPPED unfinished: {', '.join(peer['unfinished'])}" if peer["unfinished"] else ""
    print(f"peer (self-join): {peer['seconds']:.1f} s ({each}); found {peer_by_rule(peer['found'])}{stopped}")  # noqa: T201
    base = runs[0]["seconds"] if runs else 0.0
    for run in runs:
        ratio = run["seconds"] / peer["seconds"]
        verdict = "goal met" if ratio <= 1.0 else "goal not met"
        if peer["unfinished"]:
            verdict += " (the peer was stopped: its time is a floor, the ratio a ceiling)"
        goals.record("checks", f"county check, {run['workers']} worker(s) / PostGIS self-join", ratio, 1.0)
        print(  # noqa: T201
            f"guatu {run['workers']} worker(s): {run['seconds']:.1f} s, {run['pieces']} pieces, peak RSS "
            f"{run['rss_mb']:.0f} MB, {run['total']} findings ({run['listed']} listed); found {run['found']}"
        )
        print(  # noqa: T201
            f"  ratio guatu/peer {ratio:.2f}× ({GOAL}: {verdict}); speed-up over 1 worker {base / run['seconds']:.2f}×"
        )


if __name__ == "__main__":
    main()
