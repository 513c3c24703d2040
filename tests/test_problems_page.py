"""The problem ledger in headless Chromium: a grid worker's phone report survives a dropped connection and
arrives exactly once."""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

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
        context = browser.new_context(
            viewport={"width": 390, "height": 844},
            geolocation={"longitude": lon, "latitude": lat, "accuracy": 8},
            permissions=["geolocation"],
        )
        page = context.new_page()
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
        context.close()
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
        assert page.locator(".guatu-problem-pin").count() >= 1
        page.screenshot(path=str(SCREENSHOTS / "problems-map-pins-1440.png"))
