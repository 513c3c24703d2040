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
        zoom_before = page.evaluate("guatuChecks.map.getZoom()")
        finding.click()
        page.wait_for_function(f"guatuChecks.map.getZoom() > {zoom_before}", timeout=10_000)
        x, y = gap["centroid"]
        assert page.evaluate(f"guatuChecks.map.getBounds().contains([{y}, {x}])")
        assert page.locator(".guatu-finding.guatu-selected").count() == 1
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "checks-gap.png"))
    assert [url for url in requests if not url.startswith(base) and not url.startswith("data:")] == []
