"""The upload warnings' cost: N new parcels over the demo street, dry run, with and without the warnings.

Usage: `.venv/bin/guatu demo load && .venv/bin/python bench/upload_warnings.py --n 20000`.
The parcels are 20 m squares laid over the demo's extent every 20 m (a tiling: each touches
its neighbours in the file, and overlaps the stored demo parcels under it), as declared and
GCJ-02-shifted; `--step-m 18` makes them overlap their neighbours too. Prints the whole dry
run's time and the warnings' share of it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.signin import act  # noqa: E402
from layers import REGISTRY, upload_warnings  # noqa: E402
from layers.uploads import UploadOptions, run_upload  # noqa: E402
from spatial.crs import wgs84_to_gcj02  # noqa: E402
from spatial.db import make_engine  # noqa: E402

X0, Y0, X1, Y1 = 120.354, 36.285, 120.407, 36.316  # the demo street's grids
COMMUNITY = "370214001009"


def generate(n: int, *, gcj02: bool, side_m: float = 20.0, step_m: float = 18.0) -> bytes:
    per_row = max(1, int((X1 - X0) * 111_320 * math.cos(math.radians(Y0)) / step_m))
    dx = step_m / (111_320 * math.cos(math.radians(Y0)))
    dy = step_m / 111_320
    sx, sy = side_m / step_m * dx, side_m / step_m * dy
    features = []
    for i in range(n):
        x, y = X0 + (i % per_row) * dx, Y0 + (i // per_row) * dy
        ring = np.array([[x, y], [x + sx, y], [x + sx, y + sy], [x, y + sy], [x, y]])
        if gcj02:
            ring = np.column_stack(wgs84_to_gcj02(ring[:, 0], ring[:, 1]))
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring.round(8).tolist()]},
                "properties": {
                    "code": f"{COMMUNITY}9{i:06d}",
                    "land_use_code": "0103",
                    "ownership": "集体",
                    "use_status": "承包",
                },
            }
        )
    return json.dumps({"type": "FeatureCollection", "features": features}, ensure_ascii=False).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--step-m", type=float, default=20.0, help="20 m squares this far apart (20: a tiling)")
    args = parser.parse_args()
    engine = make_engine()
    finished: list[float] = []
    real_finish = upload_warnings.Watch.finish

    def timed_finish(self, *a, **k):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        try:
            return real_finish(self, *a, **k)
        finally:
            finished.append(time.perf_counter() - started)

    upload_warnings.Watch.finish = timed_finish  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as folder:
        from layers.settings import layer_settings

        layer_settings().archive_dir = Path(folder)
        for gcj02 in (False, True):
            raw = generate(args.n, gcj02=gcj02, step_m=args.step_m)
            with engine.connect() as conn:
                outer = conn.begin()
                with act(Session(bind=conn, join_transaction_mode="create_savepoint")) as session:
                    started = time.perf_counter()
                    options = UploadOptions(dry_run=True, mode="valid-only")
                    upload = run_upload(session, REGISTRY["parcels"], raw, options)
                    elapsed = time.perf_counter() - started
                outer.rollback()
            report = upload.report
            said = {w["code"]: w.get("pairs", w.get("offset_m")) for w in report.get("warnings", [])}
            print(
                f"{args.n} parcels{' GCJ-02-shifted' if gcj02 else ''}: dry run {elapsed:.2f} s, "
                f"warnings {finished[-1]:.2f} s; {report['summary']}; {said}"
            )


if __name__ == "__main__":
    main()
