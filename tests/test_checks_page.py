"""The checks page in headless Chromium: pick a community, read its findings, click one, the map zooms to it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from layers import demo
from tests.browser import chromium, live_server
from tests.conftest import demo_database

pytestmark = pytest.mark.browser
SCREENSHOTS = Path(os.environ.get("GUATU_SCREENSHOTS", Path(__file__).resolve().parent.parent / "out" / "screenshots"))


@pytest.fixture(scope="module")
def demo_engine() -> Iterator[Engine]:
    with demo_database("guatu_test_checks_page") as engine:
        yield engine


def test_a_grid_manager_sees_the_gap_in_the_community_and_zooms_to_it(demo_engine: Engine) -> None:
    gap = next(d for d in demo.DEFECTS if d["kind"] == "gap")
    requests: list[str] = []
    with live_server(demo_engine) as base, chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("request", lambda request: requests.append(request.url))
        page.goto(base + "/checks")
        page.select_option("select[name=scope]", gap["community_code"])
        page.click("button[name=check]")
        page.wait_for_selector(".guatu-finding", timeout=20_000)
        status = page.locator(".guatu-upload-status").inner_text()
        assert "错误 1" in status and "警告 0" in status, status
        finding = page.locator(".guatu-finding")
        assert finding.count() == 1
        text = finding.inner_text()
        assert "缝隙" in text and gap["codes"][0] in text
        assert page.locator("path.guatu-found-gap").count() == 1  # drawn on the map
        page.wait_for_timeout(300)  # the page fits the map to the findings: let that zoom end first
        page.wait_for_function("!guatuChecks.map._animatingZoom", timeout=10_000)
        zoom_before = page.evaluate("guatuChecks.map.getZoom()")
        finding.click()
        page.wait_for_function(f"guatuChecks.map.getZoom() > {zoom_before}", timeout=10_000)
        x, y = gap["centroid"]
        assert page.evaluate(f"guatuChecks.map.getBounds().contains([{y}, {x}])")
        assert page.locator(".guatu-finding.guatu-selected").count() == 1
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "checks-gap.png"))
    assert [url for url in requests if not url.startswith(base) and not url.startswith("data:")] == []


def test_names_in_tooltips_stay_text() -> None:
    """A unit named like markup shows that text in its tooltip: nothing is parsed, nothing runs."""
    from sqlalchemy import text

    xss = "<img src=x onerror=alert(1)>"
    gap = next(d for d in demo.DEFECTS if d["kind"] == "gap")
    dialogs: list[str] = []
    with demo_database("guatu_test_checks_xss") as engine:
        with engine.begin() as conn:
            code, x, y = conn.execute(
                text(
                    "SELECT code, ST_X(ST_PointOnSurface(geom)), ST_Y(ST_PointOnSurface(geom)) FROM grids "
                    "WHERE community_code = :c ORDER BY code LIMIT 1"
                ),
                {"c": gap["community_code"]},
            ).one()
            conn.execute(text("UPDATE grids SET name = :n WHERE code = :code"), {"n": xss, "code": code})
        with live_server(engine) as base, chromium() as browser:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.goto(base + "/checks")
            page.select_option("select[name=scope]", gap["community_code"])
            page.click("button[name=check]")
            page.wait_for_selector(".guatu-finding", timeout=20_000)
            page.wait_for_selector("path.guatu-frame", timeout=10_000)
            point = page.evaluate(f"guatuChecks.map.latLngToContainerPoint([{y}, {x}])")
            box = page.locator(".leaflet-container").bounding_box()
            assert box is not None
            page.mouse.move(box["x"] + point["x"], box["y"] + point["y"])
            tooltip = page.locator(".leaflet-tooltip", has_text=code)
            tooltip.wait_for(timeout=5_000)
            assert xss in tooltip.inner_text() and tooltip.locator("img").count() == 0
    assert dialogs == []
