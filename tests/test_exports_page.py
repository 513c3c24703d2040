"""Download menus in a browser: 其他格式 beside 导出 Excel on the ledger page and the map; files keep Chinese names.

The screenshots (docs/screenshots/exports-*.png with `make screenshots`) illustrate the planner's guide.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.accounts import PASSWORD
from tests.browser import chromium, live_server, sign_in_as
from tests.conftest import act_as_admin, demo_database

SCREENSHOTS = Path(os.environ.get("GUATU_SCREENSHOTS", Path(__file__).resolve().parent.parent / "out" / "screenshots"))
WIDE = {"width": 1440, "height": 900}


@pytest.fixture(scope="module")
def demo_engine() -> Iterator[Engine]:
    with demo_database("guatu_test_exports_page") as engine:
        yield engine


def test_the_ledger_page_offers_every_format_as_filtered(demo_engine: Engine, tmp_path: Path) -> None:
    sign_in_as(demo_engine, "planner")
    with demo_engine.begin() as conn:
        act_as_admin(conn)
        idle = conn.execute(text("SELECT count(*) FROM parcels WHERE use_status = '闲置'")).scalar_one()
    with live_server(demo_engine) as base, chromium() as browser:
        # signed in as a person is, by the session cookie: the browser's downloads carry it (not a test's header)
        page = browser.new_page(viewport=WIDE, accept_downloads=True, signed_in=False)
        page.goto(f"{base}/login?next=/ledger/parcels")
        page.fill("#guatu-username", "planner")
        page.fill("#guatu-password", PASSWORD)
        page.click("#guatu-login-submit")
        page.wait_for_url(f"{base}/ledger/parcels")
        page.wait_for_function("(document.querySelector('.ledger-grid') || {dataset: {}}).dataset.loaded >= 1")
        page.select_option(".ledger-f-status", "闲置")
        page.wait_for_function("(document.querySelector('.ledger-grid') || {dataset: {}}).dataset.loaded >= 2")
        page.locator(".ledger-formats > summary").click()
        labels = page.locator(".ledger-format").all_inner_texts()
        assert [x.split(" ")[0] for x in labels[:5]] == ["GeoJSON", "CSV", "KML", "GeoPackage", "Shapefile"]
        assert "QGIS" in labels[-1]
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "exports-ledger-menu.png"))
        with page.expect_download() as got:
            page.locator(".ledger-format-geojson").click()
        download = got.value
        assert download.suggested_filename == f"地块-{dt.date.today().isoformat()}.geojson"
        saved = tmp_path / "idle.geojson"
        download.save_as(saved)
        assert len(json.loads(saved.read_text())["features"]) == idle  # as filtered on the page
        with page.expect_download() as got:
            page.locator(".ledger-format-shp-zip-gbk").click()
        download = got.value
        assert download.suggested_filename.endswith(".shp.zip")
        download.save_as(tmp_path / "idle.zip")
        with zipfile.ZipFile(tmp_path / "idle.zip") as zf:
            assert zf.read("parcels.cpg").decode().strip() == "GBK"
        with page.expect_download() as got:
            page.locator(".ledger-format-qgis").click()
        download = got.value
        download.save_as(tmp_path / "p.qgz")
        with zipfile.ZipFile(io.BytesIO((tmp_path / "p.qgz").read_bytes())) as zf:
            assert zf.namelist() == ["guatu.qgs"]


def _in_sight(page: Any) -> None:
    """Assert the open formats menu lies in the window and nothing covers its rows."""
    box = page.locator(".guatu-formats-list").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= page.viewport_size["width"], box
    covered = page.locator(".guatu-formats-row").evaluate_all(
        """(rows) => rows.filter((row) => {
            const r = row.getBoundingClientRect();
            const top = document.elementFromPoint(r.left + 4, r.top + r.height / 2);
            return !top || !row.contains(top);
        }).length"""
    )
    assert covered == 0


def test_the_map_offers_each_shown_layer_in_the_view(demo_engine: Engine) -> None:
    sign_in_as(demo_engine, "planner")
    with live_server(demo_engine) as base, chromium() as browser:
        page = browser.new_page(viewport=WIDE)
        page.goto(base + "/")
        page.wait_for_function("window.guatu && guatu.idle()", timeout=15_000)
        title = page.locator(".guatu-title").bounding_box()
        for corner in (".leaflet-control-layers", ".guatu-user"):  # the title's links wrap short of the right column
            other = page.locator(corner).first.bounding_box()
            assert other is not None and title is not None
            assert title["x"] + title["width"] <= other["x"] or other["y"] + other["height"] <= title["y"], corner
        stacked = page.locator(".leaflet-top.leaflet-left > .leaflet-control").evaluate_all(
            """(controls) => controls.filter((c) => c.offsetParent).map((c) => {
                const r = c.getBoundingClientRect(); return [c.className, r.top, r.bottom]; })"""
        )
        for (upper, _, bottom), (lower, top, _) in zip(stacked, stacked[1:], strict=False):
            assert bottom <= top + 1, (upper, lower, stacked)  # the left column's boxes do not cover one another
        panel = page.locator(".guatu-panel").bounding_box()
        assert panel is not None and stacked[-1][2] <= panel["y"], (stacked, panel)  # nor the panel under them
        page.locator(".guatu-formats > summary").click()
        rows = page.locator(".guatu-formats-row").all_inner_texts()
        assert rows and any(row.startswith("地块") for row in rows)
        _in_sight(page)
        hrefs = page.locator(".guatu-format").evaluate_all("(links) => links.map((a) => a.getAttribute('href'))")
        assert all("bbox=" in h and "/export." in h for h in hrefs)
        assert any(h.startswith("/api/layers/parcels/export.gpkg?") for h in hrefs)
        page.screenshot(path=str(SCREENSHOTS / "exports-map-menu.png"))


def test_on_a_phone_the_map_menu_opens_on_the_screen_and_on_top(demo_engine: Engine) -> None:
    sign_in_as(demo_engine, "planner")
    with live_server(demo_engine) as base, chromium() as browser:
        page = browser.new_page(viewport={"width": 390, "height": 844})
        page.goto(base + "/")
        page.wait_for_function("window.guatu && guatu.idle()", timeout=15_000)
        page.locator(".guatu-formats > summary").click()
        box = page.locator(".guatu-formats-list").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, box  # opened off the left edge
        hidden = page.locator(".guatu-format").evaluate_all(
            """(links) => links.filter((a) => {
                const r = a.getBoundingClientRect();
                const top = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
                return !(top && (top === a || a.contains(top)));
            }).map((a) => a.getAttribute('href'))"""
        )
        assert hidden == []  # none under another control (the edit box was drawn over the list)
        page.screenshot(path=str(SCREENSHOTS / "exports-map-menu-phone.png"))
