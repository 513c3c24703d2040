"""The problem ledger in headless Chromium: a grid worker's phone report survives a dropped connection and
arrives exactly once."""

from __future__ import annotations

import datetime as dt
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from api.settings import ApiSettings
from layers import demo
from spatial.db import state
from tests.accounts import GRID
from tests.browser import chromium, live_server, sign_in_as
from tests.conftest import ADMIN, demo_database

pytestmark = pytest.mark.browser
SCREENSHOTS = Path(os.environ.get("GUATU_SCREENSHOTS", Path(__file__).resolve().parent.parent / "out" / "screenshots"))


def png(width: int = 40, height: int = 30) -> bytes:
    """Return a real PNG of WIDTH × HEIGHT (a photo stand-in)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(
        b"\x00" + b"".join(bytes([(x * 6) % 256, (y * 8) % 256, 90]) for x in range(width)) for y in range(height)
    )
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def demo_engine() -> Iterator[Engine]:
    with demo_database("guatu_test_problems_page") as engine:
        yield engine


def _inside(engine: Engine, grid: str) -> tuple[float, float]:
    """Return a point inside GRID of the demo street."""
    with Session(engine) as session:
        state(session, ADMIN.settings())
        row = session.execute(
            text("SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) AS p FROM grids WHERE code = :g) s"),
            {"g": grid},
        ).first()
    assert row is not None, f"the demo street has no grid {grid}"
    return float(row[0]), float(row[1])


def _count(engine: Engine, description: str) -> int:
    with Session(engine) as session:
        state(session, ADMIN.settings())
        return int(
            session.execute(text("SELECT count(*) FROM problems WHERE description = :d"), {"d": description}).scalar()
            or 0
        )


def test_a_phone_report_with_photo_and_location_survives_a_dropped_connection(
    demo_engine: Engine, tmp_path: Any
) -> None:
    lon, lat = _inside(demo_engine, GRID)
    photo = tmp_path / "photo.png"
    photo.write_bytes(png())
    description = "路口垃圾堆放，390 宽手机上报"
    creates: list[str] = []
    with live_server(demo_engine) as base, chromium() as browser:
        sign_in_as(demo_engine, "gridman")
        page = browser.new_page(  # watched: a CSP violation fails the test
            viewport={"width": 390, "height": 844},
            geolocation={"longitude": lon, "latitude": lat, "accuracy": 8},
            permissions=["geolocation"],
        )
        context = page.context
        page.goto(base + "/report")
        page.wait_for_selector(".guatu-report-where.guatu-good", timeout=15_000)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing wider than the phone
        page.select_option("select[name=type]", "环境卫生")
        page.fill("textarea[name=description]", description)
        page.set_input_files("input[name=photo]", str(photo))
        page.wait_for_selector(".guatu-report-preview:not([hidden])", timeout=10_000)
        context.set_offline(True)
        page.click("button[name=send]")
        page.wait_for_selector(".guatu-report-waiting", timeout=10_000)
        assert "待发送" in page.locator(".guatu-report-item").first.inner_text()
        kept = page.evaluate("JSON.parse(localStorage.getItem('guatu.reports'))")
        assert len(kept) == 1 and kept[0]["photo"].startswith("data:image/jpeg") and kept[0]["state"] == "waiting"
        assert _count(demo_engine, description) == 0
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "report-390-waiting.png"), full_page=True)

        def drop_the_first_answer(route: Any) -> None:
            creates.append(route.request.headers.get("idempotency-key", ""))
            if len(creates) == 1:
                route.fetch()  # the server stores it ...
                route.abort("connectionreset")  # ... and the answer is lost on the way back
            else:
                route.continue_()

        page.route("**/api/problems", drop_the_first_answer)
        context.set_offline(False)  # fires `online`: the page sends what it kept
        for _ in range(150):  # the page resends on `online`; the first answer is dropped
            page.wait_for_timeout(100)
            if creates and _count(demo_engine, description):
                break
        assert _count(demo_engine, description) == 1  # stored, though the phone never heard
        page.click("button[name=retry]")
        page.wait_for_selector(".guatu-report-sent", timeout=15_000)
        text_ = page.locator(".guatu-report-item").first.inner_text()
        assert "已发送" in text_ and "WT-" in text_
        page.screenshot(path=str(SCREENSHOTS / "report-390-sent.png"), full_page=True)
    assert len(creates) >= 2 and len(set(creates)) == 1  # resent with the same key
    assert _count(demo_engine, description) == 1  # exactly once
    with Session(demo_engine) as session:
        state(session, ADMIN.settings())
        photos = session.execute(
            text("SELECT cardinality(photos), reporter FROM problems WHERE description = :d"), {"d": description}
        ).one()
    assert photos == (1, "gridman")


def test_the_ledger_page_and_the_pins_show_the_reported_problem(demo_engine: Engine) -> None:
    lon, lat = _inside(demo_engine, GRID)
    with Session(demo_engine) as session:
        state(session, ADMIN.settings())
        session.execute(
            text(
                "INSERT INTO problems (number, source, type, description, geom, area, reporter) VALUES "
                "('', '巡查', '设施损坏', '井盖缺失', ST_SetSRID(ST_MakePoint(:x, :y), 4490), :g, '')"
            ),
            {"x": lon, "y": lat, "g": GRID},
        )
        session.commit()
    with live_server(demo_engine) as base, chromium() as browser:
        sign_in_as(demo_engine, "planner")
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(base + "/problems")
        page.wait_for_selector(".tabulator-row", timeout=15_000)
        page.wait_for_selector(".guatu-problems-count-row", timeout=10_000)
        assert "井盖缺失" in page.locator(".tabulator-table").inner_text()
        page.locator(".tabulator-row", has_text="井盖缺失").click()
        page.wait_for_selector("button[name=action-交办]", timeout=10_000)  # a planner may assign it
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "problems-1440.png"))
        page.goto(base + f"/#18/{lat}/{lon}")
        page.wait_for_selector(".guatu-problem-pin", timeout=20_000)
        before = page.locator(".guatu-problem-pin").count()
        assert before >= 1
        page.wait_for_timeout(500)
        size = page.viewport_size
        page.mouse.click(size["width"] / 2 + 60, size["height"] / 2 + 40, button="right")  # 登记问题 here
        page.wait_for_selector("textarea[name=problem-description]", timeout=10_000)
        page.select_option("select[name=problem-type]", "安全隐患")
        page.fill("textarea[name=problem-description]", "电线裸露")
        page.locator(".guatu-problem-popup button", has_text="登记").click()
        page.wait_for_selector(".guatu-problem-popup .guatu-good", timeout=10_000)
        assert "WT-" in page.locator(".guatu-problem-popup .guatu-good").inner_text()
        page.wait_for_function(f"document.querySelectorAll('.guatu-problem-pin').length > {before}", timeout=10_000)
        page.screenshot(path=str(SCREENSHOTS / "problems-map-pins-1440.png"))
    with Session(demo_engine) as session:
        state(session, ADMIN.settings())
        row = session.execute(text("SELECT reporter, source FROM problems WHERE description = '电线裸露'")).one()
    assert tuple(row) == ("planner", "巡查")


def _open(browser: Any, engine: Engine, username: str, url: str) -> Any:
    """Return a new watched page at URL, signed in as USERNAME."""
    sign_in_as(engine, username)
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(url)
    return page


def _act(page: Any, number: str, action: str, fill: dict[str, str] | None = None, photo: Any = None) -> None:
    """On the ledger page: open problem NUMBER, fill the action's form, press it, wait for the new state."""
    page.wait_for_selector(".tabulator-row", timeout=15_000)
    shown = "(document.querySelector('.guatu-problem-detail h2') || {}).innerText || ''"
    if number not in page.evaluate(shown):  # a click re-renders the detail: only when another is shown
        page.locator(".tabulator-row", has_text=number).click()
        page.wait_for_function(f"({shown}).indexOf('{number}') >= 0", timeout=10_000)
    button = page.locator(f"button[name=action-{action}]")
    button.wait_for(timeout=10_000)
    form = page.locator(".guatu-problem-action", has=button)
    for name, value in (fill or {}).items():
        form.locator(f"[name={name}]").fill(value)
    if photo is not None:
        form.locator("input[name=photo]").set_input_files(str(photo))
    events = page.locator(".guatu-problem-event").count()
    button.click()
    try:
        page.wait_for_function(f"document.querySelectorAll('.guatu-problem-event').length > {events}", timeout=15_000)
    except TimeoutError:
        raise AssertionError(form.locator(".guatu-upload-status").inner_text()) from None


def _cockpit_problems(page: Any) -> dict[str, int]:
    """Return the problem figures the cockpit page shows (open, overdue, closed this month)."""
    page.wait_for_selector(".gc-shell[data-loaded]", timeout=20_000)
    names = ("problems_open", "problems_overdue", "problems_closed")
    return {name: int(page.locator(f"[data-figure={name}]").inner_text()) for name in names}


def _pin_class(page: Any) -> str:
    page.wait_for_selector(".guatu-problem-pin", timeout=20_000)
    return str(page.locator(".guatu-problem-pin").first.get_attribute("class"))


def test_from_a_finding_to_closed_by_another_user(demo_engine: Engine, tmp_path: Any) -> None:
    gap = next(d for d in demo.DEFECTS if d["kind"] == "gap")
    x, y = gap["centroid"]
    photo = tmp_path / "after.png"
    photo.write_bytes(png(60, 40))
    fresh = ApiSettings(cockpit_cache_s=0)  # the cockpit's figures read anew on each load
    with live_server(demo_engine, fresh) as base, chromium() as browser:
        cockpit = _open(browser, demo_engine, "planner", base + "/cockpit")
        before = _cockpit_problems(cockpit)
        checks = _open(browser, demo_engine, "planner", base + "/checks")
        checks.select_option("select[name=scope]", gap["community_code"])
        checks.click("button[name=check]")
        checks.wait_for_selector(".guatu-register-problem", timeout=30_000)
        checks.locator(".guatu-register-problem").first.click()
        registered = checks.wait_for_selector(".guatu-registered", timeout=15_000).inner_text()
        number = registered.split()[2]
        assert number.startswith("WT-") and "已登记" in registered
        checks.click("button[name=check]")  # checked again: the finding shows it is registered
        checks.wait_for_selector(".guatu-registered", timeout=30_000)
        assert checks.locator(".guatu-register-problem").count() == 0
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        checks.screenshot(path=str(SCREENSHOTS / "problems-from-finding-1440.png"))

        ledger = _open(browser, demo_engine, "planner", base + "/problems")
        deadline = (dt.date.today() + dt.timedelta(days=10)).isoformat()
        # the street office's own staff rectify a gap between two grids (a grid manager of community 006 would
        # do as well: whoever is assigned must work where the problem lies, assignee_outside_area otherwise)
        _act(ledger, number, "交办", {"assignee": "planner", "unit": "城管中队", "deadline": deadline})
        assert "已交办" in ledger.locator(".guatu-problem-detail h2").inner_text()
        community = ledger.locator(".guatu-problems-count-row", has_text=gap["community_code"])
        assert community.inner_text().split() == [gap["community_code"], "1", "0", "0"]  # open, overdue, closed
        pins = _open(browser, demo_engine, "planner", base + f"/#18/{y}/{x}")
        assert "guatu-problem-green" in _pin_class(pins)

        rectifier = _open(browser, demo_engine, "planner", base + "/problems")
        _act(rectifier, number, "整改")
        _act(rectifier, number, "提交验收", {"note": "已补划网格"}, photo)
        assert "待验收" in rectifier.locator(".guatu-problem-detail h2").inner_text()
        rectifier.wait_for_selector(".guatu-problem-photos img", timeout=10_000)
        assert rectifier.evaluate("document.querySelector('.guatu-problem-photos img').naturalWidth") == 60

        verifier = _open(browser, demo_engine, "admin", base + "/problems")  # another person verifies
        _act(verifier, number, "销号", {"note": "现场核实"})
        assert "已销号" in verifier.locator(".guatu-problem-detail h2").inner_text()
        row = verifier.locator(".guatu-problems-count-row", has_text=gap["community_code"])
        verifier.wait_for_function(
            "[...document.querySelectorAll('.guatu-problems-count-row')].some(r => r.innerText.split(/\\s+/)"
            f".join(' ') === '{gap['community_code']} 0 0 1')",
            timeout=10_000,
        )
        assert row.inner_text().split() == [gap["community_code"], "0", "0", "1"]  # closed this month
        log = verifier.locator(".guatu-problem-event").all_inner_texts()
        assert [line.split()[2:4] for line in log] == [
            ["planner", "登记：—"],
            ["planner", "交办：已登记"],
            ["planner", "整改：已交办"],
            ["planner", "提交验收：整改中"],
            ["admin", "销号：待验收"],
        ]
        verifier.screenshot(path=str(SCREENSHOTS / "problems-closed-1440.png"))
        pins.reload()
        assert "guatu-problem-grey" in _pin_class(pins)
        pins.screenshot(path=str(SCREENSHOTS / "problems-pin-closed-1440.png"))
        with verifier.expect_download(timeout=60_000) as download:  # the ledger's export says it too
            verifier.locator("a.guatu-export").click()
        saved = tmp_path / "problems.xlsx"
        download.value.save_as(saved)
        book = openpyxl.load_workbook(saved)
        sheet = book["问题台账"]
        header = [c.value for c in sheet[1]]
        exported = {r[header.index("编号")]: r for r in sheet.iter_rows(min_row=3, values_only=True)}  # 2 header rows
        assert exported[number][header.index("状态")] == "已销号"
        assert exported[number][header.index("责任单位")] == "城管中队"
        actions = [r[1] for r in book["流转记录"].iter_rows(min_row=3, values_only=True) if r[0] == number]
        assert actions == ["登记", "交办", "整改", "提交验收", "销号"]
        cockpit.reload()  # the leader's screen: one more closed this month, none more open
        after = _cockpit_problems(cockpit)
        assert after == {**before, "problems_closed": before["problems_closed"] + 1}
