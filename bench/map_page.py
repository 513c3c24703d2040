"""The map page over a county of a million parcels, in headless Chromium: vector tiles beside GeoJSON by view.

Usage: `.venv/bin/python bench/map_page.py [--views 12]` after `bench/tile_serving.py` has
made its county (database `guatu_bench_tiles`, 1,000,000 parcels). Serves guatu on that
database (tile cache off) and opens its map page twice, one run, both signed in as the bench's
administrator (bench/signin.py; its API token on every request the pages make):

- tiles: the page as it is, parcels from `/tiles/parcels/{z}/{x}/{y}.pbf` (Leaflet.VectorGrid);
- GeoJSON (the peer, what the page did before vector tiles): the same page with the tile layer
  switched off; the view's parcels are fetched from `/api/layers/parcels/features?bbox=…`
  (at most 10,000, the API's cap) and drawn with `L.geoJSON` in the same style.

For each of a seeded list of views at zooms 15–17 the map is moved there ("jump") and then
panned east by half its width ("pan"), each timed until every parcel is drawn (all tiles
loaded and two animation frames later / the GeoJSON added and two frames later). On a pan
the tiles already drawn stay and only the new ones are fetched; the GeoJSON peer fetches
and redraws the whole view. Prints p50 and p95 per zoom and move, features drawn, ratios.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
from pathlib import Path

import uvicorn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from tile_serving import COUNTY, bench_url, libpq_dsn, owner_url, parcel_count  # noqa: E402

from bench.signin import admin_token  # noqa: E402
from spatial.db import make_engine  # noqa: E402
from tests.browser import SIGNED_IN, chromium, free_port  # noqa: E402

ZOOMS = (15, 16, 17)
SEED = 4490

MOVE_TILES = """([x, y, z, pan]) => new Promise(done => {
  const map = Object.values(window).find(v => v instanceof L.Map);
  const t0 = performance.now();
  if (pan) map.panBy([pan, 0], {animate: false}); else map.setView([y, x], z, {animate: false});
  const wait = () => {
    if (!guatu.idle()) return setTimeout(wait, 5);
    requestAnimationFrame(() => requestAnimationFrame(() =>
      done({ms: performance.now() - t0, drawn: guatu.drawn('parcels').length})));
  };
  setTimeout(wait, 0);
})"""

MOVE_GEOJSON = """([x, y, z, pan, style]) => new Promise((done, fail) => {
  const map = Object.values(window).find(v => v instanceof L.Map);
  const t0 = performance.now();
  if (pan) map.panBy([pan, 0], {animate: false}); else map.setView([y, x], z, {animate: false});
  const b = map.getBounds();
  const bbox = [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map(v => v.toFixed(7)).join(',');
  fetch('/api/layers/parcels/features?limit=10000&bbox=' + bbox, {headers: {Accept: 'application/geo+json'}})
    .then(r => r.json())
    .then(fc => {
      if (window.benchLayer) map.removeLayer(window.benchLayer);
      window.benchLayer = L.geoJSON(fc, {style: f => ({
        color: '#374151', weight: style.weight, fillOpacity: style.fillOpacity,
        fillColor: style.colors[f.properties[style.by]] || style.default})}).addTo(map);
      requestAnimationFrame(() => requestAnimationFrame(() =>
        done({ms: performance.now() - t0, drawn: fc.features.length, matched: fc.numberMatched})));
    }).catch(fail);
})"""


def views(count: int) -> list[tuple[float, float, int]]:
    """Return COUNT seeded (lon, lat, zoom) views inside the county, the zooms taken in turn."""
    rng = random.Random(SEED)
    west, south, east, north = COUNTY
    return [
        (rng.uniform(west + 0.02, east - 0.02), rng.uniform(south + 0.02, north - 0.02), ZOOMS[i % len(ZOOMS)])
        for i in range(count)
    ]


def p50_p95(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--views", type=int, default=12, help="views, zooms 15, 16, 17 in turn")
    args = parser.parse_args()
    url = bench_url()
    held = parcel_count(libpq_dsn(url))
    if held < 100_000:
        raise SystemExit(f"the bench county holds {held:,} parcels: run bench/tile_serving.py first")

    os.environ["GUATU_TILE_CACHE_SIZE"] = "0"
    SIGNED_IN["token"] = admin_token(owner_url())  # both pages send it: signed in as the bench's administrator
    from api.main import create_app
    from api.server import server_config
    from api.settings import ApiSettings

    port = free_port()
    settings = ApiSettings()
    app = create_app(settings, engine=make_engine(url=url))
    server = uvicorn.Server(server_config(app, settings, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    from layers.base import REGISTRY

    style = REGISTRY["parcels"].style
    js_style = {
        "by": style.by,
        "colors": style.colors,
        "default": style.default,
        "weight": style.weight,
        "fillOpacity": style.fill_opacity,
    }
    plan = views(args.views)
    results: dict[str, dict[tuple[str, int], list[tuple[float, int]]]] = {"tiles": {}, "geojson": {}}
    try:
        with chromium() as browser:
            pages = {}
            for name in ("tiles", "geojson"):
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(base + "/")
                page.wait_for_function("window.guatu && guatu.idle()", timeout=60_000)
                if name == "geojson":  # the peer draws the parcels itself
                    label = page.locator(".leaflet-control-layers-overlays label", has_text="地块 Land parcels")
                    label.locator("input").uncheck()
                pages[name] = page
            for x, y, z in [(x + 0.003, y, z) for x, y, z in plan[:3]] + plan:  # three warm-up views first
                for move, pan in (("jump", 0), ("pan", 700)):
                    for name, page in pages.items():
                        if name == "tiles":
                            out = page.evaluate(MOVE_TILES, [x, y, z, pan])
                        else:
                            out = page.evaluate(MOVE_GEOJSON, [x, y, z, pan, js_style])
                        results[name].setdefault((move, z), []).append((out["ms"], out["drawn"]))
    finally:
        server.should_exit = True
    print(f"map page over {held:,} parcels, {args.views} views (after 3 warm-up views), viewport 1400×900")
    head = f"{'tiles p50/p95 ms':>18}  {'drawn':>7}  {'GeoJSON p50/p95 ms':>20}  {'drawn':>7}"
    print(f"{'move':>4} {'zoom':>4}  {head}  ratio p50")
    for move in ("jump", "pan"):
        for z in ZOOMS:
            tiles, geo = results["tiles"][(move, z)][1:], results["geojson"][(move, z)][1:]  # first: warm-up
            if not tiles or not geo:
                continue
            t50, t95 = p50_p95([ms for ms, _ in tiles])
            g50, g95 = p50_p95([ms for ms, _ in geo])
            td = statistics.median(n for _, n in tiles)
            gd = statistics.median(n for _, n in geo)
            print(
                f"{move:>4} {z:>4}  {t50:>8.0f} / {t95:<7.0f}  {td:>7.0f}  {g50:>9.0f} / {g95:<8.0f}  {gd:>7.0f}"
                f"  {g50 / t50:.2f}×"
            )


if __name__ == "__main__":
    main()
