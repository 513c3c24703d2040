"""Features by bounding box: guatu's HTTP API side by side with the raw SQL query, one run.

Usage: `make bench` (or `.venv/bin/python bench/bbox_features.py [--requests 300]`) against
the database `make run` uses (the demo street; loaded if empty). Prints p50/p95 per path
and guatu's ratio to the raw query, which builds the same FeatureCollection in PostGIS and
fetches it through psycopg with no HTTP and no Python in between. Both sides act as the same
administrator (bench/signin.py): guatu by its API token, the raw query's connection by stating
that actor, so both read the same rows through the same row-level security policies.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
from sqlalchemy import make_url
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.signin import act, admin_token, bearer, options  # noqa: E402
from layers import demo  # noqa: E402
from layers.base import REGISTRY  # noqa: E402
from spatial.db import make_engine  # noqa: E402
from spatial.settings import db_settings  # noqa: E402
from tests.browser import free_port  # noqa: E402

RAW_SQL = """
SELECT json_build_object(
  'type', 'FeatureCollection',
  'features', coalesce(json_agg(json_build_object(
      'type', 'Feature', 'id', id, 'geometry', ST_AsGeoJSON(geom, 9, 0)::json,
      'properties', json_build_object({pairs})) ORDER BY id), '[]'::json))::text
FROM (SELECT * FROM {table} WHERE ST_Intersects(geom, ST_MakeEnvelope(%s, %s, %s, %s, 4490))
      ORDER BY id LIMIT 5000) t
"""


def raw_sql(layer_id: str) -> str:
    """Return the hand-written query for LAYER_ID: the same columns guatu returns."""
    layer = REGISTRY[layer_id]
    names = [*layer.field_names, *(("area_m2", "area_mu") if layer.has_area else ()), "updated_at"]
    sql = {"area_mu": "area_m2 * 3 / 2000"}  # computed when read, as guatu does
    return RAW_SQL.format(table=layer.table, pairs=", ".join(f"'{n}', {sql.get(n, n)}" for n in names))


def bboxes(extent: list[float], count: int, seed: int = 7) -> list[tuple[float, float, float, float]]:
    """Return COUNT view-sized boxes (200 m to 2 km wide) inside EXTENT."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        width = rng.uniform(0.002, 0.02)
        height = width * 0.6
        x = rng.uniform(extent[0], extent[2] - width)
        y = rng.uniform(extent[1], extent[3] - height)
        out.append((x, y, x + width, y + height))
    return out


def percentiles(samples: list[float]) -> tuple[float, float]:
    """Return p50 and p95 in milliseconds."""
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.95) - 1] * 1000


def main() -> None:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--layer", default="parcels")
    args = parser.parse_args()

    url = db_settings().url()
    engine = make_engine()
    with act(Session(engine)) as session:
        if not session.execute(REGISTRY["parcels"].model.__table__.select().limit(1)).first():
            demo.load(session)
            session.commit()
    from layers.features import layer_summary

    with act(Session(engine)) as session:
        summary = layer_summary(session, REGISTRY[args.layer])
    boxes = bboxes(summary["extent"], args.requests)

    token = admin_token(db_settings().owner_url())
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "guatu"), "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(base + "/healthz")
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        api, raw, sizes = [], [], []
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        with (
            httpx.Client(base_url=base, headers=bearer(token)) as client,
            psycopg.connect(dsn, options=options()) as conn,
        ):
            conn.execute("SET jit = off")
            sql = raw_sql(args.layer)
            for box in boxes[:20]:  # warm both paths
                client.get(f"/api/layers/{args.layer}/features", params={"bbox": ",".join(map(str, box))})
                conn.execute(sql, box).fetchone()
            for box in boxes:
                started = time.perf_counter()
                body = conn.execute(sql, box).fetchone()
                raw.append(time.perf_counter() - started)
                started = time.perf_counter()
                response = client.get(
                    f"/api/layers/{args.layer}/features", params={"bbox": ",".join(map(str, box)), "limit": 5000}
                )
                api.append(time.perf_counter() - started)
                response.raise_for_status()
                sizes.append(response.json()["numberReturned"])
                assert body is not None
                if len(json.loads(body[0])["features"]) != sizes[-1]:  # both must see the same rows
                    raise SystemExit(f"raw SQL and guatu disagree on {box}: {sizes[-1]} features from guatu")
    finally:
        server.terminate()
        server.wait(10)

    api50, api95 = percentiles(api)
    raw50, raw95 = percentiles(raw)
    print(
        f"machine: {platform.node()} {platform.machine()}, "
        f"{platform.python_implementation()} {platform.python_version()}"
    )
    print(
        f"layer {args.layer}: {summary['count']} features; {len(boxes)} view-sized bboxes, "
        f"median {statistics.median(sizes):.0f} features per response (max {max(sizes)})"
    )
    print(f"{'path':<40}{'p50 ms':>10}{'p95 ms':>10}")
    print(f"{'raw SQL (psycopg, FeatureCollection)':<40}{raw50:>10.1f}{raw95:>10.1f}")
    print(f"{'guatu GET /api/layers/…/features':<40}{api50:>10.1f}{api95:>10.1f}")
    print(f"ratio guatu / raw: p50 {api50 / raw50:.2f}x, p95 {api95 / raw95:.2f}x")


if __name__ == "__main__":
    main()
