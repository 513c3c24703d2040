"""Excel exports of the contracts ledger and the problem ledger: sheets, headers, types, formats, masking, areas."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import openpyxl
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from api.routes import contracts as contract_routes
from layers import contracts, problems
from tests.accounts import bearer
from tests.test_contracts import _contract, _frame
from tests.test_problems import move, photo, report

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _book(response: Any) -> openpyxl.Workbook:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == XLSX
    assert "attachment" in response.headers["content-disposition"]
    return openpyxl.load_workbook(io.BytesIO(response.content))


def _rows(ws: Any) -> list[dict[str, Any]]:
    """Return the data rows of a ledger sheet as {Chinese header: cell} (row 1 Chinese, row 2 English headers)."""
    cells = list(ws.iter_rows())
    heads = [c.value for c in cells[0]]
    return [dict(zip(heads, row, strict=True)) for row in cells[2:]]


def _cover(wb: openpyxl.Workbook) -> dict[str, Any]:
    return {row[0]: row[1] for row in wb["说明"].iter_rows(values_only=True) if row and row[0]}


def test_contracts_export_has_figures_types_formats_and_payments(client: TestClient, session: Session) -> None:
    _frame(session)
    cid = client.post("/api/contracts", json=_contract()).json()["id"]
    client.post(f"/api/contracts/{cid}/payments", json={"paid_on": "2024-01-10", "amount": "7200", "note": "R-1"})
    client.post(f"/api/contracts/{cid}/payments", json={"paid_on": "2025-06-01", "amount": "10"})  # after the date
    api = client.get(f"/api/contracts/{cid}", params={"as_of": "2025-03-01"}).json()
    wb = _book(client.get("/api/contracts/export.xlsx", params={"as_of": "2025-03-01", "status": "履行中"}))
    assert wb.sheetnames == ["说明", "合同", "收款"]
    assert [c.value for c in wb["合同"][2]][:3] == ["number", "title", "lessor"]  # English under the Chinese
    (row,) = _rows(wb["合同"])
    assert row["合同编号"].value == "NT-2024-001" and row["合同编号"].number_format == "@"
    assert row["承租方"].value == "李明华"  # the admin sees personal values
    assert row["应收(元)"].value == api["position"]["receivable"] == 14400.0
    assert row["实收(元)"].value == api["position"]["received"] == 7200.0
    assert row["欠缴(元)"].value == api["position"]["arrears"] and row["欠缴(元)"].number_format == "#,##0.00"
    assert row["逾期天数"].value == api["position"]["days_overdue"] == 59
    assert isinstance(row["起始日期"].value, dt.datetime) and row["起始日期"].number_format == "yyyy-mm-dd"
    assert row["起始日期"].value.date() == dt.date(2024, 1, 1)
    assert row["状态"].value == "履行中" and row["预警"].value == "租金逾期未缴"
    assert "3702140010090100001" in row["标的"].value
    payments = _rows(wb["收款"])
    assert [(p["合同编号"].value, p["金额(元)"].value, p["备注"].value) for p in payments] == [
        ("NT-2024-001", 7200.0, "R-1")
    ]
    assert payments[0]["收款日期"].number_format == "yyyy-mm-dd"
    cover = _cover(wb)
    assert cover["截至日期 as of"] == "2025-03-01" and cover["合同数 contracts"] == "1"
    assert "履行中" in cover["筛选 filter"] and cover["欠缴 arrears"] == "7200.00 元"
    # a filter that keeps nothing: headers only; a bad one is refused before anything is queued
    empty = _book(client.get("/api/contracts/export.xlsx", params={"as_of": "2025-03-01", "status": "已到期"}))
    assert _rows(empty["合同"]) == [] and _rows(empty["收款"]) == []
    bad = client.get("/api/contracts/export.xlsx", params={"warning": "no_contract"})
    assert bad.status_code == 422 and bad.json()["code"] == "parameter_invalid"


def test_contracts_export_masks_for_a_viewer_logs_a_full_showing_and_keeps_to_the_area(
    client: TestClient, session: Session, tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _frame(session)
    cid = client.post("/api/contracts", json=_contract()).json()["id"]
    viewer = _rows(_book(client.get("/api/contracts/export.xlsx", headers=bearer(tokens["viewer"])))["合同"])
    assert [(r["承租方"].value, r["承租方证件号码"].value) for r in viewer] == [("李*华", "3****************4")]
    other = _book(client.get("/api/contracts/export.xlsx", headers=bearer(tokens["planner2"])))
    assert _rows(other["合同"]) == [] and _cover(other)["合同数 contracts"] == "0"
    logged: list[tuple[str, str, list[int], list[str]]] = []

    def log(session: Session, actor: Any, table: str, ids: list[int], fields: list[str], route: str) -> None:
        logged.append((actor.username, table, ids, fields))

    monkeypatch.setattr(contract_routes, "log_personal", log)  # the app may write the log, never read it
    client.get("/api/contracts/export.xlsx", headers=bearer(tokens["viewer"]))
    assert logged == []  # masked: nothing shown in full
    planner = _rows(_book(client.get("/api/contracts/export.xlsx", headers=bearer(tokens["planner"])))["合同"])
    assert planner[0]["承租方"].value == "李明华"
    assert logged == [("planner", contracts.CONTRACTS, [cid], list(contracts.PERSONAL))]


def test_contract_schedule_shows_what_each_instalment_still_owes(client: TestClient, session: Session) -> None:
    _frame(session)
    cid = client.post("/api/contracts", json=_contract()).json()["id"]
    client.post(f"/api/contracts/{cid}/payments", json={"paid_on": "2024-01-10", "amount": "8000"})
    found = client.get(f"/api/contracts/{cid}", params={"as_of": "2025-03-01"}).json()
    plan = found["schedule"]
    assert len(plan) == 5 and plan[0]["due"] == "2024-01-01" and plan[-1]["end"] == "2028-12-31"
    assert [(i["paid"], i["owing"], i["overdue"]) for i in plan[:3]] == [
        (7200.0, 0.0, False),
        (800.0, 6400.0, True),
        (0.0, 7200.0, False),  # due 2026: not yet
    ]
    assert sum(i["owing"] for i in plan if i["overdue"]) == found["position"]["arrears"]


def _closed_problem(client: TestClient, tokens: dict[str, str]) -> dict[str, Any]:
    """Report a problem and move it through the whole cycle to 已销号; return it with its log."""
    made = report(client, tokens, photos=[photo(client, tokens, "gridman9", 1)])
    pid = made.json()["id"]
    deadline = (dt.date.today() + dt.timedelta(days=10)).isoformat()
    move(client, tokens, "planner", pid, "交办", assignee="gridman9", unit="城管中队", deadline=deadline)
    move(client, tokens, "gridman9", pid, "整改")
    move(client, tokens, "gridman9", pid, "提交验收", photos=[photo(client, tokens, "gridman9", 2, "整改后")])
    closed = move(client, tokens, "planner", pid, "销号", note="已核查")
    assert closed.status_code == 201, closed.text
    return dict(closed.json())


def test_problems_export_has_the_ledger_its_lights_and_every_transition(
    client: TestClient, session: Session, tokens: dict[str, str]
) -> None:
    _frame(session)
    closed = _closed_problem(client, tokens)
    open_one = report(client, tokens, description="占道").json()
    late = (dt.date.today() - dt.timedelta(days=2)).isoformat()
    move(client, tokens, "planner", open_one["id"], "交办", assignee="gridman9", deadline=late)
    wb = _book(client.get("/api/problems/export.xlsx"))
    assert wb.sheetnames == ["说明", "问题台账", "流转记录"]
    rows = {r["编号"].value: r for r in _rows(wb["问题台账"])}
    assert set(rows) == {closed["number"], open_one["number"]}
    done = rows[closed["number"]]
    assert done["状态"].value == "已销号" and done["亮灯"].value == "已销号"
    assert done["责任单位"].value == "城管中队" and done["责任人"].value == "gridman9"
    assert done["登记人"].value == "gridman9" and done["编号"].number_format == "@"
    assert isinstance(done["销号时间"].value, dt.datetime) and done["销号时间"].number_format == "yyyy-mm-dd hh:mm"
    assert isinstance(done["整改期限"].value, dt.datetime) and done["整改期限"].number_format == "yyyy-mm-dd"
    assert rows[open_one["number"]]["亮灯"].value == "逾期" and rows[open_one["number"]]["销号时间"].value is None
    log = [tuple(c.value for c in r.values()) for r in _rows(wb["流转记录"])]
    mine = [(a, f, t, who) for n, a, f, t, who, _, _ in log if n == closed["number"]]
    assert mine == [(e["action"], e["from"], e["to"], e["actor"]) for e in closed["events"]]
    assert len(mine) == 5 and mine[-1] == ("销号", "待验收", "已销号", "planner")
    assert len(log) == len(mine) + 2  # the open one: 登记, 交办
    cover = _cover(wb)
    assert cover["问题数 problems"] == "2" and cover["亮灯 逾期"] == "1" and cover["亮灯 已销号"] == "1"
    # filters: overdue only; and another street's planner gets none
    overdue = _rows(_book(client.get("/api/problems/export.xlsx", params={"overdue": "true"}))["问题台账"])
    assert [r["编号"].value for r in overdue] == [open_one["number"]]
    closed_only = _book(client.get("/api/problems/export.xlsx", params={"status": problems.CLOSED}))
    assert [r["编号"].value for r in _rows(closed_only["问题台账"])] == [closed["number"]]
    other = _book(client.get("/api/problems/export.xlsx", headers=bearer(tokens["planner2"])))
    assert _rows(other["问题台账"]) == [] and _rows(other["流转记录"]) == []
    assert client.get("/api/problems/export.xlsx", params={"status": "bogus"}).json()["code"] == "status_invalid"


def test_a_ledger_export_beyond_the_cap_is_refused_with_a_code(
    client: TestClient, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    from layers import workbook

    _frame(session)
    client.post("/api/contracts", json=_contract())
    client.post("/api/contracts", json=_contract(number="NT-2024-002"))
    from openpyxl.worksheet._writer import ALL_TEMP_FILES

    monkeypatch.setattr(workbook, "MAX_EXPORT_ROWS", 1)
    before = set(ALL_TEMP_FILES)
    refused = client.get("/api/contracts/export.xlsx")
    assert refused.status_code == 422 and refused.json()["code"] == "export_too_large"
    assert set(ALL_TEMP_FILES) == before  # the sheets written before the refusal leave no temporary file
    monkeypatch.setattr(workbook, "MAX_EXPORT_ROWS", 2)
    assert len(_rows(_book(client.get("/api/contracts/export.xlsx"))["合同"])) == 2
