"""Excel out and in: export, template, 新增导入 / 更新导入 through the upload pipeline."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import io
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from layers import features
from layers.base import REGISTRY
from tests.accounts import bearer
from tests.samples import COMMUNITY, GRID, X0, Y0, polygon, sample

PARCELS = REGISTRY["parcels"]
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _parcel(n: int, **props: Any) -> dict[str, Any]:
    feature = sample("parcels")
    feature["properties"]["code"] = COMMUNITY + f"01{n:05d}"
    feature["properties"]["name"] = f"地块{n}"
    feature["properties"]["address"] = f"南疃路{n}号"
    feature["properties"].update(props)
    x = X0 + 0.0012 * (n - 1)
    feature["geometry"] = polygon(x, Y0, x + 0.001, Y0 + 0.0009)
    return feature


def _store(session: Session, *stored: dict[str, Any]) -> None:
    layer = PARCELS
    for feature in stored:
        features.create_feature(session, layer, copy.deepcopy(feature))
    session.flush()


def _book(response: Any) -> openpyxl.Workbook:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == XLSX
    return openpyxl.load_workbook(io.BytesIO(response.content))


def _column(ws: Any, label: str) -> int:
    return next(c.column for c in ws[1] if c.value == label)


def _bytes(wb: openpyxl.Workbook) -> bytes:
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def _upload(client: TestClient, body: bytes, layer: str = "parcels", **params: Any) -> Any:
    headers = params.pop("headers", {})
    files = {"file": ("台账.xlsx", io.BytesIO(body), XLSX)}
    return client.post(f"/api/layers/{layer}/uploads", files=files, params=params, headers=headers)


def _stored(session: Session, column: str) -> dict[str, Any]:
    key = PARCELS.key_field
    rows = session.execute(text(f"SELECT {key}, {column} FROM {PARCELS.table} ORDER BY {key}")).all()
    return dict(rows)


@pytest.fixture
def three(session: Session) -> list[dict[str, Any]]:
    stored = [_parcel(1), _parcel(2, use_status="出租", idle_since=None, stage=None), _parcel(3)]
    _store(session, *stored)
    return stored


def test_export_headers_types_formats_and_cover(client: TestClient, three: list[dict[str, Any]]) -> None:
    wb = _book(client.get("/api/layers/parcels/export.xlsx", params={"scope": COMMUNITY}))
    assert wb.sheetnames == ["说明", PARCELS.zh]
    ws = wb[PARCELS.zh]
    assert [c.value for c in ws[1]][: len(PARCELS.fields)] != []
    labels = [c.value for c in ws[1]]
    assert [f.zh for f in PARCELS.fields] == [v for v in labels if v in {f.zh for f in PARCELS.fields}]
    assert ws.cell(row=2, column=1).value == PARCELS.fields[0].en  # English in the second header row
    assert ws.freeze_panes == "A3" and ws.auto_filter.ref
    assert ws.max_row == 2 + 3
    code = ws.cell(row=3, column=_column(ws, PARCELS.field(PARCELS.key_field).zh))
    assert code.data_type == "s" and code.number_format == "@" and code.value == three[0]["properties"]["code"]
    mu = ws.cell(row=3, column=_column(ws, "面积(亩)"))
    assert mu.number_format == "0.00" and 1 < mu.value < 20
    idle = ws.cell(row=3, column=_column(ws, "闲置起始"))
    assert isinstance(idle.value, dt.datetime) and idle.value.date() == dt.date(2023, 5, 1)
    assert ws.cell(row=3, column=_column(ws, "地类编码名称")).value  # the code list's name beside its code
    assert ws.cell(row=3, column=_column(ws, "图形(WKT)")).value.startswith("MULTIPOLYGON")
    cover = [[c.value for c in row] for row in wb["说明"].iter_rows()]
    assert any(row[0] == PARCELS.zh and COMMUNITY in str(row[1]) and row[2] == 3 for row in cover)
    assert any("admin" in str(row[1]) for row in cover)


def test_export_honours_the_filter_and_holds_one_sheet_per_layer(
    client: TestClient, session: Session, three: list[dict[str, Any]]
) -> None:
    wb = _book(client.get("/api/layers/parcels/export.xlsx", params={"status": "闲置"}))
    ws = wb[PARCELS.zh]
    codes = [ws.cell(row=r, column=1).value for r in range(3, ws.max_row + 1)]
    assert codes == [three[0]["properties"]["code"], three[2]["properties"]["code"]]
    cover = [[c.value for c in row] for row in wb["说明"].iter_rows()]
    assert any(row[0] == PARCELS.zh and "闲置" in str(row[1]) for row in cover)
    shop = sample("shops")
    features.create_feature(session, REGISTRY["shops"], shop)
    both = _book(client.get("/api/export.xlsx", params={"layers": "shops,parcels"}))
    assert both.sheetnames == ["说明", PARCELS.zh, REGISTRY["shops"].zh]  # map order
    assert both[REGISTRY["shops"].zh].cell(row=3, column=1).value == shop["properties"]["code"]
    refused = client.get("/api/layers/parcels/export.xlsx", params={"status": "没有这种"})
    assert refused.status_code == 422 and refused.json()["code"] == "filter_invalid"


def test_export_masks_personal_values_for_a_viewer(
    client: TestClient, session: Session, tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    logged: list[tuple[str, list[int]]] = []
    monkeypatch.setattr(
        "api.routes.workbooks.log_personal", lambda _s, actor, _l, ids, _f, _r: logged.append((actor.username, ids))
    )
    zones = REGISTRY["zones"]
    for layer_id in ("divisions", "grids", "parcels", "zones"):
        features.create_feature(session, REGISTRY[layer_id], sample(layer_id))
    personal = next(f for f in zones.fields if f.personal)
    full = sample("zones")["properties"][personal.name]
    seen = _book(client.get("/api/layers/zones/export.xlsx"))[zones.zh]
    assert seen.cell(row=3, column=_column(seen, personal.zh)).value == full
    masked = client.get("/api/layers/zones/export.xlsx", headers=bearer(tokens["viewer"]))
    ws = _book(masked)[zones.zh]
    shown = ws.cell(row=3, column=_column(ws, personal.zh)).value
    assert shown != full and "*" in shown and shown[0] == full[0]
    assert [who for who, _ in logged] == ["admin"]  # the administrator's full showing, not the viewer's masked one


def test_template_has_dropdowns_and_an_example_row_that_imports_clean(client: TestClient, session: Session) -> None:
    layer = REGISTRY["revenue_points"]
    for layer_id in ("divisions", "grids"):
        features.create_feature(session, REGISTRY[layer_id], sample(layer_id))
    response = client.get("/api/layers/revenue_points/template.xlsx")
    wb = _book(response)
    ws = wb[layer.zh]
    assert "填写说明" in wb.sheetnames
    required = [f for f in layer.fields if f.required]
    assert all(ws.cell(row=1, column=n + 1).value == "*" + f.zh for n, f in enumerate(layer.fields) if f.required)
    assert required and ws.cell(row=1, column=1).font.color.rgb.endswith("B91C1C")
    lists = {str(dv.sqref).split(":")[0].rstrip("0123456789"): dv.formula1 for dv in ws.data_validations.dataValidation}
    for n, f in enumerate(layer.fields):
        if f.choices:
            letter = openpyxl.utils.get_column_letter(n + 1)
            assert all(c in lists[letter] for c in f.choices)
    assert ws.cell(row=3, column=1).value == layer.example[layer.key_field]
    point = sample("revenue_points")["geometry"]["coordinates"]
    ws.cell(row=3, column=_column(ws, "经度"), value=point[0])
    ws.cell(row=3, column=_column(ws, "纬度"), value=point[1])
    answer = _upload(client, _bytes(wb), "revenue_points", dry_run="true")
    assert answer.status_code == 200, answer.text
    report = answer.json()["report"]
    assert report["summary"]["new"] == 1 and report["summary"]["rejected"] == 0, report
    assert report["features"][0]["row"] == 3 and report["import_mode"] == "add"
    guide = [[c.value for c in row] for row in wb["填写说明"].iter_rows()]
    assert any(row[0] == layer.field(layer.key_field).zh and "19位" in str(row[3]) for row in guide)


def test_parcel_template_lists_land_use_codes_from_a_hidden_sheet(client: TestClient) -> None:
    wb = _book(client.get("/api/layers/parcels/template.xlsx"))
    assert wb["代码表"].sheet_state == "hidden"
    formulas = [dv.formula1 for dv in wb[PARCELS.zh].data_validations.dataValidation]
    assert any(f.startswith("'代码表'!") for f in formulas)
    assert wb["代码表"].cell(row=2, column=1).value in PARCELS.field("land_use_code").known()


def _exported(client: TestClient) -> openpyxl.Workbook:
    return _book(client.get("/api/layers/parcels/export.xlsx"))


def test_round_trip_update_changes_exactly_the_edited_cells_then_add_takes_the_new_row(
    client: TestClient, session: Session, three: list[dict[str, Any]]
) -> None:
    wb = _exported(client)
    ws = wb[PARCELS.zh]
    ws.cell(row=3, column=_column(ws, "名称"), value="地块1（改）")
    ws.cell(row=5, column=_column(ws, "利用现状"), value="出租")
    added = _parcel(4)
    for f in PARCELS.fields:
        value = added["properties"].get(f.name)
        if value is not None:
            ws.cell(row=6, column=_column(ws, f.zh), value=value)
    x = X0 + 0.0012 * 3
    ws.cell(
        row=6, column=_column(ws, "图形(WKT)"), value=f"POLYGON(({x} {Y0},{x + 0.001} {Y0},{x} {Y0 + 0.0009},{x} {Y0}))"
    )
    body = _bytes(wb)
    before = _stored(session, "version")

    strict = _upload(client, body, import_mode="update")
    assert strict.status_code == 422 and strict.json()["status"] == "rejected"
    assert _stored(session, "version") == before  # all-or-nothing: nothing written

    update = _upload(client, body, import_mode="update", mode="valid-only")
    assert update.status_code == 201, update.text
    report = update.json()["report"]
    assert report["summary"] == {"total": 4, "new": 0, "changed": 2, "unchanged": 1, "rejected": 1}
    entries = {e["row"]: e for e in report["features"]}
    assert entries[3]["changes"] == {"name": ["地块1", "地块1（改）"]}
    assert entries[5]["changes"] == {"use_status": ["闲置", "出租"]}
    assert entries[6]["problems"][0]["code"] == "not_found"
    names, status = _stored(session, "name"), _stored(session, "use_status")
    codes = [t["properties"]["code"] for t in three]
    assert names[codes[0]] == "地块1（改）" and status[codes[2]] == "出租"
    versions = _stored(session, "version")
    assert [versions[c] - before[c] for c in codes] == [1, 0, 1]  # the untouched row was not rewritten

    add = _upload(client, body, import_mode="add", mode="valid-only")
    assert add.status_code == 201, add.text
    summary = add.json()["report"]["summary"]
    assert summary["new"] == 1 and summary["rejected"] == 3
    kinds = {e["problems"][0]["code"] for e in add.json()["report"]["features"] if e["status"] == "rejected"}
    assert kinds == {"already_exists"}
    assert len(_stored(session, "name")) == 4


def test_a_bad_row_is_reported_and_nothing_written_unless_valid_only(
    client: TestClient, session: Session, three: list[dict[str, Any]]
) -> None:
    wb = _exported(client)
    ws = wb[PARCELS.zh]
    ws.cell(row=3, column=_column(ws, "利用现状"), value="空着")  # not a choice
    ws.cell(row=4, column=_column(ws, "闲置起始"), value="去年春天")  # not a date
    ws.cell(row=5, column=_column(ws, "名称"), value="地块3（改）")
    body = _bytes(wb)
    before = _stored(session, "version")
    refused = _upload(client, body)  # has geometry: add by default, so say update
    assert refused.json()["report"]["summary"]["rejected"] == 3  # add: every code already exists
    refused = _upload(client, body, import_mode="update")
    assert refused.status_code == 422
    entries = {e["row"]: e for e in refused.json()["report"]["features"]}
    assert entries[3]["problems"][0]["code"] == "enum"
    assert entries[4]["problems"][0]["code"] == "cell_invalid"
    assert entries[4]["problems"][0]["where"]["field"] == "idle_since"
    assert _stored(session, "version") == before
    kept = _upload(client, body, import_mode="update", mode="valid-only")
    assert kept.status_code == 201 and kept.json()["report"]["summary"]["changed"] == 1
    assert _stored(session, "name")[three[2]["properties"]["code"]] == "地块3（改）"


def test_the_same_ledger_with_the_same_idempotency_key_gives_the_same_result(
    client: TestClient, session: Session, three: list[dict[str, Any]], archive_in_tmp: Path
) -> None:
    wb = _exported(client)
    ws = wb[PARCELS.zh]
    for r in range(3, 6):
        ws.cell(row=r, column=_column(ws, "系统编号"), value=None)
        ws.cell(row=r, column=1, value=COMMUNITY + f"01000{r + 10}")  # new codes
    body = _bytes(wb)
    with session.begin_nested():
        session.execute(text(f"DELETE FROM {PARCELS.table}"))
    first = _upload(client, body, headers={"Idempotency-Key": "ledger-1"})
    assert first.status_code == 201, first.text
    again = _upload(client, body, headers={"Idempotency-Key": "ledger-1"})
    assert again.json()["id"] == first.json()["id"] and again.json()["report"] == first.json()["report"]
    assert len(_stored(session, "name")) == 3
    sha = hashlib.sha256(body).hexdigest()
    assert (archive_in_tmp / sha[:2] / f"{sha}.xlsx").read_bytes() == body  # the ledger is archived as sent


def _community_ledger(stored: list[dict[str, Any]]) -> bytes:
    """Return a ledger as a community keeps it: a banner, grouped headers, its own words, numbers for codes."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Sheet1"
    ws["A1"] = "南疃社区集体资产台账（2025年）"
    ws.merge_cells("A1:I1")
    ws["A2"], ws["B2"], ws["E2"], ws["I2"] = "序号", "基本信息", "利用情况", "备注"
    ws.merge_cells("A2:A3")
    ws.merge_cells("B2:D2")
    ws.merge_cells("E2:H2")
    ws.merge_cells("I2:I3")
    for col, label in zip(
        "BCDEFGH", ("资产编码", "资产名称", "坐落位置", "地类编码", "权属", "利用现状", "闲置起始"), strict=True
    ):
        ws[f"{col}3"] = label
    one, two = stored[0]["properties"], stored[1]["properties"]
    rows = [
        (1, one["code"], "东地块（台账）", one["address"], 1201, "集体", "闲置", dt.date(2024, 3, 1), "已核"),
        (2, None, "二号地块", two["address"], 101, "集体", "出租", None, "无编码，按地址"),
        (3, COMMUNITY + "0199999", "不知在哪", "北山坡", 1201, "集体", "闲置", 45000, ""),
    ]
    for n, row in enumerate(rows, start=4):
        for col, value in zip("ABCDEFGHI", row, strict=True):
            ws[f"{col}{n}"] = value
    ws["H4"].number_format = "yyyy/m/d"
    return _bytes(wb)


def test_a_community_ledger_with_merged_headers_imports_by_code_and_address(
    client: TestClient, session: Session, three: list[dict[str, Any]]
) -> None:
    answer = _upload(client, _community_ledger(three), mode="valid-only")
    assert answer.status_code == 201, answer.text
    body = answer.json()
    report = body["report"]
    assert body["options"]["import_mode"] == "update"  # no geometry column: update by default
    assert report["summary"]["changed"] == 2 and report["summary"]["rejected"] == 1
    assert report["unmatched_rows"] == [6]
    entries = {e["row"]: e for e in report["features"]}
    assert entries[6]["problems"][0]["code"] == "no_shape"
    assert entries[4]["changes"]["name"] == ["地块1", "东地块（台账）"]
    assert entries[4]["changes"]["idle_since"] == ["2023-05-01", "2024-03-01"]
    assert entries[5]["key"] == three[1]["properties"]["code"]  # matched by its address
    assert any(n["code"] == "leading_zeros_restored" for n in entries[5]["notes"])
    assert {w["code"] for w in report["warnings"]} >= {"unknown_columns"}
    assert "备注" in next(w for w in report["warnings"] if w["code"] == "unknown_columns")["columns"]
    codes = [t["properties"]["code"] for t in three]
    assert _stored(session, "land_use_code")[codes[1]] == "0101"
    assert _stored(session, "name")[codes[1]] == "二号地块"
    assert _stored(session, "grid_code")[codes[0]] == GRID  # a column the ledger lacks: kept


def test_missing_required_column_and_a_non_workbook_zip_are_clear_errors(client: TestClient) -> None:
    wb = openpyxl.Workbook()
    wb.active.append(["名称", "坐落"])
    wb.active.append(["某地块", "某路"])
    missing = _upload(client, _bytes(wb))
    assert missing.status_code == 422 and missing.json()["code"] == "missing_columns"
    assert "地块编码" in missing.json()["message"]
    buffer = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("a.txt", "hello")
    broken = _upload(client, buffer.getvalue())
    assert broken.status_code == 400 and broken.json()["code"] == "not_xlsx"


def test_masked_personal_values_sent_back_keep_the_stored_ones(
    client: TestClient, session: Session, tokens: dict[str, str]
) -> None:
    zones = REGISTRY["zones"]
    for layer_id in ("divisions", "grids", "parcels", "zones"):
        features.create_feature(session, REGISTRY[layer_id], sample(layer_id))
    personal = next(f for f in zones.fields if f.personal)
    full = sample("zones")["properties"][personal.name]
    unchanged = _upload(client, client.get("/api/layers/zones/export.xlsx").content, "zones", import_mode="update")
    summary = unchanged.json()["report"]["summary"]
    assert summary["unchanged"] == 1 and summary["changed"] == 0, unchanged.text  # full values sent back: no change

    surveyor = bearer(tokens["surveyor9"])  # edits zones, sees personal values masked
    wb = _book(client.get("/api/layers/zones/export.xlsx", headers=surveyor))
    ws = wb[zones.zh]
    assert ws.cell(row=3, column=_column(ws, personal.zh)).value != full
    other = next(f for f in zones.fields if f.choices and not f.personal)
    value = next(c for c in other.choices if c != ws.cell(row=3, column=_column(ws, other.zh)).value)
    ws.cell(row=3, column=_column(ws, other.zh), value=value)
    answer = _upload(client, _bytes(wb), "zones", import_mode="update", headers=surveyor)
    assert answer.status_code == 201, answer.text
    entry = answer.json()["report"]["features"][0]
    assert entry["status"] == "changed" and list(entry["changes"]) == [other.name]
    again = _book(client.get("/api/layers/zones/export.xlsx"))[zones.zh]
    assert again.cell(row=3, column=_column(again, personal.zh)).value == full  # kept
    assert again.cell(row=3, column=_column(again, other.zh)).value == value


def test_several_layers_each_narrowed_as_on_the_map(
    client: TestClient, session: Session, three: list[dict[str, Any]]
) -> None:
    shops = REGISTRY["shops"]
    shop = sample("shops")
    features.create_feature(session, shops, shop)
    status = shops.field(shops.style.by or "")
    other = next(c for c in status.choices if c != shop["properties"][status.name])
    params = {"layers": "parcels,shops", "status": "出租", f"narrow_{shops.id}": f"status={other}"}
    wb = _book(client.get("/api/export.xlsx", params=params))
    assert wb[PARCELS.zh].max_row == 3  # the one let parcel
    assert wb[shops.zh].max_row == 2  # no shop of the other status: headers only
    cover = [[c.value for c in row] for row in wb["说明"].iter_rows()]
    assert any(row[0] == shops.zh and other in str(row[1]) and row[2] == 0 for row in cover)


def test_an_export_beyond_the_row_cap_is_refused_saying_the_cap(
    client: TestClient, three: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("layers.workbook.MAX_EXPORT_ROWS", 2)
    refused = client.get("/api/layers/parcels/export.xlsx")
    assert refused.status_code == 422 and refused.json()["code"] == "export_too_large"
    assert "3" in refused.json()["message"] and "2" in refused.json()["message"]
    assert client.get("/api/layers/parcels/export.xlsx", params={"status": "出租"}).status_code == 200
