"""Gap/overlap check of a generated coverage: guatu's checker beside a straightforward PostGIS query.

Usage: `make bench` (or `.venv/bin/python bench/check_coverage.py --sizes 2000,5000,10000,20000`).
Each size: N Voronoi cells tiling a square parent (about 60 m across each), with planted
defects of known number: some cells shrunk by 1 m (each leaves one ring-shaped gap) and
some grown by 1 m (each overlaps every neighbour). Both sides read the same table:
- peer: a pairwise self-join (`ST_Intersects` + geodesic `ST_Area(ST_Intersection)`) for
  overlaps, and `ST_Difference(parent, ST_Union(cells))` for the gaps;
- guatu: the cells read from the table, then `spatial.topology.Checker.coverage`.
The owner role makes and drops the tables; both sides read them as the app role, as guatu serves.
Prints seconds, defects found and the ratio per size, and the growth from the smallest size.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from sqlalchemy import make_url, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import shapely  # noqa: E402
from pyproj import Transformer  # noqa: E402

from spatial.db import make_engine  # noqa: E402
from spatial.settings import db_settings  # noqa: E402
from spatial.topology import Checker, LocalMetric, Tolerance  # noqa: E402

X0, Y0 = 120.60, 36.20
SHRUNK, GROWN = 5, 5


def coverage(n: int, seed: int = 11) -> tuple[shapely.Polygon, list[shapely.Polygon], int, int]:
    """Return the parent, N cells (lon/lat) and the numbers of planted gaps and overlapping pairs."""
    rng = np.random.default_rng(seed)
    side = 60.0 * np.sqrt(n)
    parent = shapely.box(0, 0, side, side)
    points = shapely.multipoints(rng.uniform(0, side, (n, 2)))
    cells = [c.intersection(parent) for c in shapely.get_parts(shapely.voronoi_polygons(points, extend_to=parent))]
    cells = [c for c in cells if not c.is_empty]
    tree = shapely.STRtree(cells)
    picked = rng.choice(len(cells), SHRUNK + GROWN, replace=False)
    chosen: set[int] = set()
    overlaps = 0
    for k, i in enumerate(picked):
        neighbours = set(tree.query(cells[i], predicate="touches").tolist()) | set(
            tree.query(cells[i], predicate="intersects").tolist()
        )
        neighbours.discard(int(i))
        if neighbours & chosen or int(i) in chosen:
            continue  # keep defects apart, so each is counted once
        chosen |= {int(i), *neighbours}
        if k < SHRUNK:
            cells[i] = cells[i].buffer(-1.0, join_style="mitre")
        else:
            grown = cells[i].buffer(1.0, join_style="mitre").intersection(parent)
            overlaps += sum(1 for j in neighbours if grown.intersection(cells[j]).area >= 1.0)
            cells[i] = grown
    gaps = sum(1 for i in picked[:SHRUNK] if int(i) in chosen)
    to_deg = Transformer.from_crs(f"+proj=tmerc +lon_0={X0} +lat_0={Y0} +ellps=GRS80 +units=m", 4490, always_xy=True)

    def deg(g: shapely.Geometry) -> shapely.Geometry:
        return shapely.transform(g, lambda c: np.column_stack(to_deg.transform(c[:, 0], c[:, 1])))

    # the parent's edges carry every vertex its cells put on them, so the outline converts alike
    outline = shapely.union_all([parent.boundary, *[c.boundary for c in cells]]).intersection(parent.boundary)
    merged = shapely.line_merge(outline)
    if merged.geom_type == "LineString" and merged.is_ring:
        parent = shapely.Polygon(merged.coords)
    return deg(parent), [deg(c) for c in cells], gaps, overlaps


PEER_OVERLAPS = """
    SELECT count(*) FROM (
        SELECT ST_Area(ST_Intersection(a.geom, b.geom)::geography) AS area
        FROM bench_cells a JOIN bench_cells b ON a.id < b.id AND ST_Intersects(a.geom, b.geom)
    ) pairs WHERE area >= 1.0
"""
PEER_GAPS = """
    SELECT count(*) FROM (
        SELECT (ST_Dump(ST_Difference((SELECT geom FROM bench_parent), ST_Union(geom)))).geom AS g FROM bench_cells
    ) parts WHERE ST_Area(g::geography) >= 1.0
"""


def main() -> None:
    """Run every size and print the comparison."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="2000,5000,10000,20000")
    args = parser.parse_args()
    engine = make_engine()  # the app's role: what is timed
    owner = make_engine(url=db_settings().owner_url())  # makes and drops the bench's tables
    reader = make_url(db_settings().url()).username or ""
    rows = []
    for n in [int(v) for v in args.sizes.split(",")]:
        parent, cells, gaps, overlaps = coverage(n)
        with owner.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS bench_cells; DROP TABLE IF EXISTS bench_parent"))
            conn.execute(
                text("CREATE TABLE bench_cells (id serial PRIMARY KEY, code text, geom geometry(Polygon, 4490))")
            )
            conn.execute(text("CREATE TABLE bench_parent (geom geometry(Polygon, 4490))"))
            conn.execute(
                text(
                    "INSERT INTO bench_cells (code, geom) SELECT c, ST_GeomFromWKB(w, 4490) "
                    "FROM unnest(CAST(:c AS text[]), CAST(:w AS bytea[])) AS t(c, w)"
                ),
                {"c": [f"370214001009{i:05d}" for i in range(len(cells))], "w": [shapely.to_wkb(c) for c in cells]},
            )
            conn.execute(
                text("INSERT INTO bench_parent VALUES (ST_GeomFromWKB(:w, 4490))"), {"w": shapely.to_wkb(parent)}
            )
            conn.execute(text("CREATE INDEX ON bench_cells USING gist (geom)"))
            conn.execute(text("ANALYZE bench_cells"))
            role = conn.dialect.identifier_preparer.quote(reader)
            conn.execute(text(f"GRANT SELECT ON bench_cells, bench_parent TO {role}"))
        with engine.connect() as conn:
            started = time.perf_counter()
            peer_overlaps = conn.execute(text(PEER_OVERLAPS)).scalar_one()
            peer_gaps = conn.execute(text(PEER_GAPS)).scalar_one()
            peer_s = time.perf_counter() - started
            started = time.perf_counter()
            stored = conn.execute(text("SELECT code, ST_AsBinary(geom) FROM bench_cells ORDER BY id")).all()
            units = [(code, shapely.from_wkb(wkb)) for code, wkb in stored]
            found = Checker(LocalMetric.around([parent]), Tolerance()).coverage(
                units, ("370214001009", parent), child_zh="格", child_en="cell"
            )
            guatu_s = time.perf_counter() - started
        guatu_gaps = sum(1 for f in found if f.rule == "gap")
        guatu_overlaps = sum(1 for f in found if f.rule == "overlap")
        rows.append((n, peer_s, peer_gaps, peer_overlaps, guatu_s, guatu_gaps, guatu_overlaps, gaps, overlaps))
        print(f"{n} cells: peer {peer_s:.2f} s, guatu {guatu_s:.2f} s", flush=True)
    with owner.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS bench_cells; DROP TABLE IF EXISTS bench_parent"))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, CPython {platform.python_version()}")
    print(
        f"{'cells':>7} {'planted gaps/overlaps':>22} {'peer s':>8} {'peer found':>11} {'guatu s':>8}"
        f" {'guatu found':>12} {'ratio':>6}"
    )
    for n, peer_s, pg, po, guatu_s, gg, go, gaps, overlaps in rows:
        print(
            f"{n:>7} {f'{gaps}/{overlaps}':>22} {peer_s:>8.2f} {f'{pg}/{po}':>11} {guatu_s:>8.2f} {f'{gg}/{go}':>12}"
            f" {peer_s / guatu_s:>5.1f}x"
        )
    first = rows[0]
    for n, _, _, _, guatu_s, *_ in rows[1:]:
        print(f"growth {first[0]} -> {n} cells ({n / first[0]:.0f}x): guatu {guatu_s / first[4]:.1f}x the time")


if __name__ == "__main__":
    main()
