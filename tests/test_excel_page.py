"""The upload page in headless Chromium with an Excel ledger: 更新导入, dry run, then commit."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import openpyxl
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from layers import features
from layers.base import REGISTRY
from tests.browser import chromium, live_server
from tests.conftest import admin_sessions, migrated_database
from tests.samples import COMMUNITY, X0, Y0, polygon, sample

pytestmark = pytest.mark.browser
SCREENSHOTS = Path(os.environ.get("GUATU_SCREENSHOTS", Path(__file__).resolve().parent.parent / "out" / "screenshots"))
PARCELS = REGISTRY["parcels"]


@pytest.fixture(scope="module")
def engine_with_parcels() -> Iterator[Engine]:
    with migrated_database("guatu_test_excel_page") as engine:
        with admin_sessions(engine)() as session:
            for i in range(3):
                parcel = sample("parcels")
                parcel["properties"]["code"] = COMMUNITY + f"01{i:05d}"
                parcel["properties"]["name"] = f"地块{i}"
                x = X0 + 0.0015 * i
                parcel["geometry"] = polygon(x, Y0, x + 0.001, Y0 + 0.0008)
                features.create_feature(session, PARCELS, parcel)
            session.commit()
        yield engine


def _ledger(exported: bytes) -> bytes:
    """Return the export with one name changed, as a clerk would in a spreadsheet."""
    wb = openpyxl.load_workbook(io.BytesIO(exported))
    ws = wb[PARCELS.zh]
    column = next(c.column for c in ws[1] if c.value == PARCELS.field(PARCELS.name_field or "").zh)
    ws.cell(row=4, column=column, value="地块1（更名）")
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def test_upload_page_takes_a_ledger_in_update_mode_dry_run_then_commit(engine_with_parcels: Engine) -> None:
    requests: list[str] = []
    with live_server(engine_with_parcels) as base, chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("request", lambda request: requests.append(request.url))
        page.goto(base + "/upload?layer=parcels")
        assert page.locator("select[name=layer]").input_value() == "parcels"  # preselected by the link
        assert page.locator("a.guatu-template-link").get_attribute("href") == "/api/layers/parcels/template.xlsx"
        exported = httpx.get(base + "/api/layers/parcels/export.xlsx")
        assert exported.status_code == 200
        page.select_option("select[name=import_mode]", "update")
        page.set_input_files(
            "input[name=file]",
            files=[{"name": "台账.xlsx", "mimeType": "application/octet-stream", "buffer": _ledger(exported.content)}],
        )
        page.click("button[name=check]")
        page.wait_for_selector(".guatu-report-table", timeout=15_000)
        status = page.locator(".guatu-upload-status").inner_text()
        assert "修改 1" in status and "新增 0" in status and "拒绝 0" in status, status
        changed = page.locator("tr.guatu-row-changed").inner_text()
        assert (
            "第 4 行" in changed and f"{PARCELS.field(PARCELS.name_field or '').zh}：地块1 → 地块1（更名）" in changed
        ), changed
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "upload-excel-update.png"))
        with admin_sessions(engine_with_parcels)() as session:  # a dry run writes nothing
            stored = session.execute(text(f"SELECT name FROM {PARCELS.table} ORDER BY {PARCELS.key_field}")).scalars()
            assert list(stored) == ["地块0", "地块1", "地块2"]

        page.click("button[name=commit]")
        page.wait_for_function(
            "document.querySelector('.guatu-upload-status').textContent.includes('committed')", timeout=15_000
        )
        with admin_sessions(engine_with_parcels)() as session:
            names = session.execute(text(f"SELECT name FROM {PARCELS.table} ORDER BY {PARCELS.key_field}")).scalars()
            assert list(names) == ["地块0", "地块1（更名）", "地块2"]
    assert [url for url in requests if not url.startswith(base) and not url.startswith("data:")] == []


def test_the_map_offers_the_ledgers_shown_as_excel(engine_with_parcels: Engine) -> None:
    with live_server(engine_with_parcels) as base, chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(base + f"/?scope={COMMUNITY}")
        link = page.locator("a.guatu-export")
        page.wait_for_function("document.querySelector('a.guatu-export').href.includes('parcels')", timeout=15_000)
        href = link.get_attribute("href") or ""
        assert href.startswith("/api/export.xlsx?layers=") and "&bbox=" in href, href
        answer = httpx.get(base + href)
        assert answer.status_code == 200, answer.text
        wb = openpyxl.load_workbook(io.BytesIO(answer.content))
        assert wb.sheetnames[0] == "说明" and PARCELS.zh in wb.sheetnames
        assert wb[PARCELS.zh].max_row >= 3  # the parcels in view
