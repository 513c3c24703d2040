"""The map page over a county of a million parcels, in headless Chromium: renderers side by side (issue 15).

Usage: `.venv/bin/python bench/map_page.py [--views 12] [--only page,vg-svg,…] [--check-views 18]` after
`bench/tile_serving.py` has made its county (database `guatu_bench_tiles`, 1,000,000 parcels;
`bench/tile_serving.py --parcels 1000000 --only raw --tiles 20` makes it and stops soon after).
Serves guatu on that database (tile cache off) and opens its map page once per candidate, one
run, all signed in as the bench's administrator (bench/signin.py):

- page: the page as map.js draws it (since issue 15: VectorGrid, a canvas per tile);
- vg-svg: Leaflet.VectorGrid with its SVG renderer, an element per parcel (the page before);
- vg-canvas: Leaflet.VectorGrid with its canvas renderer;
- protomaps: protomaps-leaflet (canvas), `maxDataZoom` 22 so it fetches the same tiles;
- maplibre: MapLibre GL inside Leaflet (@maplibre/maplibre-gl-leaflet, WebGL; headless Chromium
  has no GPU: SwiftShader renders it in software, so frames and main-thread long tasks are shown);
- geojson (the peer, the page before vector tiles): the view's parcels from
  `/api/layers/parcels/features?bbox=…` (at most 10,000, the API's cap) drawn with `L.geoJSON`.

Every candidate but `page` takes the page's parcel group off the map and draws the same tiles
(`/tiles/parcels/{z}/{x}/{y}.pbf`) in the page's colours (guatu.look). For each of a seeded list of
views at zooms 15–17 the map is moved there ("jump") and then panned east by half its width
("pan"), each timed until every parcel is drawn (all tiles drawn and two animation frames later;
MapLibre's `idle`). "draw" is the part after the last tile (or the GeoJSON) arrived, from the
browser's own network timings. Then (`--check-views`) the page as shipped is filtered to idle
parcels and moved through that many views: each must draw only idle parcels, and a click on one
must open its own ledger and draw it highlighted.
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
from typing import Any

import uvicorn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from tile_serving import COUNTY, bench_url, libpq_dsn, owner_url, parcel_count  # noqa: E402

from bench import goals  # noqa: E402
from bench.signin import admin_token  # noqa: E402
from spatial.db import make_engine  # noqa: E402
from tests.browser import SIGNED_IN, chromium, free_port  # noqa: E402

ZOOMS = (15, 16, 17)
SEED = 4490
CANDIDATES = ("page", "vg-svg", "vg-canvas", "protomaps", "maplibre", "geojson")
LABELS = {
    "page": "the page (map.js as shipped)",
    "vg-svg": "VectorGrid SVG (before)",
    "vg-canvas": "VectorGrid canvas",
    "protomaps": "protomaps-leaflet",
    "maplibre": "MapLibre GL in Leaflet",
    "geojson": "GeoJSON by view (peer)",
}
SCRIPTS = {
    "vg-svg": ["/static/vendor/vectorgrid/Leaflet.VectorGrid.bundled.min.js"],
    "vg-canvas": ["/static/vendor/vectorgrid/Leaflet.VectorGrid.bundled.min.js"],
    "protomaps": ["/static/vendor/protomaps/protomaps-leaflet.js"],
    "maplibre": ["/static/vendor/maplibre/maplibre-gl-csp.js", "/static/vendor/maplibre/leaflet-maplibre-gl.js"],
}

# Each candidate page gets window.bench: whenDrawn() (a promise, asked right after the move) and
# drawn() (the features held in the tiles of the view, once each). Long tasks are collected for all.
SETUP = r"""([kind, style]) => {
  const map = Object.values(window).find(v => v instanceof L.Map);
  const B = window.bench = {map: map, long: []};
  new PerformanceObserver(list => list.getEntries().forEach(e => B.long.push([e.startTime, e.duration])))
    .observe({type: 'longtask', buffered: true});
  if (kind === 'page') {
    B.whenDrawn = () => new Promise(ok => {
      const wait = () => guatu.idle() ? ok() : setTimeout(wait, 5); setTimeout(wait, 0); });
    B.drawn = () => guatu.drawn('parcels').length;
    return;
  }
  map.removeLayer(guatu.group('parcels'));  // the candidate draws the parcels itself
  const opts = guatu.options('parcels');
  const url = location.origin + opts.tiles;
  const look = props => guatu.look(opts, props);
  const gridDrawn = layer => () => new Promise(ok => {
    const wait = () => layer._noTilesToLoad() ? ok() : setTimeout(wait, 5); setTimeout(wait, 0); });
  const vgDrawn = layer => () => {
    const seen = new Set();
    Object.values(layer._vectorTiles).forEach(t => Object.keys(t._features || {}).forEach(id => seen.add(id)));
    return seen.size;
  };
  if (kind === 'vg-svg' || kind === 'vg-canvas') {
    const layer = L.vectorGrid.protobuf(url, {
      rendererFactory: kind === 'vg-svg' ? L.svg.tile : L.canvas.tile, interactive: true, maxZoom: 22,
      vectorTileLayerStyles: {parcels: look}, getFeatureId: f => f.id,
      fetchOptions: {credentials: 'same-origin'}}).addTo(map);
    B.whenDrawn = gridDrawn(layer);
    B.drawn = vgDrawn(layer);
  } else if (kind === 'protomaps') {
    const P = protomapsL;
    const layer = P.leafletLayer({url: url, maxDataZoom: 22, labelRules: [], paintRules: [{dataLayer: 'parcels',
      symbolizer: new P.PolygonSymbolizer({
        fill: (z, f) => look(f ? f.props : {}).fillColor, opacity: style.fillOpacity,
        stroke: '#374151', width: style.weight})}]}).addTo(map);
    B.whenDrawn = gridDrawn(layer);
    B.drawn = () => null;  // protomaps-leaflet keeps no per-feature index to count from
  } else if (kind === 'maplibre') {
    maplibregl.setWorkerUrl('/static/vendor/maplibre/maplibre-gl-csp-worker.js');
    const match = ['match', ['to-string', ['get', style.by]]];
    Object.keys(style.colors).forEach(k => match.push(k, style.colors[k]));
    match.push(style.default);
    const layer = L.maplibreGL({style: {version: 8, sources: {parcels: {type: 'vector', tiles: [url], maxzoom: 22}},
      layers: [
        {id: 'fill', type: 'fill', source: 'parcels', 'source-layer': 'parcels',
         paint: {'fill-color': match, 'fill-opacity': style.fillOpacity}},
        {id: 'line', type: 'line', source: 'parcels', 'source-layer': 'parcels',
         paint: {'line-color': '#374151', 'line-width': style.weight}}]},
      interactive: false, fadeDuration: 0}).addTo(map);
    const gl = layer.getMaplibreMap();
    B.whenDrawn = () => new Promise(ok => gl.once('idle', ok));
    B.drawn = () => {
      const size = map.getSize(), seen = new Set();
      const origin = gl.project(map.containerPointToLatLng([0, 0]).wrap());
      gl.queryRenderedFeatures([origin, [origin.x + size.x, origin.y + size.y]], {layers: ['fill']})
        .forEach(f => seen.add(f.id));
      return seen.size;
    };
    B.ready = () => new Promise(ok => gl.loaded() ? ok() : gl.once('load', ok));
  } else if (kind === 'geojson') {
    B.whenDrawn = () => {
      const b = map.getBounds();
      const bbox = [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map(v => v.toFixed(7)).join(',');
      return fetch('/api/layers/parcels/features?limit=10000&bbox=' + bbox, {headers: {Accept: 'application/geo+json'}})
        .then(r => r.json()).then(fc => {
          if (B.layer) map.removeLayer(B.layer);
          B.count = fc.features.length;
          B.layer = L.geoJSON(fc, {style: f => look(L.extend({id: f.id}, f.properties))}).addTo(map);
        });
    };
    B.drawn = () => B.count;
  }
}"""

MOVE = r"""([x, y, z, pan]) => new Promise((done, fail) => {
  const B = window.bench, map = B.map;
  let frames = 0, counting = true;
  const tick = () => { if (counting) { frames++; requestAnimationFrame(tick); } };
  requestAnimationFrame(tick);
  const t0 = performance.now();
  if (pan) map.panBy([pan, 0], {animate: false}); else map.setView([y, x], z, {animate: false});
  B.whenDrawn().then(() => requestAnimationFrame(() => requestAnimationFrame(() => {
    counting = false;
    const t1 = performance.now();
    done({ms: t1 - t0, t0: t0, t1: t1, epoch0: performance.timeOrigin + t0, epoch1: performance.timeOrigin + t1,
          frames: frames});
  }))).catch(fail);
})"""

AFTER = r"""([t0, t1]) => new Promise(ok => setTimeout(() => {
  const B = window.bench;
  const long = B.long.filter(([s, d]) => s + d > t0 && s < t1)
    .reduce((a, [s, d]) => a + Math.min(s + d, t1) - Math.max(s, t0), 0);
  ok({drawn: B.drawn(), longMs: long});
}, 60))"""


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


def open_candidate(browser: Any, base: str, kind: str, style: dict[str, Any]) -> tuple[Any, list[tuple[float, float]]]:
    """Open the map page for candidate KIND; return it and the list its data responses land in."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    arrivals: list[tuple[float, float]] = []  # (start, end) in ms since the epoch, tiles and features

    def landed(request: Any) -> None:
        if "/tiles/parcels/" not in request.url and "/api/layers/parcels/features" not in request.url:
            return
        timing = request.timing
        if timing.get("startTime", -1) > 0 and timing.get("responseEnd", -1) >= 0:
            arrivals.append((timing["startTime"], timing["startTime"] + timing["responseEnd"]))

    page.on("requestfinished", landed)
    page.goto(base + "/")
    page.wait_for_function("window.guatu && guatu.idle() && guatu.group('parcels')", timeout=60_000)
    for script in SCRIPTS.get(kind, []):
        page.add_script_tag(url=script)
    page.evaluate(SETUP, [kind, style])
    page.evaluate("() => window.bench.ready ? window.bench.ready() : null")
    return page, arrivals


def measure(page: Any, arrivals: list[tuple[float, float]], x: float, y: float, z: int, pan: int) -> dict[str, Any]:
    """Move PAGE's map; return the total, the draw after the last data arrived, frames, long tasks, drawn."""
    out = page.evaluate(MOVE, [x, y, z, pan])
    out.update(page.evaluate(AFTER, [out["t0"], out["t1"]]))
    landed = [end for start, end in arrivals if start >= out["epoch0"] - 2 and end <= out["epoch1"] + 2]
    out["fetched"] = len(landed)
    out["draw"] = out["epoch1"] - max(landed) if landed else out["ms"]  # nothing fetched: all of it is drawing
    arrivals.clear()
    return out


CLICK = """(id) => guatu.pointOf('parcels', id)"""


def check_page(browser: Any, base: str, plan: list[tuple[float, float, int]]) -> list[dict[str, Any]]:
    """The page as shipped, filtered to idle parcels: every view moved to, its drawing checked, a parcel clicked.

    Each view: a jump, then a pan. Checked: every parcel drawn is idle (the filter), the click opens
    that parcel's own ledger and draws it highlighted. Returns per move: ms to drawn, ms to the ledger.
    """
    page, arrivals = open_candidate(browser, base, "page", {})
    page.wait_for_selector(".guatu-figures[data-count]", timeout=60_000)
    for box in page.locator(".guatu-choice input").all():  # the map's filter: idle parcels only
        if box.get_attribute("value") != "闲置":
            box.uncheck()
    page.wait_for_function(
        "(document.querySelector('.guatu-figures').dataset.query || '').startsWith('status=')", timeout=60_000
    )
    page.wait_for_function("guatu.idle()", timeout=60_000)
    out = []
    for x, y, z in plan:
        for move, pan in (("jump", 0), ("pan", 700)):
            moved = measure(page, arrivals, x, y, z, pan)
            drawn = page.evaluate("guatu.drawn('parcels').map(p => [p.id, p.use_status])")
            wrong = [fid for fid, status in drawn if status != "闲置"]
            if wrong:
                raise SystemExit(f"the filter is not kept at {x:.5f},{y:.5f} z{z}: {wrong[:5]} drawn")
            at, fid = None, None
            for fid, _ in drawn:
                at = page.evaluate(CLICK, fid)
                if at:
                    break
            opened = None
            if at:
                t0 = time.perf_counter()
                page.mouse.click(at["x"], at["y"])
                page.wait_for_function(
                    f"document.querySelector('.leaflet-popup-content td.guatu-v-use_status') && "
                    f"guatu.styleOf('parcels', {fid}).color === '#f59e0b'",
                    timeout=15_000,
                )
                opened = (time.perf_counter() - t0) * 1000
                page.evaluate("() => { window.bench.map.closePopup(); }")
            out.append({"move": move, "z": z, "ms": moved["ms"], "drawn": len(drawn), "popup_ms": opened})
    page.close()
    return out


def row(samples: list[dict[str, Any]], key: str) -> float:
    return statistics.median(s[key] for s in samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--views", type=int, default=12, help="views, zooms 15, 16, 17 in turn")
    parser.add_argument(
        "--only", default=",".join(CANDIDATES), help="candidates, comma-separated: " + ", ".join(CANDIDATES)
    )
    parser.add_argument("--check-views", type=int, default=18, help="views of the filtered page with a popup each")
    args = parser.parse_args()
    kinds = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = set(kinds) - set(CANDIDATES)
    if unknown:
        raise SystemExit(f"unknown candidates: {', '.join(sorted(unknown))}")
    url = bench_url()
    held = parcel_count(libpq_dsn(url))
    if held < 100_000:
        raise SystemExit(f"the bench county holds {held:,} parcels: run bench/tile_serving.py first")

    os.environ["GUATU_TILE_CACHE_SIZE"] = "0"
    SIGNED_IN["token"] = admin_token(owner_url())  # every page sends it: signed in as the bench's administrator
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
    results: dict[str, dict[tuple[str, int], list[dict[str, Any]]]] = {k: {} for k in kinds}
    checked: list[dict[str, Any]] = []
    try:
        with chromium() as browser:
            pages = {kind: open_candidate(browser, base, kind, js_style) for kind in kinds}
            renderer = pages[kinds[0]][0].evaluate(WEBGL)
            for x, y, z in [(x + 0.003, y, z) for x, y, z in plan[:3]] + plan:  # three warm-up views first
                for move, pan in (("jump", 0), ("pan", 700)):
                    for kind, (page, arrivals) in pages.items():
                        results[kind].setdefault((move, z), []).append(measure(page, arrivals, x, y, z, pan))
            for page, _ in pages.values():
                page.close()
            report(results, kinds, held, args.views, renderer)
            sys.stdout.flush()
            checked = check_page(browser, base, views(args.check_views)) if args.check_views else []
    finally:
        server.should_exit = True
    if checked:
        print(f"\nthe page as shipped, filtered to idle parcels, {args.check_views} views (a jump and a pan each):")
        print("every view drew only idle parcels; a click on one opened its own ledger, drawn highlighted")
        for move in ("jump", "pan"):
            for z in ZOOMS:
                mine = [c for c in checked if c["move"] == move and c["z"] == z]
                popups = [c["popup_ms"] for c in mine if c["popup_ms"] is not None]
                print(
                    f"{move} z{z}: drawn p50 {statistics.median(c['ms'] for c in mine):.0f} ms,"
                    f" parcels {statistics.median(c['drawn'] for c in mine):.0f},"
                    f" ledger opened p50 {statistics.median(popups) if popups else float('nan'):.0f} ms"
                    f" ({len(popups)}/{len(mine)} clicked)"
                )


WEBGL = """() => { const g = document.createElement('canvas').getContext('webgl2');
  const d = g && g.getExtension('WEBGL_debug_renderer_info');
  return g ? (d ? g.getParameter(d.UNMASKED_RENDERER_WEBGL) : 'WebGL2') : 'no WebGL'; }"""


def report(
    results: dict[str, dict[tuple[str, int], list[dict[str, Any]]]], kinds: list[str], held: int, n: int, gl: str
) -> None:
    """Print per zoom and move each candidate's p50 figures, then the ratios beside the goals."""
    print(f"map page over {held:,} parcels, {n} views (after 3 warm-up views), viewport 1400×900, headless Chromium")
    print(f"WebGL in this Chromium: {gl} (software-rendered: no GPU); 2-core VM shared with other work")
    print("total = move to every parcel drawn; draw = after the last tile (or the GeoJSON) arrived;")
    print("frames = animation frames during the move; long = main-thread long tasks (>50 ms) during it, ms")
    width = max(len(LABELS[k]) for k in kinds)
    for move in ("jump", "pan"):
        for z in ZOOMS:
            print(
                f"\n{move} z{z}  {'':<{width}}  {'total p50/p95 ms':>17}  {'draw p50':>8}  {'drawn':>6}"
                f"  {'fetched':>7}  {'frames':>6}  {'long ms':>7}"
            )
            for kind in kinds:
                samples = results[kind].get((move, z), [])[1:]  # the first: warm-up
                if not samples:
                    continue
                t50, t95 = p50_p95([s["ms"] for s in samples])
                drawn = [s["drawn"] for s in samples if s["drawn"] is not None]
                print(
                    f"         {LABELS[kind]:<{width}}  {t50:>7.0f} / {t95:<7.0f}  {row(samples, 'draw'):>8.0f}"
                    f"  {statistics.median(drawn) if drawn else float('nan'):>6.0f}  {row(samples, 'fetched'):>7.0f}"
                    f"  {row(samples, 'frames'):>6.0f}  {row(samples, 'longMs'):>7.0f}"
                )
    print(
        "\ngoals: first full draw of a z15–z17 view ≤ 300 ms after its tiles arrive (jump, p50);"
        " jump and pan faster than the GeoJSON page at every zoom (ratio GeoJSON p50 / candidate p50 > 1)"
    )
    for kind in kinds:
        if kind == "geojson":
            continue
        parts, met = [], True
        for z in ZOOMS:
            jump = results[kind].get(("jump", z), [])[1:]
            if not jump:
                continue
            draw = row(jump, "draw")
            met &= draw <= 300
            parts.append(f"z{z} draw {draw:.0f} ms")
            if kind == "page":
                goals.record("map", f"z{z} first full draw after its tiles", draw, 300, unit=" ms")
            if "geojson" in results:
                for move in ("jump", "pan"):
                    mine = results[kind][(move, z)][1:]
                    peer = results["geojson"][(move, z)][1:]
                    ratio = row(peer, "ms") / row(mine, "ms")
                    met &= ratio > 1
                    parts.append(f"{move} {ratio:.2f}×")
                    if kind == "page":
                        goals.record("map", f"z{z} {move}: GeoJSON page / this page", ratio, 1.0, lower_is_better=False)
        if not parts:
            continue
        print(f"{LABELS[kind]}: {', '.join(parts)}  {'goal met' if met else 'goal not met'}")


if __name__ == "__main__":
    main()
