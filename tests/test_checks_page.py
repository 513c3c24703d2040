"""The checks page in headless Chromium: pick a community, read its findings, click one, the map zooms to it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from layers import demo
from tests.browser import chromium, live_server
from tests.conftest import act_as_admin, demo_database

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
        assert any("/api/checks/stream" in url for url in requests)  # the check streamed its progress
        assert page.locator("progress.guatu-checks-progress").is_hidden()  # the bar is gone once it is done
        assert page.locator("button[name=stop]").is_hidden() and page.locator("button[name=check]").is_enabled()
        page.wait_for_timeout(300)  # the page fits the map to the findings: let that zoom end first
        page.wait_for_function("!guatuChecks.map._animatingZoom", timeout=10_000)
        zoom_before = page.evaluate("guatuChecks.map.getZoom()")
        finding.click()
        page.wait_for_function(f"guatuChecks.map.getZoom() > {zoom_before}", timeout=10_000)
        x, y = gap["centroid"]
        assert page.evaluate(f"guatuChecks.map.getBounds().contains([{y}, {x}])")
        assert page.locator(".guatu-finding.guatu-selected").count() == 1
        page.wait_for_function("!guatuChecks.map._animatingZoom", timeout=10_000)
        page.wait_for_timeout(300)
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
            act_as_admin(conn)
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
            label = page.locator(".guatu-unit-label", has_text=code)  # the permanent label: name and code
            assert xss in label.inner_text() and label.locator("img").count() == 0
            point = page.evaluate(f"guatuChecks.map.latLngToContainerPoint([{y}, {x}])")
            box = page.locator(".leaflet-container").bounding_box()
            assert box is not None
            page.mouse.move(box["x"] + point["x"], box["y"] + point["y"])
            tooltip = page.locator(".leaflet-tooltip:not(.guatu-unit-label):not(.guatu-involved-label)", has_text=code)
            tooltip.wait_for(timeout=5_000)
            assert xss in tooltip.inner_text() and tooltip.locator("img").count() == 0
    assert dialogs == []


def test_findings_are_drawn_among_the_units_and_the_features_they_name_and_link_to_the_map(
    demo_engine: Engine,
) -> None:
    """A community's findings come with its grids (coded labels) and the zone named; a link opens the map there."""
    from sqlalchemy import text

    defect = next(d for d in demo.DEFECTS if d["kind"] == "zone_outside_grid")
    community = defect["community_code"]
    with demo_engine.connect() as conn:
        act_as_admin(conn)
        grids = list(conn.execute(text("SELECT code FROM grids WHERE community_code = :c"), {"c": community}).scalars())
    zone = next(c for c in defect["codes"] if c not in grids)
    requests: list[str] = []
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with live_server(demo_engine) as base, chromium() as browser:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.on("request", lambda request: requests.append(request.url))
        page.goto(base + "/checks")
        page.select_option("select[name=scope]", community)
        page.click("button[name=check]")
        page.wait_for_selector(".guatu-finding", timeout=20_000)
        page.wait_for_selector(".guatu-involved-label", timeout=10_000)
        assert page.locator("path.guatu-unit-grid").count() == len(grids)
        assert page.locator("path.guatu-unit-community.guatu-frame").count() == 1
        labels = page.locator(".guatu-unit-label").all_inner_texts()
        assert sorted(next(c for c in grids if c in t) for t in labels) == sorted(grids)  # every grid, by its code
        assert page.locator("path.guatu-involved-zones").count() == 1
        assert zone[len(community) :] in page.locator(".guatu-involved-label").inner_text()
        page.wait_for_function("!guatuChecks.map._animatingZoom", timeout=10_000)
        page.screenshot(path=str(SCREENSHOTS / "checks-context.png"))
        row = page.locator(".guatu-finding", has_text=zone)
        row.click()
        page.wait_for_selector(".guatu-near-label", timeout=10_000)  # zoomed in: the grids around are named
        near = page.locator(".guatu-near-label").all_inner_texts()
        assert {c for c in defect["codes"] if c in grids} <= {c for c in grids for t in near if c in t}, near
        page.screenshot(path=str(SCREENSHOTS / "checks-finding.png"))
        link = row.locator("a.guatu-map-link")
        zoom, lat, lon = (float(v) for v in (link.get_attribute("href") or "").removeprefix("/#").split("/"))
        x, y = defect["centroid"]
        assert abs(lat - y) < 0.001 and abs(lon - x) < 0.001 and 15 <= zoom <= 18
        link.click()
        page.wait_for_function("location.pathname === '/' && location.hash.length > 1", timeout=10_000)
        page.wait_for_function("window.L && Object.values(window).some(v => v instanceof L.Map)", timeout=10_000)
        where = page.evaluate(
            "(() => { const m = Object.values(window).find(v => v instanceof L.Map); "
            f"return [m.getZoom(), m.getBounds().contains([{y}, {x}]), m.getCenter().lat, m.getCenter().lng]; }})()"
        )
        assert where[0] == zoom and where[1], where  # the map page opens at the finding
        assert abs(where[2] - lat) < 1e-4 and abs(where[3] - lon) < 1e-4

        phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
        phone.goto(base + "/checks")
        phone.select_option("select[name=scope]", community)
        phone.click("button[name=check]")
        phone.wait_for_selector(".guatu-involved-label", timeout=20_000)
        phone.wait_for_function("!guatuChecks.map._animatingZoom", timeout=10_000)
        panel = phone.locator(".guatu-checks").bounding_box()
        assert panel is not None and panel["y"] + panel["height"] < 844 * 0.6  # the map stays in view below it
        centre = phone.evaluate(f"guatuChecks.map.latLngToContainerPoint([{y}, {x}])")
        assert panel["y"] + panel["height"] < centre["y"] < 844  # the finding is drawn below the panel
        short = sorted(phone.locator(".guatu-unit-label").all_inner_texts())
        assert short == sorted("…" + c[len(community) :] for c in grids)  # a phone labels grids by their sequence
        phone.screenshot(path=str(SCREENSHOTS / "checks-phone.png"))
    assert [url for url in requests if not url.startswith(base) and not url.startswith("data:")] == []
