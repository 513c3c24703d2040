"""The ledger in headless Chromium: its own page (sort, pages, inline edit, column choice) and docked under the map."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.browser import chromium, live_server, sign_in_as
from tests.conftest import act_as_admin, demo_database

pytestmark = pytest.mark.browser
SCREENSHOTS = Path(os.environ.get("GUATU_SCREENSHOTS", Path(__file__).resolve().parent.parent / "out" / "screenshots"))
WIDE = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
ROWS = ".ledger-grid .tabulator-row"


@pytest.fixture(scope="module")
def demo_engine() -> Iterator[Engine]:
    with demo_database("guatu_test_ledger_page") as engine:
        yield engine


def _loaded(page: Any, times: int = 1) -> None:
    """Wait until the grid has loaded TIMES pages since the page opened."""
    page.wait_for_function(
        f"(document.querySelector('.ledger-grid') || {{dataset: {{}}}}).dataset.loaded >= {times}", timeout=30_000
    )


def _column(page: Any, field: str) -> list[str]:
    return list(page.locator(f'{ROWS} .tabulator-cell[tabulator-field="{field}"]').all_inner_texts())


def _db(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.begin() as conn:
        act_as_admin(conn)
        return conn.execute(text(sql), params).all()


def test_the_ledger_page_sorts_and_pages_on_the_server(demo_engine: Engine) -> None:
    sign_in_as(demo_engine, "planner")
    total = _db(demo_engine, "SELECT count(*) FROM parcels")[0][0]
    requests: list[str] = []
    with live_server(demo_engine) as base, chromium() as browser:
        page = browser.new_page(viewport=WIDE)
        page.on("request", lambda r: requests.append(r.url))
        page.goto(base + "/ledger/parcels")
        _loaded(page)
        assert page.locator(ROWS).count() == 50
        assert f"共 {total} " in page.locator(".ledger-count").inner_text()
        headers = page.locator(".tabulator-col-title").all_inner_texts()
        assert "地块编码 Parcel code" in headers and "面积(亩) Area mu" in headers
        mu = _column(page, "area_mu")
        assert mu and all(len(v.split(".")[1]) == 2 for v in mu)  # 亩 to two decimals
        header = page.locator('.tabulator-col[tabulator-field="area_mu"]')
        header.dispatch_event("click")  # a click as a user's (Playwright's own would scroll the header alone)
        _loaded(page, 2)
        header.dispatch_event("click")
        _loaded(page, 3)
        first = [float(v) for v in _column(page, "area_mu")]
        largest = _db(demo_engine, "SELECT max(area_m2) * 3 / 2000 FROM parcels")[0][0]
        assert first == sorted(first, reverse=True) and first[0] == pytest.approx(largest, abs=0.006)
        assert any("sort=area_mu" in u and "dir=desc" in u for u in requests)
        page.locator(".tabulator-page[data-page=next]").click()
        _loaded(page, 4)
        second = [float(v) for v in _column(page, "area_mu")]
        assert second and max(second) <= min(first)
        assert any("page=2" in u and "/rows?" in u for u in requests)
        row = page.locator(ROWS).nth(2)
        code = row.locator('.tabulator-cell[tabulator-field="code"]').inner_text()
        row.locator('.tabulator-cell[tabulator-field="code"]').click()
        fid = _db(demo_engine, "SELECT id FROM parcels WHERE code = :c", c=code)[0][0]
        page.wait_for_function(f"document.querySelector('.folium-map').dataset.framed === 'parcels/{fid}'")
        assert page.locator(".folium-map path.leaflet-interactive, .folium-map path").count() >= 1
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.wait_for_timeout(300)
        page.screenshot(path=str(SCREENSHOTS / "ledger-page.png"))
        page.select_option(".ledger-f-status", "闲置")
        _loaded(page, 5)
        idle = _db(demo_engine, "SELECT count(*) FROM parcels WHERE use_status = '闲置'")[0][0]
        assert f"共 {idle} " in page.locator(".ledger-count").inner_text()
        assert set(_column(page, "use_status")) == {"闲置"}
        assert "status=%E9%97%B2%E7%BD%AE" in page.locator(".ledger-export").get_attribute("href")
        phone = browser.new_page(viewport=PHONE)
        phone.goto(base + "/ledger/zones")
        _loaded(phone)
        phone.screenshot(path=str(SCREENSHOTS / "ledger-page-phone.png"))
        assert phone.locator(".ledger-panel").bounding_box()["width"] <= 390
    assert [u for u in requests if not u.startswith(base) and not u.startswith("data:")] == []


def _edit(page: Any, fid: int, field: str, value: str) -> Any:
    """Type VALUE into the FIELD cell of row FID (on the page shown) and press Enter; return the cell."""
    cell = page.locator(f'{ROWS}[data-fid="{fid}"] .tabulator-cell[tabulator-field="{field}"]')
    cell.click()
    editor = cell.locator("input")
    editor.fill(value)
    editor.press("Enter")
    return cell


def test_inline_edit_saves_and_a_concurrent_change_is_shown(demo_engine: Engine) -> None:
    with live_server(demo_engine) as base, chromium() as browser:
        sign_in_as(demo_engine, "planner")  # after the server has signed pages in as its administrator
        page = browser.new_page(viewport=WIDE)
        page.goto(base + "/ledger/parcels")
        _loaded(page)
        page.evaluate(
            "guatuLedger.current.table.getRows().forEach(function (r) {"
            " r.getElement().dataset.fid = String(r.getData().id); })"
        )
        ids = page.evaluate("guatuLedger.current.table.getData().map(function (d) { return d.id; })")
        first, second, third = ids[3], ids[4], ids[5]
        cell = _edit(page, first, "name", "台账改名一")
        page.wait_for_function(
            f"document.querySelector('{ROWS}[data-fid=\"{first}\"] .ledger-cell-saved') !== null", timeout=10_000
        )
        name, version = _db(demo_engine, "SELECT name, version FROM parcels WHERE id = :i", i=first)[0]
        assert name == "台账改名一" and version >= 2
        assert page.evaluate(f"guatuLedger.current.table.getRow({first}).getData().__version") == version
        # someone else changes the next row after the page read it: the save answers 412
        _db(demo_engine, "UPDATE parcels SET name = '别人改的' WHERE id = :i RETURNING id", i=second)
        cell = _edit(page, second, "name", "我的改名")
        page.wait_for_selector(".ledger-notice:not([hidden]) .ledger-retry", timeout=10_000)
        assert "别人改的" in page.locator(".ledger-notice").inner_text()
        assert "ledger-cell-conflict" in (cell.get_attribute("class") or "")
        assert _db(demo_engine, "SELECT name FROM parcels WHERE id = :i", i=second)[0][0] == "别人改的"
        page.click(".ledger-retry")
        page.wait_for_function(
            f"document.querySelector('{ROWS}[data-fid=\"{second}\"] .ledger-cell-saved') !== null", timeout=10_000
        )
        assert _db(demo_engine, "SELECT name FROM parcels WHERE id = :i", i=second)[0][0] == "我的改名"
        # a value the rules refuse: the message on the cell, the value back as it was
        before = _db(demo_engine, "SELECT code FROM parcels WHERE id = :i", i=third)[0][0]
        cell = _edit(page, third, "code", "not-a-code")
        page.wait_for_selector(".ledger-notice:not([hidden])", timeout=10_000)
        assert "编码" in page.locator(".ledger-notice").inner_text()
        page.wait_for_function(
            f"document.querySelector('{ROWS}[data-fid=\"{third}\"] .ledger-cell-error') !== null", timeout=10_000
        )
        assert cell.inner_text() == before
        assert _db(demo_engine, "SELECT code FROM parcels WHERE id = :i", i=third)[0][0] == before
        page.screenshot(path=str(SCREENSHOTS / "ledger-edit-refused.png"))


def test_a_viewer_edits_nothing_and_column_choice_survives_a_reload(demo_engine: Engine) -> None:
    with live_server(demo_engine) as base, chromium() as browser:
        sign_in_as(demo_engine, "viewer")  # after the server has signed pages in as its administrator
        page = browser.new_page(viewport=WIDE)
        page.goto(base + "/ledger/zones")
        _loaded(page)
        assert page.locator(".ledger-editable").count() == 0
        heads = _column(page, "household_head")
        assert heads and all("*" in h for h in heads)
        sortable = page.evaluate("guatuLedger.current.table.getColumn('household_head').getDefinition().headerSort")
        assert sortable is False
        page.click(".ledger-columns-button")
        page.uncheck(".ledger-chooser input[data-field=household_head]")
        page.wait_for_function("document.querySelector('.ledger-body').dataset.saved === '1'", timeout=10_000)
        with demo_engine.begin() as conn:  # each user reads only their own preferences: as the viewer
            conn.execute(
                text("SELECT set_config('guatu.role', 'viewer', true), set_config('guatu.user', 'viewer', true)")
            )
            stored = conn.execute(text("SELECT value FROM user_preferences WHERE key = 'ledger.columns.zones'")).all()
        assert stored and "household_head" in stored[0][0]["hidden"]
        assert _db(demo_engine, "SELECT value FROM user_preferences") == []  # not even an administrator sees them
        page.reload()
        _loaded(page)
        assert page.evaluate("guatuLedger.current.table.getColumn('household_head').isVisible()") is False
        assert page.evaluate("guatuLedger.current.table.getColumn('code').isVisible()") is True
        assert page.locator('.tabulator-col[tabulator-field="household_head"]').is_hidden()
