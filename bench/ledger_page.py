"""Ledger rows of a county of a million parcels: guatu's /api/layers/parcels/rows beside the raw SQL, one run.

Usage: `.venv/bin/python bench/ledger_page.py [--repeat 7]` after `bench/tile_serving.py` has
made its county (database `guatu_bench_tiles`); `--generate N` makes it here instead. Serves
guatu on that database (uvicorn, one worker, loopback) and asks, with a keep-alive httpx client
signed in by an API token (bench/signin.py), for the first rows of the ledger as the ledger page
does — page 1 in the default order, a filtered page, pages sorted by an indexed and an unindexed
field, a deep page, the rows in a map view, and the exact count the page asks for apart — as
two users: the bench's administrator (everywhere) and a planner of the street holding the
county (row-level security checks every row's area). Beside each, the raw SQL peer: the same
rows (same conditions, order, limit and offset, one more row than the page) through psycopg as
the same actor, without JSON building, the capped count or HTTP. Prints p50 and p95 of the
timed repeats (the first of each is a warm-up), the ratio to raw, and whether guatu's p50 meets
the 300 ms goal of the issue; `--json` prints the same as JSON.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvicorn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from tile_serving import (  # noqa: E402
    COUNTY,
    bench_url,
    generate,
    libpq_dsn,
    owner_url,
    parcel_count,
    prepare_database,
)

from bench import signin  # noqa: E402
from layers import accounts  # noqa: E402
from spatial.db import make_engine  # noqa: E402
from tests.browser import free_port  # noqa: E402

GOAL_MS = 300.0
SIZE = 50
STREET = "370214100"
"""The street the generated county's villages (370214100xxx) lie in: its planner sees every parcel."""
PLANNER = "bench_planner"
_X, _Y = (COUNTY[0] + COUNTY[2]) / 2, (COUNTY[1] + COUNTY[3]) / 2
VIEW = (_X, _Y, _X + 0.012, _Y + 0.008)
"""About a street-level map view (z16 at 1440×900) in the middle of the county."""
_ENV = f"ST_MakeEnvelope({VIEW[0]}, {VIEW[1]}, {VIEW[2]}, {VIEW[3]}, 4490)"
VIEW_BOX = f"geom && {_ENV} AND ST_Intersects(geom, {_ENV})"


def cases(count: int) -> list[dict[str, Any]]:
    """Return the requests timed: query parameters of /rows and the raw SQL of the same rows."""
    view = VIEW
    deep = max(1, min(10_000, count // SIZE // 2))
    cols = (
        "id, version, ST_XMin(geom), ST_YMin(geom), ST_XMax(geom), ST_YMax(geom), code, name, land_use_code, "
        "ownership, use_status, stage, mode, idle_since, idle_reason, owner, address, community_code, grid_code, "
        "area_m2, updated_at"
    )
    box = VIEW_BOX  # as guatu writes it (layers.stats.bbox_condition)

    def raw(where: str = "", order: str = "id", offset: int = 0) -> str:
        cond = f" WHERE {where}" if where else ""
        return f"SELECT {cols} FROM parcels{cond} ORDER BY {order} LIMIT {SIZE + 1} OFFSET {offset}"

    return [
        {"name": "page 1, by id", "params": {}, "raw": raw()},
        {"name": "filter 闲置", "params": {"status": "闲置"}, "raw": raw("use_status = '闲置'")},
        {
            "name": "filter 01 + 集体",
            "params": {"land_use": "01", "ownership": "集体"},
            "raw": raw("land_use_code LIKE '01%' AND ownership = '集体'"),
        },
        {
            "name": "sort area desc",
            "params": {"sort": "area_mu", "dir": "desc"},
            "raw": raw(order="area_m2 DESC, id DESC"),
        },
        {"name": "sort use_status", "params": {"sort": "use_status"}, "raw": raw(order="use_status, id")},
        {"name": "sort name (no index)", "params": {"sort": "name"}, "raw": raw(order="name, id")},
        {"name": f"deep page {deep}", "params": {"page": deep}, "raw": raw(offset=(deep - 1) * SIZE)},
        {"name": "map view (dock)", "params": {"bbox": ",".join(map(str, view))}, "raw": raw(box)},
        {"name": "exact count (apart)", "path": "/rows/count", "params": {}, "raw": "SELECT count(*) FROM parcels"},
        {
            "name": "row's page, view (?at)",
            "params": {"bbox": ",".join(map(str, view)), "at": "{in_view}"},
            "raw": f"SELECT n FROM (SELECT id, row_number() OVER (ORDER BY id) n FROM parcels WHERE {box}) s "
            "WHERE id = {in_view}",
        },
        {
            "name": "row's page, county (?at)",
            "params": {"sort": "area_mu", "dir": "desc", "at": str(count // 2)},
            "raw": "SELECT n FROM (SELECT id, row_number() OVER (ORDER BY area_m2 DESC, id DESC) n FROM parcels) s "
            f"WHERE id = {count // 2}",
        },
    ]


def planner_token() -> str:
    """Return an API token of a planner of the county's street (made as the owner on first use)."""
    from sqlalchemy import update
    from sqlalchemy.orm import Session

    engine = make_engine(url=owner_url())
    try:
        with Session(engine) as session:
            found = session.query(accounts.User).filter_by(username=PLANNER).one_or_none()
            user = found or accounts.add_user(session, PLANNER, "planner", STREET, secrets.token_urlsafe(24), "规划员")
            session.execute(update(accounts.ApiToken).where(accounts.ApiToken.user_id == user.id).values(revoked=True))
            token = accounts.add_token(session, user, "bench")
            session.commit()
        return token
    finally:
        engine.dispose()


def p50_p95(samples: list[float]) -> tuple[float, float]:
    """Return the median and the 95th percentile of SAMPLES."""
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def time_http(client: httpx.Client, url: str, params: dict[str, Any], repeat: int) -> tuple[list[float], Any]:
    """Return the times (ms) of REPEAT timed GETs after one warm-up, and the last answer's body."""
    body: Any = None
    samples = []
    for i in range(repeat + 1):
        started = time.perf_counter()
        answer = client.get(url, params=params)
        elapsed = (time.perf_counter() - started) * 1000
        answer.raise_for_status()
        body = answer.json()
        if i:
            samples.append(elapsed)
    return samples, body


def time_raw(conn: psycopg.Connection[Any], sql: str, repeat: int) -> tuple[list[float], int]:
    """Return the times (ms) of REPEAT timed runs of SQL after one warm-up, and the rows it gave."""
    samples, rows = [], 0
    for i in range(repeat + 1):
        started = time.perf_counter()
        rows = len(conn.execute(sql.encode()).fetchall())
        elapsed = (time.perf_counter() - started) * 1000
        if i:
            samples.append(elapsed)
    return samples, rows


def main() -> None:
    """Run the bench and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=7, help="timed requests per case (after one warm-up)")
    parser.add_argument("--generate", type=int, help="make the county here with this many parcels first")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args()
    url = bench_url()
    if args.generate:
        prepare_database()
        generate(libpq_dsn(owner_url()), args.generate)
    held = parcel_count(libpq_dsn(url))
    if held < 10_000:
        raise SystemExit(f"the bench county holds {held:,} parcels: run bench/tile_serving.py (or --generate) first")
    tokens = {"admin": signin.admin_token(owner_url()), "planner": planner_token()}
    actors = {
        "admin": signin.options(),
        "planner": f"-c guatu.user={PLANNER} -c guatu.role=planner -c guatu.area={STREET}",
    }
    from api.main import create_app
    from api.server import server_config
    from api.settings import ApiSettings

    settings = ApiSettings()
    app = create_app(settings, engine=make_engine(url=url))
    server = uvicorn.Server(server_config(app, settings, host="127.0.0.1", port=free_port(), log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{server.config.port}/api/layers/parcels"
    results: list[dict[str, Any]] = []
    try:
        for who, token in tokens.items():
            with (
                httpx.Client(headers=signin.bearer(token), timeout=120) as client,
                psycopg.connect(libpq_dsn(url), options=actors[who]) as conn,
            ):
                in_view = conn.execute(f"SELECT max(id) FROM parcels WHERE {VIEW_BOX}".encode()).fetchone()
                for case in cases(held):
                    if case["params"].get("at") == "{in_view}":  # a parcel of the view: the last in its order
                        case["params"]["at"] = str(in_view[0] if in_view else 1)
                        case["raw"] = case["raw"].replace("{in_view}", case["params"]["at"])
                    samples, body = time_http(client, base + case.get("path", "/rows"), case["params"], args.repeat)
                    raw, raw_rows = time_raw(conn, case["raw"], args.repeat)
                    g50, g95 = p50_p95(samples)
                    r50, r95 = p50_p95(raw)
                    rows = len(body["data"]) if "data" in body else body["count"]
                    if "at" in case["params"]:
                        rows = body["page"]  # the page found
                    results.append(
                        {
                            "user": who,
                            "case": case["name"],
                            "guatu_p50_ms": round(g50, 1),
                            "guatu_p95_ms": round(g95, 1),
                            "raw_p50_ms": round(r50, 1),
                            "raw_p95_ms": round(r95, 1),
                            "ratio_p50": round(g50 / r50, 2) if r50 else None,
                            "rows": rows,
                            "raw_rows": raw_rows,
                            "count": body.get("count"),
                            "meets_goal": g50 <= GOAL_MS,
                        }
                    )
    finally:
        server.should_exit = True
    if args.json:
        print(json.dumps({"parcels": held, "size": SIZE, "goal_ms": GOAL_MS, "results": results}, ensure_ascii=False))
        return
    print(f"ledger rows over {held:,} parcels, {SIZE} a page, {args.repeat} timed requests per case, loopback")
    print(f"{'user':<8} {'case':<22} {'guatu p50/p95 ms':>18} {'raw p50/p95 ms':>16} {'ratio':>6} {'rows':>6}  goal")
    for r in results:
        goal = f"≤{GOAL_MS:.0f} ms" if r["meets_goal"] else f">{GOAL_MS:.0f} ms"
        print(
            f"{r['user']:<8} {r['case']:<22} {r['guatu_p50_ms']:>8.1f} / {r['guatu_p95_ms']:<7.1f}"
            f" {r['raw_p50_ms']:>7.1f} / {r['raw_p95_ms']:<6.1f} {r['ratio_p50'] or 0:>5.2f}× {r['rows']:>6}  {goal}"
        )


if __name__ == "__main__":
    main()
