"""Where the front-end libraries are: installed from npm at set-up, served by the app."""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
VENDOR_DIR = STATIC_DIR / "vendor"
STATIC_URL = "/static"

LEAFLET_JS = f"{STATIC_URL}/vendor/leaflet/leaflet.js"
LEAFLET_CSS = f"{STATIC_URL}/vendor/leaflet/leaflet.css"
VECTORGRID_JS = f"{STATIC_URL}/vendor/vectorgrid/Leaflet.VectorGrid.bundled.min.js"
GEOMAN_JS = f"{STATIC_URL}/vendor/geoman/leaflet-geoman.min.js"
GEOMAN_CSS = f"{STATIC_URL}/vendor/geoman/leaflet-geoman.css"
TABULATOR_JS = f"{STATIC_URL}/vendor/tabulator/tabulator.min.js"
TABULATOR_CSS = f"{STATIC_URL}/vendor/tabulator/tabulator.min.css"
SWAGGER_JS = f"{STATIC_URL}/vendor/swagger-ui/swagger-ui-bundle.js"
SWAGGER_CSS = f"{STATIC_URL}/vendor/swagger-ui/swagger-ui.css"
GUATU_JS = f"{STATIC_URL}/guatu/map.js"
DOM_JS = f"{STATIC_URL}/guatu/dom.js"
GUATU_CSS = f"{STATIC_URL}/guatu/map.css"
FAVICON = f"{STATIC_URL}/guatu/favicon.svg"
UPLOAD_JS = f"{STATIC_URL}/guatu/upload.js"
CHECKS_JS = f"{STATIC_URL}/guatu/checks.js"
EDIT_JS = f"{STATIC_URL}/guatu/edit.js"
EDIT_CSS = f"{STATIC_URL}/guatu/edit.css"
LOGIN_JS = f"{STATIC_URL}/guatu/login.js"
DOCS_JS = f"{STATIC_URL}/guatu/docs.js"
COCKPIT_JS = f"{STATIC_URL}/guatu/cockpit.js"
COCKPIT_CSS = f"{STATIC_URL}/guatu/cockpit.css"
CONTRACTS_JS = f"{STATIC_URL}/guatu/contracts.js"
CONTRACTS_CSS = f"{STATIC_URL}/guatu/contracts.css"
LEDGER_JS = f"{STATIC_URL}/guatu/ledger.js"
LEDGER_CSS = f"{STATIC_URL}/guatu/ledger.css"

REQUIRED = (
    "leaflet/leaflet.js",
    "leaflet/leaflet.css",
    "vectorgrid/Leaflet.VectorGrid.bundled.min.js",
    "geoman/leaflet-geoman.min.js",
    "geoman/leaflet-geoman.css",
    "swagger-ui/swagger-ui-bundle.js",
    "swagger-ui/swagger-ui.css",
    "tabulator/tabulator.min.js",
    "tabulator/tabulator.min.css",
)

BENCH_ONLY = (
    "maplibre/maplibre-gl-csp.js",
    "maplibre/maplibre-gl-csp-worker.js",
    "maplibre/leaflet-maplibre-gl.js",
    "protomaps/protomaps-leaflet.js",
)
"""Installed with the others but loaded only by bench/map_page.py (the renderers measured against
the page's, issue 15): the app's pages never ask for them, so none is required."""


def missing_assets() -> list[str]:
    """Return the vendored files that set-up has not installed yet."""
    return [name for name in REQUIRED if not (VENDOR_DIR / name).exists()]
