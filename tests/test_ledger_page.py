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


MAP = "window[document.querySelector('.folium-map').id]"


def test_the_dock_under_the_map_follows_rows_and_shapes(demo_engine: Engine) -> None:
    with live_server(demo_engine) as base, chromium() as browser:
        sign_in_as(demo_engine, "planner")
        page = browser.new_page(viewport=WIDE)
        page.goto(base + "/")
        page.wait_for_function("window.guatu && guatu.idle()", timeout=20_000)
        for name in ("一户一区 Courtyard zones", "商铺 Shops", "公共收益"):
            box = page.locator(".leaflet-control-layers-overlays label", has_text=name).locator("input")
            if box.count():
                box.uncheck()
        page.click(".ledger-toggle")
        _loaded(page)
        assert "地块" in page.locator(".ledger-dock-title").inner_text()  # the filter panel's layer
        in_view = page.evaluate(f"{MAP}.getBounds().toBBoxString()")
        asked = page.evaluate("guatuLedger.current.query ? guatuLedger.current.query() : ''")
        assert "bbox=" in asked  # the rows in view
        rows = page.evaluate("guatuLedger.current.table.getData().map(function (d) { return [d.id, d.__bbox]; })")
        assert rows and in_view
        fid, bbox = rows[5]
        page.evaluate(f"guatuLedger.current.table.getRow({fid}).getElement().dataset.fid = '{fid}'")
        page.locator(
            f'.ledger-grid .tabulator-row[data-fid="{fid}"] .tabulator-cell[tabulator-field="use_status"]'
        ).click()
        page.wait_for_function(f"{MAP}.getContainer().dataset.framed === 'parcels/{fid}'", timeout=10_000)
        cx, cy = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
        assert page.evaluate(f"{MAP}.getBounds().contains([{cy}, {cx}])")
        assert page.evaluate(f"{MAP}.getZoom()") >= 16
        page.keyboard.press("Escape")  # the cell clicked opened its list: leave it
        page.wait_for_function("guatu.idle()", timeout=20_000)
        page.wait_for_timeout(500)
        page.screenshot(path=str(SCREENSHOTS / "ledger-dock.png"))
        # click another parcel on the map: its row is selected (its page loaded if need be)
        west, south, east, north = page.evaluate(
            f"(function (b) {{ return [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()]; }})({MAP}.getBounds())"
        )
        candidates = _db(
            demo_engine,
            "SELECT id, ST_X(p), ST_Y(p) FROM (SELECT id, ST_PointOnSurface(geom) p FROM parcels) s "
            "WHERE id <> :i AND ST_Intersects(p, ST_MakeEnvelope(:w, :s, :e, :n, 4490)) ORDER BY id",
            i=fid,
            w=west,
            s=south,
            e=east,
            n=north,
        )
        frame = page.locator(".folium-map").bounding_box()
        clear = (
            "(function (x, y) { var e = document.elementFromPoint(x, y);"
            " return !!e && !e.closest('.leaflet-control') && !!e.closest('.leaflet-pane'); })"
        )
        target = None
        for other, x, y in candidates:  # one whose inside is not under a panel or a courtyard zone
            point = page.evaluate(f"{MAP}.latLngToContainerPoint([{y}, {x}])")
            at = (frame["x"] + point["x"], frame["y"] + point["y"])
            if page.evaluate(f"{clear}({at[0]}, {at[1]})"):
                target = (other, at)
                break
        assert target is not None, candidates
        other, (px, py) = target
        page.mouse.click(px, py)
        page.wait_for_function(
            f"(guatuLedger.current.table.getSelectedData()[0] || {{}}).id === {other}", timeout=15_000
        )
        assert page.locator(".leaflet-popup-content").inner_text()
        # the map's filter narrows the dock; picking another layer in the filter panel switches it
        page.evaluate(f"{MAP}.closePopup()")
        done = int(page.evaluate("document.querySelector('.ledger-grid').dataset.loaded"))
        page.locator(".guatu-choice input[value='自用']").uncheck()
        _loaded(page, done + 1)
        assert "status=" in page.evaluate("guatuLedger.current.query()")
        statuses = page.evaluate("guatuLedger.current.table.getData().map(d => d.use_status)")
        assert statuses and "自用" not in statuses
        page.select_option("select.guatu-f-layer", "shops")
        page.wait_for_function("guatuLedger.current && guatuLedger.current.layer.id === 'shops'", timeout=15_000)
        assert "商铺" in page.locator(".ledger-dock-title").inner_text()
        phone = browser.new_page(viewport=PHONE)
        phone.goto(base + "/")
        phone.wait_for_function("window.guatu && guatu.idle()", timeout=20_000)
        phone.wait_for_timeout(300)
        phone.screenshot(path=str(SCREENSHOTS / "ledger-dock-phone-closed.png"))
        phone.click(".ledger-toggle")  # fails if a panel covers it
        _loaded(phone)
        dock = phone.locator(".ledger-dock").bounding_box()
        assert dock["width"] <= 390 and dock["height"] < 844
        phone.wait_for_timeout(300)
        phone.screenshot(path=str(SCREENSHOTS / "ledger-dock-phone.png"))
