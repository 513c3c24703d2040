"""Import of generated parcels: `guatu import` beside `ogr2ogr -f PostgreSQL`, one run, same database.

Usage: `make bench` (or `.venv/bin/python bench/import_parcels.py --n 100000`). ogr2ogr
validates nothing; guatu checks every feature (schema, geometry validity, codes against
location) and diffs against the table before one transaction. Prints time, peak RSS and
the ratio.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import make_url, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from spatial.db import make_engine  # noqa: E402
from spatial.settings import db_settings  # noqa: E402

COMMUNITY = "370214009001"


def generate(n: int, path: Path) -> None:
    """Write N parcels (25 m squares in rows east of Chengyang) as a GeoJSON FeatureCollection."""
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
                "properties": {
                    "code": f"{COMMUNITY}01{i:05d}",
                    "land_use_code": "0103",
                    "ownership": "集体",
                    "use_status": "承包" if i % 11 else "闲置",
                },
            }
            out.write(("," if i else "") + json.dumps(feature, ensure_ascii=False) + "\n")
        out.write("]}\n")


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run ARGV; return (seconds, peak RSS in MB of that child alone)."""
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        child = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        elapsed = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            out.seek(0)
            raise SystemExit(f"{argv[0]} failed:\n{out.read()[-4000:].decode(errors='replace')}")
    return elapsed, usage.ru_maxrss / 1024


def main() -> None:
    """Generate, import both ways, print the comparison."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    args = parser.parse_args()
    ogr2ogr = shutil.which("ogr2ogr")
    if not ogr2ogr:
        raise SystemExit("ogr2ogr not found: `make bench` installs gdal-bin")
    url = db_settings().url()
    engine = make_engine()
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS bench_ogr_parcels"))
        conn.execute(
            text("DELETE FROM parcels WHERE community_code = :c OR code LIKE :p"),
            {"c": COMMUNITY, "p": COMMUNITY + "%"},
        )
    libpq = make_url(url)
    pg = f"PG:host={libpq.host} port={libpq.port} dbname={libpq.database} user={libpq.username}" + (
        f" password={libpq.password}" if libpq.password else ""
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "parcels.geojson"
        started = time.perf_counter()
        generate(args.n, path)
        size_mb = path.stat().st_size / 1e6
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        with engine.begin() as conn:  # an earlier run's upload would be replayed, not re-imported
            conn.execute(text("DELETE FROM uploads WHERE sha256 = :s"), {"s": sha})
        print(f"generated {args.n} parcels ({size_mb:.0f} MB) in {time.perf_counter() - started:.1f} s")
        ogr_s, ogr_rss = timed(
            [
                ogr2ogr,
                "-f",
                "PostgreSQL",
                pg,
                str(path),
                "-nln",
                "bench_ogr_parcels",
                "-lco",
                "GEOMETRY_NAME=geom",
                "-a_srs",
                "EPSG:4490",
                "-nlt",
                "PROMOTE_TO_MULTI",
                "--config",
                "PG_USE_COPY",
                "YES",
            ]
        )
        env = dict(os.environ, GUATU_ARCHIVE_DIR=str(Path(folder) / "archive"))
        guatu = str(Path(sys.executable).parent / "guatu")
        guatu_s, guatu_rss = timed([guatu, "import", str(path), "--layer", "parcels"], env=env)
    with engine.begin() as conn:
        stored = conn.execute(text("SELECT count(*) FROM parcels WHERE code LIKE :p"), {"p": COMMUNITY + "%"}).scalar()
        conn.execute(text("DROP TABLE IF EXISTS bench_ogr_parcels"))
        conn.execute(text("DELETE FROM parcels WHERE code LIKE :p"), {"p": COMMUNITY + "%"})
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, CPython {platform.python_version()}")
    print(f"{'path':<44}{'seconds':>10}{'peak RSS MB':>14}")
    print(f"{'ogr2ogr -f PostgreSQL (validates nothing)':<44}{ogr_s:>10.2f}{ogr_rss:>14.0f}")
    print(f"{'guatu import (checks, diff, one transaction)':<44}{guatu_s:>10.2f}{guatu_rss:>14.0f}")
    print(f"ratio guatu / ogr2ogr: {guatu_s / ogr_s:.1f}x  (rows stored by guatu: {stored})")


if __name__ == "__main__":
    main()
