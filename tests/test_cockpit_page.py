"""The leader's screen in headless Chromium: the figures the API gives, nothing overlapping on a wall screen."""

from __future__ import annotations

import os
from collections.abc import Iterator
from itertools import combinations
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine

from tests.browser import chromium, live_server
from tests.conftest import demo_database

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(os.environ.get("GUATU_SCREENSHOTS", Path(__file__).resolve().parent.parent / "out" / "screenshots"))

BOXES = """() => Array.from(document.querySelectorAll('.gc-head, .gc-map, .gc-card')).map(n => {
    const r = n.getBoundingClientRect();
    const body = n.querySelector('.gc-card-body');
    return {name: n.className, x0: r.left, y0: r.top, x1: r.right, y1: r.bottom,
            clipped: body ? body.scrollHeight > body.clientHeight + 1 || body.scrollWidth > body.clientWidth + 1
                          : false};
})"""


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    engine: Engine
    with demo_database("guatu_test_cockpit") as engine, live_server(engine) as url:
        yield url


def test_the_cockpit_is_a_leaders_screen_at_wall_sizes(base_url: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    figures = httpx.get(f"{base_url}/api/cockpit").json()
    with chromium() as browser:
        for width, height in ((1920, 1080), (3840, 2160)):
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(base_url + "/cockpit")
            page.wait_for_selector(".gc-shell[data-loaded]", timeout=20_000)
            page.wait_for_selector("path.guatu-grids", timeout=20_000)  # the map is drawn in its cell
            boxes = page.evaluate(BOXES)
            assert len(boxes) >= 6
            for box in boxes:  # inside the screen, nothing cut off inside a card
                assert box["x0"] >= 0 and box["y0"] >= 0, (width, box)
                assert box["x1"] <= width + 0.5 and box["y1"] <= height + 0.5, (width, box)
                assert not box["clipped"], (width, box)
            for a, b in combinations(boxes, 2):
                apart = a["x1"] <= b["x0"] or b["x1"] <= a["x0"] or a["y1"] <= b["y0"] or b["y1"] <= a["y0"]
                assert apart, (width, a["name"], b["name"])
            # no working panels: no filter, no layer switcher, no editing tools
            for working in (".guatu-panel", ".leaflet-control-layers", ".leaflet-pm-toolbar"):
                assert page.locator(working).count() == 0, working
            shown = page.locator("[data-figure=revitalised_this_year]").inner_text()
            assert shown == str(figures["results"]["this_year"])
            idle = f"{100 * figures['assets']['idle_rate']:.1f}%"
            assert page.locator("[data-figure=idle_rate]").inner_text() == idle
            first = page.locator("tr.gc-rank-row").first
            assert first.get_attribute("data-code") == figures["ranking"]["rows"][0]["code"]
            assert page.locator("tr.gc-rank-row").count() >= 3
            for layer in figures["assets"]["layers"]:
                assert str(layer["count"]) in page.locator(f".gc-line[data-layer={layer['layer']}]").inner_text()
            assert page.locator(".gc-trend[data-trend=revitalised] rect").count() == 12
            page.screenshot(path=str(SCREENSHOTS / f"cockpit-{width}.png"))
            page.close()


def test_the_cockpit_reads_on_a_phone(base_url: str) -> None:
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
        page.goto(base_url + "/cockpit")
        page.wait_for_selector(".gc-shell[data-loaded]", timeout=20_000)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390  # one column: nothing runs off the side
        boxes = page.evaluate(BOXES)
        for a, b in combinations(boxes, 2):
            apart = a["x1"] <= b["x0"] or b["x1"] <= a["x0"] or a["y1"] <= b["y0"] or b["y1"] <= a["y0"]
            assert apart, (a["name"], b["name"])
        page.screenshot(path=str(SCREENSHOTS / "cockpit-phone.png"), full_page=True)


def test_every_big_figure_reads_in_full_on_a_laptop(base_url: str) -> None:
    # 1440×900 (a laptop, a meeting-room projector): the rent figures were cut to “51.…” by the ellipsis
    cut = """() => Array.from(document.querySelectorAll('.gc-big-value, .gc-big-label'))
        .filter(n => n.scrollWidth > n.clientWidth + 1).map(n => n.textContent)"""
    with chromium() as browser:
        for width, height in ((1440, 900), (1280, 800), (390, 844)):
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(base_url + "/cockpit")
            page.wait_for_selector(".gc-shell[data-loaded]", timeout=20_000)
            assert page.locator("[data-figure=receivable]").inner_text().strip()
            assert page.evaluate(cut) == [], width
            page.screenshot(path=str(SCREENSHOTS / f"cockpit-{width}.png"))
            page.close()
