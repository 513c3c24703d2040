"""按合同着色 in headless Chromium: a parcel in arrears turns red, one let out without a contract too."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from layers import contracts
from layers.access import Actor
from spatial.db import state
from tests.browser import chromium, live_server
from tests.conftest import demo_database
from tests.test_map_page import SCREENSHOTS, move_to

pytestmark = pytest.mark.browser

RED = "#dc2626"


@pytest.fixture(scope="module")
def web_engine() -> Iterator[Engine]:
    """Return an engine on a committed database holding the demo street and its demo contracts."""
    with demo_database("guatu_test_contracts_web") as engine:
        yield engine


@pytest.fixture(scope="module")
def base_url(web_engine: Engine) -> Iterator[str]:
    with live_server(web_engine) as url:
        yield url


def _lights(engine: Engine, layer_id: str) -> dict[str, dict]:
    with Session(engine) as session:
        state(session, Actor(None, "tests", "admin").settings())
        return contracts.asset_lights(session, contracts.let_layers()[0], dt.date.today())


def test_colour_by_contract_turns_a_parcel_in_arrears_red(base_url: str, web_engine: Engine) -> None:
    layer = contracts.let_layers()[0]
    lights = _lights(web_engine, layer.id)
    overdue = sorted(code for code, lit in lights.items() if "overdue" in lit["warnings"])
    green = sorted(code for code, lit in lights.items() if lit["light"] == "green")
    assert overdue and green  # the demo has both
    features = httpx.get(f"{base_url}/api/layers/{layer.id}/features", params={"limit": 5000}).json()["features"]
    by_code = {f["properties"][layer.key_field]: f for f in features}
    late, fine = by_code[overdue[0]], by_code[green[0]]
    from shapely.geometry import shape

    spot = shape(late["geometry"]).representative_point()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(base_url + "/")
        page.wait_for_function("window.guatu && guatu.idle()", timeout=15_000)
        move_to(page, spot.x, spot.y, 17)
        path = page.locator(f"path.guatu-{layer.id}-{late['id']}")
        path.first.wait_for(timeout=15_000)
        assert (path.first.get_attribute("fill") or "").lower() != RED  # coloured by its use status first
        page.check("input.guatu-contracts-check")
        page.wait_for_selector(".guatu-contracts[data-loaded]", timeout=15_000)
        page.wait_for_function(
            f"(document.querySelector('path.guatu-{layer.id}-{late['id']}').getAttribute('fill') || '')"
            f".toLowerCase() === '{RED}'",
            timeout=15_000,
        )
        page.screenshot(path=str(SCREENSHOTS / "contracts-map.png"))
        fine_path = page.locator(f"path.guatu-{layer.id}-{fine['id']}")
        if fine_path.count():  # drawn in this view too: green, not red
            assert (fine_path.first.get_attribute("fill") or "").lower() != RED
        page.uncheck("input.guatu-contracts-check")
        page.wait_for_function(
            f"(document.querySelector('path.guatu-{layer.id}-{late['id']}').getAttribute('fill') || '')"
            f".toLowerCase() !== '{RED}'",
            timeout=15_000,
        )


def test_on_a_phone_the_contract_switch_covers_not_the_status(base_url: str) -> None:
    # at 390 px the switch (bottom right) covered the end of the status lines (bottom left)
    boxes = """() => Array.from(document.querySelectorAll('.leaflet-control'))
        .filter(n => n.offsetParent !== null).map(n => {
            const r = n.getBoundingClientRect();
            return {name: n.className, x0: r.left, y0: r.top, x1: r.right, y1: r.bottom};
        })"""
    with chromium() as browser:
        for mobile in (True, False):  # a phone, and a narrow window on a desktop
            page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=mobile, has_touch=mobile)
            page.goto(base_url + "/")
            page.wait_for_function("window.guatu && guatu.idle()", timeout=15_000)
            for checked in (False, True):
                if checked:
                    page.check("input.guatu-contracts-check")
                    page.wait_for_selector(".guatu-contracts[data-loaded]", timeout=15_000)
                found = page.evaluate(boxes)
                switch = next(b for b in found if "guatu-contracts" in b["name"])
                assert switch["x1"] <= 390 and switch["x0"] >= 0
                for other in found:  # the open panel and legend cover each other on a phone already: not the switch's
                    if other is switch or "guatu-panel" in other["name"] or "guatu-legend" in other["name"]:
                        continue
                    apart = switch["x1"] <= other["x0"] or other["x1"] <= switch["x0"]
                    apart = apart or switch["y1"] <= other["y0"] or other["y1"] <= switch["y0"]
                    assert apart, (mobile, checked, switch, other)
            page.screenshot(path=str(SCREENSHOTS / f"contracts-map-390{'-mobile' if mobile else ''}.png"))
            page.close()
