"""Hostile uploads of growing size: does guatu's checking stay linear? Beside orjson and ogrinfo.

Three shapes an adversary (or a broken exporter) sends, each at four sizes doubling:
- one feature with N property keys (12,500 … 100,000): the duplicate-member check was quadratic;
- N tiny features of ~80 bytes (125,000 … 1,000,000), every one refused (no properties);
- 2,000 features nested N deep inside a property (100 … 800, under the 1,000 limit).
For each, guatu's dry run (everything an upload does but the final write, in-process, rolled
back, as the bench's administrator: bench/signin.py) beside the raw parse of the same bytes by
orjson and by GDAL's `ogrinfo -so`, in one run.
Linear work shows as a doubling ratio of about 2 from one size to the next.

Usage: `make bench` or `.venv/bin/python bench/hostile_inputs.py [--quick]`.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.signin import act  # noqa: E402
from layers import REGISTRY  # noqa: E402
from layers.uploads import UploadOptions, run_upload  # noqa: E402
from spatial.db import make_engine  # noqa: E402

SHOP = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [120.4, 36.3]}}


def many_keys(n: int) -> bytes:
    keys = ",".join(f'"k{i}":{i}' for i in range(n))
    return (
        b'{"type":"FeatureCollection","features":[{"type":"Feature","geometry":'
        b'{"type":"Point","coordinates":[120.4,36.3]},"properties":{"name":"x",' + keys.encode() + b"}}]}"
    )


def tiny_features(n: int) -> bytes:
    tiny = b'{"type":"Feature","geometry":{"type":"Point","coordinates":[120.4,36.3]},"properties":{}}'
    return b'{"type":"FeatureCollection","features":[' + b",".join([tiny] * n) + b"]}"


def deep_nesting(depth: int, count: int = 2_000) -> bytes:
    nested = "[" * depth + "]" * depth
    feature = json.dumps({**SHOP, "properties": {"name": "x"}})[:-2] + ',"deep":' + nested + "}}"
    return ('{"type":"FeatureCollection","features":[' + ",".join([feature] * count) + "]}").encode()


SHAPES: dict[str, tuple[Callable[[int], bytes], list[int]]] = {
    "keys in one feature": (many_keys, [12_500, 25_000, 50_000, 100_000]),
    "tiny features": (tiny_features, [125_000, 250_000, 500_000, 1_000_000]),
    "nesting depth (2,000 features)": (deep_nesting, [100, 200, 400, 800]),
}


def guatu_dry_run(engine, raw: bytes) -> float:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        outer = conn.begin()
        with act(Session(bind=conn, join_transaction_mode="create_savepoint")) as session:
            started = time.perf_counter()
            upload = run_upload(session, REGISTRY["shops"], raw, UploadOptions(dry_run=True))
            elapsed = time.perf_counter() - started
            assert upload.status == "dry_run"
        outer.rollback()
    return elapsed


def orjson_parse(raw: bytes) -> float:
    started = time.perf_counter()
    orjson.loads(raw)
    return time.perf_counter() - started


def ogrinfo(raw: bytes) -> float | None:
    if shutil.which("ogrinfo") is None:
        return None
    with tempfile.NamedTemporaryFile(suffix=".geojson") as out:
        out.write(raw)
        out.flush()
        started = time.perf_counter()
        result = subprocess.run(["ogrinfo", "-ro", "-so", "-al", out.name], capture_output=True, check=False)
        elapsed = time.perf_counter() - started
    return elapsed if result.returncode == 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the two smaller sizes only")
    args = parser.parse_args()
    engine = make_engine()
    with tempfile.TemporaryDirectory() as folder:
        from layers.settings import layer_settings

        layer_settings().archive_dir = Path(folder)  # the bench's files are not kept
        print(f"# hostile inputs, {platform.node()} ({platform.machine()}), {time.strftime('%Y-%m-%d')}")
        print("| shape | size | MB | guatu s | ×prev | orjson s | ogrinfo s | guatu/orjson |")
        print("|---|---|---|---|---|---|---|---|")
        for shape, (make, sizes) in SHAPES.items():
            previous = None
            for n in sizes[:2] if args.quick else sizes:
                raw = make(n)
                took = guatu_dry_run(engine, raw)
                peer = orjson_parse(raw)
                gdal = ogrinfo(raw)
                ratio = f"{took / previous:.2f}" if previous else "—"
                shown = f"{gdal:.2f}" if gdal is not None else "n/a"
                print(
                    f"| {shape} | {n:,} | {len(raw) / 1e6:.1f} | {took:.2f} | {ratio} | {peer:.3f} | {shown} "
                    f"| {took / peer:.0f}× |",
                    flush=True,
                )
                previous = took
    engine.dispose()


if __name__ == "__main__":
    main()
