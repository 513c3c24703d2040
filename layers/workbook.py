"""Excel out and in: a filtered ledger as XLSX, a template per layer, and a community's ledger read back.

Everything comes from the declaration: headers from ``Field.zh``/``Field.en``, dropdowns from
``Field.choices`` and code lists (``Field.known``/``Field.labels``), formats from ``Field.kind``.
Workbooks are written with openpyxl (write-only, streamed to a temporary file, for exports)
and read with python-calamine (values and merged cells, fast). A ledger read back becomes a
GeoJSON FeatureCollection fed to the upload pipeline (:mod:`layers.uploads`): same checks,
same per-row report, dry run, all-or-nothing and idempotency as a GeoJSON upload.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import os
import posixpath
import re
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal
from xml.etree import ElementTree
from xml.parsers import expat
from zoneinfo import ZoneInfo

import orjson
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.comments import Comment
from openpyxl.styles import Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation
from python_calamine import CalamineError, CalamineWorkbook
from sqlalchemy import text
from sqlalchemy.orm import Session

import shapely

from layers.access import Actor, personal_fields, shown_function
from layers.base import EXTRA, EXTRA_EN, EXTRA_ZH, Field, Layer, declared_layer, looks_masked_text, mask_text
from layers.stats import Filter, filter_conditions
from spatial.errors import InvalidInput, MalformedInput, Problem, Where

ImportMode = Literal["add", "update"]
IMPORT_MODES = {"add": "新增导入", "update": "更新导入"}

MAX_EXPORT_ROWS = 200_000
"""Rows an export holds at most (all sheets together); beyond, narrow the filter."""
MAX_IMPORT_ROWS = 50_000
"""Data rows a ledger may hold: a community's ledger is a few thousand."""
HEADER_SCAN = 15
"""Rows looked at for the header (title rows, a banner, group headers come first)."""
MAX_SHEET_ROWS = 2 * MAX_IMPORT_ROWS
"""Rows a sheet may reach (its last value): blank rows between ledger rows are fine, a stray cell far down is not."""
MAX_MERGED = 10_000
"""Merged ranges a sheet may have (the reader keeps every one)."""
MAX_MERGED_FILL = 200_000
"""Header cells the merged ranges may fill in all (a header's merges cover a few hundred)."""
MAX_SHEET_CELLS = 5_000_000
"""Cells a sheet's used range may span (last row × last column holding a value): the reader makes
every one of them, so one stray value in XFD1048576 of a 5 KB file would be 17 billion."""
TEMPLATE_ROWS = 2000
"""Rows of a template the dropdowns cover."""
WKT_MAX = 32_767
"""Characters an Excel cell holds: a longer outline is left out (re-imported by its code)."""

MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
RELS = "xl/_rels/workbook.xml.rels"

COVER = "说明"
GUIDE = "填写说明"
CODES = "代码表"
ID_LABEL, VERSION_LABEL = "系统编号", "版本"
WKT_LABEL = "图形(WKT)"
LON_LABEL, LAT_LABEL = "经度", "纬度"
AREA_M2_LABEL, AREA_MU_LABEL = "面积(m²)", "面积(亩)"
NAMES_SUFFIX = "名称"
"""A code list's names column beside it: ``<label>名称`` (read back: ignored)."""

ADDRESS_LABELS = ("坐落", "位置", "地址", "坐落位置", "门牌地址")
"""How a ledger names an address: the layer's address field is its text field labelled so."""
KEY_ALIASES = ("编码", "资产编码", "编号", "宗地代码", "宗地编码", "资产代码")
NAME_ALIASES = ("名称", "资产名称", "项目名称")
WKT_ALIASES = (WKT_LABEL, "wkt", "图形", "几何", "geometry", "geom", "图形wkt")
LON_ALIASES = ("经度", "lon", "lng", "longitude", "x坐标(经度)")
LAT_ALIASES = ("纬度", "lat", "latitude", "y坐标(纬度)")
ID_ALIASES = ("系统编号", "id", "系统编号id")
VERSION_ALIASES = ("版本", "version", "版本version")
IGNORED_ALIASES = ("序号", "面积(m²)", "面积(亩)", "面积m²", "面积亩", "area_m2", "area_mu", "备注说明")

HEADER_FILL = PatternFill("solid", fgColor="DCE6F1")
REQUIRED_FILL = PatternFill("solid", fgColor="FDE2E1")
REQUIRED_FONT = Font(bold=True, color="B91C1C")
BOLD = Font(bold=True)
EXAMPLE_FONT = Font(italic=True, color="6B7280")


# ---------------------------------------------------------------- labels


def _norm(label: Any) -> str:
    """Return a header cell as compared: no stars, spaces or line breaks, half-width brackets, lower case."""
    s = str(label or "").strip()
    s = s.replace("（", "(").replace("）", ")").replace("：", ":").replace("＊", "*")
    s = re.sub(r"\s+", "", s).lstrip("*").rstrip(":").lower()
    return s


def _bare(label: str) -> str:
    """Return LABEL without a bracketed unit (数量(个) → 数量)."""
    return re.sub(r"\(.*?\)$", "", label)


def address_field(layer: Layer) -> Field | None:
    """Return the field holding a feature's address (a text field labelled 坐落, 位置, 地址…), if any."""
    return next((f for f in layer.fields if f.kind == "text" and f.zh in ADDRESS_LABELS), None)


def sheet_name(layer: Layer) -> str:
    """Return the name of LAYER's sheet: its Chinese name, without what Excel refuses in one, at most 31 characters."""
    return re.sub(r"[\\/?*\[\]:]", "-", layer.zh)[:31]


def header_labels(layer: Layer) -> dict[str, str]:
    """Return {normalised header: what it means}: a field name, or ``@id``, ``@version``, ``@wkt``, ``@lon``…

    A field is known by its name, Chinese label, English label, both together, the Chinese
    label without its unit, and a few common ledger words (编码 for the key, 地址 for the address).
    """
    out: dict[str, str] = {}

    def add(label: str, meaning: str) -> None:
        out.setdefault(_norm(label), meaning)

    for f in layer.fields:
        for label in (f.name, f.zh, f.en, f"{f.zh} {f.en}", f"{f.zh}({f.en})", f"{f.zh}{f.en}"):
            add(label, f.name)
    for f in layer.fields:  # the declared other names (三调 DKBM), then the filter's short label (not 闲置: a date)
        for label in (*f.aliases, *((f.filter_zh,) if f.filter_zh and f.kind != "date" else ())):
            add(label, f.name)
    for f in layer.fields:
        add(_bare(_norm(f.zh)), f.name)
        if f.zh.endswith("编码"):
            add(f.zh[:-2] + "代码", f.name)
        elif f.zh.endswith("代码"):
            add(f.zh[:-2] + "编码", f.name)
    for alias in KEY_ALIASES:
        add(alias, layer.key_field)
    if layer.name_field:
        for alias in NAME_ALIASES:
            add(alias, layer.name_field)
    found = address_field(layer)
    if found is not None:
        for alias in ADDRESS_LABELS:
            add(alias, found.name)
    for f in layer.fields:
        if f.labels is not None:
            add(f"{f.zh}{NAMES_SUFFIX}", "@ignored")
            add(f"{f.en} name", "@ignored")
    for label in (EXTRA_ZH, EXTRA_EN, f"{EXTRA_ZH} {EXTRA_EN}"):
        add(label, "@ignored")
    for label in ("Area m²", "Area mu", "WKT geometry (CGCS2000)", "Longitude (CGCS2000)", "Latitude (CGCS2000)"):
        add(label, {"Lo": "@lon", "La": "@lat", "WK": "@wkt"}.get(label[:2], "@ignored"))
    for aliases, meaning in (
        (WKT_ALIASES, "@wkt"),
        (LON_ALIASES, "@lon"),
        (LAT_ALIASES, "@lat"),
        (ID_ALIASES, "@id"),
        (VERSION_ALIASES, "@version"),
        (IGNORED_ALIASES, "@ignored"),
    ):
        for alias in aliases:
            add(alias, meaning)
    add(f"{WKT_LABEL} WKT geometry (CGCS2000)", "@wkt")
    return out


# ---------------------------------------------------------------- export


@dataclass
class Sheet:
    """One layer's part of an export: the layer and its filter."""

    layer: Layer
    flt: Filter


@dataclass
class Exported:
    """An export written to PATH: rows per layer, and the ids of features shown with personal values in full."""

    path: Path
    counts: dict[str, int]
    shown_full: dict[str, list[int]] = field(default_factory=dict)


def _columns(layer: Layer) -> list[tuple[str, str, str, Field | None]]:
    """Return the export's columns: (key, Chinese header, English header, field)."""
    cols: list[tuple[str, str, str, Field | None]] = []
    for f in layer.fields:
        cols.append((f.name, f.zh, f.en, f))
        if f.labels is not None:
            cols.append((f"@names:{f.name}", f"{f.zh}{NAMES_SUFFIX}", f"{f.en} name", None))
    if layer.has_area:
        cols.append(("@area_m2", AREA_M2_LABEL, "Area m²", None))
        cols.append(("@area_mu", AREA_MU_LABEL, "Area mu", None))
    cols.append(("@id", ID_LABEL, "id", None))
    cols.append(("@version", VERSION_LABEL, "version", None))
    cols.append(("@extra", EXTRA_ZH, EXTRA_EN, None))  # read back: ignored (the stored ones are kept)
    cols.append(("@wkt", WKT_LABEL, "WKT geometry (CGCS2000)", None))
    return cols


def _width(label: str, f: Field | None) -> float:
    if f is None:
        return 14
    wide = {"code": 2 + f.max_length * 1.1, "date": 12, "int": 10, "float": 13, "enum": 10}.get(f.kind, 24)
    return max(wide, len(label) * 2 + 2, 8)


def select_sql(layer: Layer, flt: Filter, geometry: Sequence[str] = ("ST_AsText(geom)",)) -> tuple[str, dict[str, Any]]:
    """Return the SQL reading LAYER's rows kept by FLT (personal fields as this user is shown them).

    Each row: id, version, the fields, the area (a layer with one), then the GEOMETRY expressions
    (the outline as WKT by default; :mod:`layers.exports` asks for GeoJSON, KML or WKB).
    """
    personal = set(personal_fields(layer))
    values = []
    for name in layer.field_names:
        values.append(f"({shown_function(layer)}(id) ->> '{name}')" if name in personal else name)
    if layer.has_area:
        values += ["area_m2"]
    values += [f"{EXTRA}::text"]
    conditions, params = filter_conditions(layer, flt)
    where = " AND ".join(f"({c})" for c in conditions) or "true"
    sql = (
        f"SELECT id, version, {', '.join(values)}, {', '.join(geometry)} FROM {layer.table} "
        f"WHERE {where} ORDER BY {layer.key_field}"
    )
    return sql, params


def count_rows(session: Session, sheets: Sequence[Sheet], cap: int | None = None) -> dict[str, int]:
    """Return how many rows each sheet will hold; refuse an export beyond CAP (MAX_EXPORT_ROWS by default)."""
    cap = MAX_EXPORT_ROWS if cap is None else cap
    counts = {}
    for sheet in sheets:
        conditions, params = filter_conditions(sheet.layer, sheet.flt)
        where = " AND ".join(f"({c})" for c in conditions) or "true"
        counts[sheet.layer.id] = int(
            session.execute(text(f"SELECT count(*) FROM {sheet.layer.table} WHERE {where}"), params).scalar_one()
        )
    total = sum(counts.values())
    if total > cap:
        raise InvalidInput.one(
            "export_too_large",
            f"导出共 {total} 行，超过上限 {cap} 行：请缩小范围或增加筛选条件",
            f"the export would hold {total} rows, more than {cap}: narrow the scope or the filter",
            field="scope",
        )
    return counts


def filter_words(sheet: Sheet) -> str:
    """Return the filter of SHEET in words (范围 370214001009；状态 闲置), or 全部 for none."""
    parts = []
    if sheet.flt.scope:
        parts.append(f"范围 {sheet.flt.scope}")
    if sheet.flt.bbox:
        parts.append("视野 " + ",".join(f"{v:.5f}" for v in sheet.flt.bbox))
    said = sheet.flt.label(sheet.layer)
    if said:
        parts.append(said)
    return "；".join(parts) or "全部 all"


def _cell(ws: Any, value: Any, number_format: str | None = None, font: Font | None = None) -> WriteOnlyCell:
    cell = WriteOnlyCell(ws, value=value)
    if isinstance(value, str) and value.startswith("="):
        cell.data_type = "s"  # text a user typed, never a formula when a clerk opens the export (=HYPERLINK…)
    if number_format:
        cell.number_format = number_format
    if font is not None:
        cell.font = font
    return cell


def write_export(
    session: Session, sheets: Sequence[Sheet], actor: Actor | None, *, title: str, now: dt.datetime | None = None
) -> Exported:
    """Write SHEETS (one per layer) and a cover sheet into a temporary XLSX file; return it.

    Rows are read in batches and written as they come (openpyxl write-only): memory holds a
    batch, never the ledger. The caller deletes the file once sent.
    """
    count_rows(session, sheets)
    wb = Workbook(write_only=True)
    cover = _cover(wb, actor, title, now)
    written = {}
    shown_full = {}
    try:
        for sheet in sheets:
            shown_full[sheet.layer.id], written[sheet.layer.id] = _write_sheet(session, wb, sheet, actor)
    except BaseException:
        _discard(wb)
        raise
    cover.append([])
    cover.append([_cell(cover, h, font=BOLD) for h in ("工作表 sheet", "筛选 filter", "行数 rows")])
    for sheet in sheets:
        cover.append([sheet_name(sheet.layer), _cell(cover, filter_words(sheet)), written[sheet.layer.id]])
    cover.append([])
    cover.append(
        ["更新导入 update", "改动后可按编码更新导入；系统编号、版本、面积列只读 (edit and import back by code)"]
    )
    return Exported(_save(wb), written, shown_full)  # the rows as written: the count only held it to its cap


def _cover(wb: Any, actor: Actor | None, title: str, now: dt.datetime | None) -> Any:
    """Start the cover sheet 说明 of an export: the title, who exported it, when, whether personal values show."""
    now = now or dt.datetime.now(dt.UTC)
    cover = wb.create_sheet(COVER)
    cover.column_dimensions["A"].width = 18
    cover.column_dimensions["B"].width = 60
    who = f"{actor.username}（{actor.role}）" if actor is not None else "—"
    cover.append([_cell(cover, title, font=Font(bold=True, size=14))])
    cover.append(["导出人 exported by", who])
    cover.append(["导出时间 exported at", now.astimezone(_local()).strftime("%Y-%m-%d %H:%M")])
    cover.append(
        ["个人信息 personal", "完整显示 shown in full" if actor and actor.sees_personal() else "已打码 masked"]
    )
    return cover


def _discard(wb: Any) -> None:
    """Close and remove the temporary files of a write-only workbook given up half written (an export refused)."""
    for ws in wb.worksheets:
        with suppress(Exception):
            ws.close()
        writer = getattr(ws, "_writer", None)  # openpyxl keeps each sheet in a temporary file until saved
        if writer is not None:
            with suppress(Exception):
                writer.cleanup()


def _save(wb: Any) -> Path:
    """Save WB into a temporary XLSX file (the caller deletes it once sent); return its path."""
    fd, name = tempfile.mkstemp(prefix="guatu-export-", suffix=".xlsx")
    os.close(fd)
    try:
        wb.save(name)
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


# ---------------------------------------------------------------- ledgers that are not layers

ColumnKind = Literal["text", "code", "date", "datetime", "money", "int"]
FORMATS: dict[str, str | None] = {
    "text": None,
    "code": "@",
    "date": "yyyy-mm-dd",
    "datetime": "yyyy-mm-dd hh:mm",
    "money": "#,##0.00",
    "int": "0",
}
"""The number format of each kind of column: codes as text, money with two decimals, dates as dates."""
WIDTHS = {"text": 24, "code": 22, "date": 12, "datetime": 17, "money": 14, "int": 10}


def _local() -> ZoneInfo:
    """Return the deployment's time zone (GUATU_TIMEZONE): times in a workbook are written in it."""
    from layers.settings import layer_settings

    return ZoneInfo(layer_settings().timezone)


@dataclass(frozen=True)
class Column:
    """A column of a ledger table: its Chinese and English headers and its kind (how cells are written)."""

    zh: str
    en: str
    kind: ColumnKind = "text"


@dataclass
class Table:
    """A sheet of a ledger that is not a layer (contracts, payments, problems, their log): columns and rows."""

    name: str
    columns: Sequence[Column]
    rows: Iterable[Sequence[Any]]


def _table_cell(ws: Any, column: Column, value: Any) -> Any:
    if value is None or value == "":
        return None
    if column.kind == "datetime" and isinstance(value, dt.datetime):
        value = value.astimezone(_local()).replace(tzinfo=None)  # Excel has no time zones: the deployment's
    elif column.kind == "money":
        value = round(float(value), 2)
    elif column.kind in ("code", "text"):
        value = str(value)
    return _cell(ws, value, FORMATS[column.kind])


def write_tables(
    tables: Sequence[Table],
    actor: Actor | None,
    *,
    title: str,
    about: Sequence[tuple[str, str]] = (),
    now: dt.datetime | None = None,
) -> Exported:
    """Write TABLES after a cover sheet (who, when, then ABOUT's lines and each sheet's rows); return the file.

    As :func:`write_export`, for ledgers that are not map layers: headers in Chinese with the
    English below, frozen, filtered; each cell written by its column's kind.
    """
    wb = Workbook(write_only=True)
    cover = _cover(wb, actor, title, now)
    for label, value in about:
        cover.append([label, value])
    counts: dict[str, int] = {}
    try:
        for table in tables:
            ws = wb.create_sheet(table.name)
            for n, column in enumerate(table.columns, start=1):
                ws.column_dimensions[get_column_letter(n)].width = max(WIDTHS[column.kind], len(column.zh) * 2 + 2)
            ws.freeze_panes = "A3"
            ws.auto_filter.ref = f"A2:{get_column_letter(len(table.columns))}2"
            ws.append([_cell(ws, c.zh, font=BOLD) for c in table.columns])
            ws.append([_cell(ws, c.en, font=EXAMPLE_FONT) for c in table.columns])
            rows = 0
            for row in table.rows:
                if rows + sum(counts.values()) >= MAX_EXPORT_ROWS:
                    raise InvalidInput.one(
                        "export_too_large",
                        f"导出超过上限 {MAX_EXPORT_ROWS} 行：请缩小范围或增加筛选条件",
                        f"the export would hold more than {MAX_EXPORT_ROWS} rows: narrow the scope or the filter",
                        field="scope",
                    )
                ws.append([_table_cell(ws, c, v) for c, v in zip(table.columns, row, strict=True)])
                rows += 1
            counts[table.name] = rows
    except BaseException:
        _discard(wb)
        raise
    cover.append([])
    cover.append([_cell(cover, h, font=BOLD) for h in ("工作表 sheet", "行数 rows")])
    for name, rows in counts.items():
        cover.append([name, rows])
    return Exported(_save(wb), counts)


def _write_sheet(session: Session, wb: Any, sheet: Sheet, actor: Actor | None) -> tuple[list[int], int]:
    """Write one layer's rows; return the ids shown with personal values in full, and how many rows."""
    layer = sheet.layer
    ws = wb.create_sheet(sheet_name(layer))
    cols = _columns(layer)
    for n, (_, zh, _, f) in enumerate(cols, start=1):
        ws.column_dimensions[get_column_letter(n)].width = _width(zh, f)
    ws.freeze_panes = "A3"
    ws.auto_filter.ref = f"A2:{get_column_letter(len(cols))}2"
    ws.append([_cell(ws, zh, font=REQUIRED_FONT if f and f.required else BOLD) for _, zh, _, f in cols])
    ws.append([_cell(ws, en, font=EXAMPLE_FONT) for _, _, en, _ in cols])
    sql, params = select_sql(layer, sheet.flt)
    personal = bool(personal_fields(layer))
    full = personal and actor is not None and actor.sees_personal()
    ids: list[int] = []
    rows = 0
    result = session.execute(text(sql).execution_options(yield_per=2000), params)
    names = layer.field_names
    labels = {f.name: f.labels() for f in layer.fields if f.labels is not None}  # once, not per row
    for row in result:
        fid, version, *values = row
        props = dict(zip(names, values[: len(names)], strict=True))
        rest = values[len(names) :]
        cells: list[Any] = []
        for key, _, _, f in cols:
            cells.append(_export_cell(ws, labels, key, f, props, rest, fid, version))
        ws.append(cells)
        rows += 1
        if full:
            ids.append(int(fid))
    return ids, rows


def _extra_text(raw: str) -> str:
    """Return a feature's other attributes (JSON text) as a cell shows them: 备注=临街；来源=天地图."""
    shown = "；".join(f"{k}={v}" for k, v in orjson.loads(raw).items())
    return shown[:WKT_MAX]


def _export_cell(
    ws: Any,
    labels: dict[str, Mapping[str, str]],
    key: str,
    f: Field | None,
    props: dict[str, Any],
    rest: list[Any],
    fid: int,
    version: int,
) -> Any:
    if f is not None:
        value = props[f.name]
        if value is None:
            return None
        if f.kind in ("code", "text", "enum"):
            return _cell(ws, str(value), "@" if f.kind == "code" else None)
        if f.kind == "date":
            return _cell(ws, value, "yyyy-mm-dd")
        if f.kind == "float":
            return _cell(ws, value, "0.00")
        return value
    if key.startswith("@names:"):
        name = key.split(":", 1)[1]
        code = props[name]
        return labels[name].get(code) if code else None
    if key == "@area_m2":
        return _cell(ws, rest[0], "0.00") if rest[0] is not None else None
    if key == "@area_mu":
        return _cell(ws, rest[0] * 3 / 2000, "0.00") if rest[0] is not None else None
    if key == "@id":
        return fid
    if key == "@version":
        return version
    if key == "@extra":
        return _cell(ws, _extra_text(rest[-2])) if rest[-2] else None
    wkt = rest[-1]
    return _cell(ws, wkt if wkt and len(wkt) <= WKT_MAX else None, "@")


# ---------------------------------------------------------------- template


def write_template(layer: Layer) -> bytes:
    """Return LAYER's template: headers (required ones starred and coloured), dropdowns, an example row, rules."""
    return _template(layer.id, layer.module)


@functools.lru_cache(maxsize=32)
def _template(layer_id: str, module: str) -> bytes:
    """Return the template of layer LAYER_ID (the same bytes every time: made once per process)."""
    layer = declared_layer(layer_id, module)
    wb = Workbook()
    ws = wb.active
    ws.title = sheet_name(layer)
    point = layer.accepts == ("Point",)
    fields = list(layer.fields)
    geo = [(LON_LABEL, "Longitude (CGCS2000)"), (LAT_LABEL, "Latitude (CGCS2000)")] if point else []
    if not point:
        geo = [(WKT_LABEL, "WKT geometry (CGCS2000)")]
    for n, f in enumerate(fields, start=1):
        top = ws.cell(row=1, column=n, value=("*" if f.required else "") + f.zh)
        top.font = REQUIRED_FONT if f.required else BOLD
        top.fill = REQUIRED_FILL if f.required else HEADER_FILL
        ws.cell(row=2, column=n, value=f.en).font = EXAMPLE_FONT
        ws.column_dimensions[get_column_letter(n)].width = _width(f.zh, f)
        if f.kind == "code":
            for r in range(3, TEMPLATE_ROWS + 1):
                ws.cell(row=r, column=n).number_format = "@"
    for m, (zh, en) in enumerate(geo, start=len(fields) + 1):
        ws.cell(row=1, column=m, value=zh).font = BOLD
        ws.cell(row=1, column=m).fill = HEADER_FILL
        ws.cell(row=2, column=m, value=en).font = EXAMPLE_FONT
        ws.column_dimensions[get_column_letter(m)].width = 16 if point else 40
    ws.freeze_panes = "A3"
    _dropdowns(wb, ws, fields)
    example = layer.example
    for n, f in enumerate(fields, start=1):
        value = example.get(f.name)
        if value is None:
            continue
        if f.kind == "date" and isinstance(value, str):
            value = dt.date.fromisoformat(value)
        cell = ws.cell(row=3, column=n, value=value)
        cell.font = EXAMPLE_FONT
        if f.kind == "code":
            cell.number_format = "@"
        elif f.kind == "date":
            cell.number_format = "yyyy-mm-dd"
    if example:
        ws.cell(row=3, column=1).comment = Comment(
            "示例行：填写前请删除 example row: delete it before filling in", "guatu"
        )
    _guide(wb, layer, fields, point)
    buffer = io.BytesIO()
    wb.save(buffer)
    return buffer.getvalue()


def _dropdowns(wb: Any, ws: Any, fields: list[Field]) -> None:
    """Add a dropdown to every enumeration (its values) and code list (from a hidden sheet of codes)."""
    codes = None
    code_col = 0
    for n, f in enumerate(fields, start=1):
        letter = get_column_letter(n)
        cells = f"{letter}3:{letter}{TEMPLATE_ROWS}"
        if f.choices:
            listed = ",".join(f.choices)
            dv = DataValidation(type="list", formula1=f'"{listed}"', allow_blank=not f.required)
        elif f.known is not None:
            if codes is None:
                codes = wb.create_sheet(CODES)
                codes.sheet_state = "hidden"
            code_col += 1
            names = f.labels() if f.labels is not None else {}
            column = get_column_letter(code_col)
            codes.cell(row=1, column=code_col, value=f.zh)
            known = sorted(f.known())
            for r, code in enumerate(known, start=2):
                codes.cell(row=r, column=code_col, value=code).number_format = "@"
                if names:
                    codes.cell(row=r, column=code_col + 1, value=names.get(code, ""))
            if names:
                code_col += 1
            dv = DataValidation(type="list", formula1=f"'{CODES}'!${column}$2:${column}${len(known) + 1}")
        else:
            continue
        dv.error = f"请从下拉列表中选择{f.zh} choose a value of the list"
        dv.errorTitle = f.zh
        dv.showErrorMessage = True
        ws.add_data_validation(dv)
        dv.add(cells)


def field_rules(f: Field) -> str:
    """Return a field's rules in words (what the 填写说明 sheet says of it)."""
    rules = []
    kinds = {"text": "文本", "code": "编码（文本）", "enum": "选项", "int": "整数", "float": "数字", "date": "日期"}
    rules.append(kinds[f.kind])
    if f.pattern_zh:
        rules.append(f.pattern_zh)
    if f.kind in ("text", "code"):
        rules.append(f"至多 {f.max_length} 字")
    if f.choices:
        rules.append("可选：" + "、".join(f.choices))
    if f.known is not None:
        rules.append(f"取值见“{CODES}”")
    if f.minimum is not None or f.maximum is not None:
        lo = "" if f.minimum is None else f"{f.minimum:g}"
        hi = "" if f.maximum is None else f"{f.maximum:g}"
        rules.append(f"范围 {lo}–{hi}")
    if f.kind == "date":
        rules.append("格式 YYYY-MM-DD")
    if f.personal:
        rules.append("个人信息：导出时按权限打码，打码值原样回填即保留原值")
    return "；".join(rules)


def _guide(wb: Any, layer: Layer, fields: list[Field], point: bool) -> None:
    guide = wb.create_sheet(GUIDE)
    guide.append([f"{layer.zh}台账填写说明 ({layer.en} ledger: how to fill it in)"])
    guide["A1"].font = Font(bold=True, size=13)
    guide.append(["字段 field", "英文 English", "必填 required", "规则 rules"])
    for cell in guide[2]:
        cell.font = BOLD
    for f in fields:
        guide.append([f.zh, f.en, "是 yes" if f.required else "", field_rules(f)])
    guide.append([])
    where = "经度、纬度两列（CGCS2000）" if point else "图形(WKT) 列（CGCS2000 经纬度）"
    guide.append(["图形", f"{where}；不填图形时按编码、再按地址匹配已有图形，匹配不到的行列为 no_shape"])
    guide.append(["新增导入", "add：编码已存在的行报 already_exists"])
    guide.append(["更新导入", "update：按编码找到要素，只改与库中不同的单元格；编码不存在的行报 not_found"])
    guide.append(["编码", "编码列请设为文本；被存成数字而丢失前导零时，位数确定的编码会自动补零并提示"])
    for letter, width in zip("ABCD", (16, 22, 10, 70), strict=True):
        guide.column_dimensions[letter].width = width


# ---------------------------------------------------------------- import


def is_workbook(head: bytes) -> bool:
    """Tell whether HEAD (a file's first bytes) starts a ZIP archive, as an XLSX workbook does."""
    return head[:4] == b"PK\x03\x04"


@dataclass
class Ledger:
    """A ledger read from a workbook: the rows as features, and what the report adds per row."""

    geojson: bytes
    rows: list[int]
    """The sheet row number (1-based) of each feature index."""
    mode: ImportMode
    sheet: str
    rejected: dict[int, dict[str, Any]] = field(default_factory=dict)
    notes: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    new_values: dict[int, dict[str, Any]] = field(default_factory=dict)
    old_values: dict[int, dict[str, Any]] = field(default_factory=dict)
    unmatched: list[int] = field(default_factory=list)

    def annotate(self, layer: Layer, report: dict[str, Any]) -> None:
        """Add to REPORT each row's sheet row, its changes (old → new, personal masked), notes and warnings."""
        personal = set(personal_fields(layer))
        for entry in report.get("features", ()):
            index = entry["index"]
            if 0 <= index < len(self.rows):
                entry["row"] = self.rows[index]
            if index in self.notes:
                entry.setdefault("notes", []).extend(self.notes[index])
            if entry.get("status") == "changed":
                old, new = self.old_values.get(index, {}), self.new_values.get(index, {})
                changes = {}
                for name in entry.get("changed_fields", ()):
                    before, after = old.get(name), new.get(name)
                    if name in personal:
                        before = mask_text(str(before)) if before else before
                        after = mask_text(str(after)) if after else after
                    changes[name] = [_plain(before), _plain(after)]
                entry["changes"] = changes
        report["sheet"] = self.sheet
        report["import_mode"] = self.mode
        report["labels"] = {f.name: f.zh for f in layer.fields}
        if self.unmatched:
            report["unmatched_rows"] = self.unmatched
        if self.warnings:
            report.setdefault("warnings", []).extend(self.warnings)


def _plain(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _problem(code: str, zh: str, en: str, index: int, name: str | None = None, row: int | None = None) -> Problem:
    where = Where(feature_index=index, field=name)
    if row is not None:
        where.location = [row]
    return Problem(code, zh, en, where)


@dataclass
class _Header:
    row: int  # 0-based index of the last header row
    columns: dict[int, str]  # column index → meaning
    unknown: list[str]


def _fill_merged(rows: list[list[Any]], merged: Iterable[tuple[tuple[int, int], tuple[int, int]]]) -> None:
    """Copy each merged range's value into every cell of the range within the header rows.

    Refuses ranges that would make it fill more than MAX_MERGED_FILL cells (a header merges a
    few dozen; a crafted sheet, thousands of full-width ranges: minutes of CPU for the server).
    """
    spans = []
    for (r0, c0), (r1, c1) in merged:
        if r0 >= len(rows):
            continue
        width = len(rows[r0])
        spans.append((r0, c0, min(r1, len(rows) - 1), min(c1, width - 1)))
    if sum((r1 - r0 + 1) * max(c1 - c0 + 1, 0) for r0, c0, r1, c1 in spans) > MAX_MERGED_FILL:
        raise MalformedInput.one(
            "sheet_too_many_merged",
            f"表头的合并单元格共覆盖超过 {MAX_MERGED_FILL} 格：请取消多余的合并后另存重试",
            f"the header's merged ranges cover more than {MAX_MERGED_FILL} cells: unmerge them and save again",
        )
    for r0, c0, r1, c1 in spans:
        value = rows[r0][c0] if c0 < len(rows[r0]) else ""
        for r in range(r0, r1 + 1):
            for c in range(c0, min(c1, len(rows[r]) - 1) + 1):
                if rows[r][c] in ("", None):
                    rows[r][c] = value


def _find_header(rows: list[list[Any]], labels: dict[str, str]) -> _Header | None:
    """Return the header: the row naming most fields, with cells above it filling its blanks (two-row headers)."""
    top = rows[:HEADER_SCAN]
    scores = [sum(1 for v in row if labels.get(_norm(v), "").isidentifier()) for row in top]
    if not scores or max(scores) == 0:
        return None
    best = scores.index(max(scores))
    columns: dict[int, str] = {}
    unknown: list[str] = []
    width = max(len(r) for r in top)
    last = best
    # an English (or repeated) header row right below the Chinese one belongs to the header
    while last + 1 < len(rows) and _header_like(rows[last + 1], labels):
        last += 1
    for c in range(width):
        meaning = None
        shown = ""
        for r in range(best, max(best - 3, -1), -1):  # the header row, else a cell above it (merged down)
            value = rows[r][c] if c < len(rows[r]) else ""
            if value in ("", None):
                continue
            shown = shown or str(value)
            meaning = labels.get(_norm(value))
            if meaning:
                break
        if meaning is None:
            value = rows[best + 1][c] if best + 1 <= last and c < len(rows[best + 1]) else ""
            meaning = labels.get(_norm(value)) if value not in ("", None) else None
        if meaning:
            if meaning not in columns.values() or meaning == "@ignored":
                columns[c] = meaning
        elif shown and rows[best][c] not in ("", None):
            unknown.append(str(shown)[:40])
    return _Header(last, columns, unknown)


def _header_like(row: list[Any], labels: dict[str, str]) -> bool:
    filled = [v for v in row if v not in ("", None)]
    return bool(filled) and sum(1 for v in filled if _norm(v) in labels) * 2 >= len(filled)


def _pick_sheet(book: CalamineWorkbook, layer: Layer, labels: dict[str, str]) -> tuple[str, list[list[Any]], _Header]:
    """Return the sheet holding the ledger: the layer's own name, else the visible one naming most fields."""
    best: tuple[int, str, list[list[Any]], _Header] | None = None
    for meta in book.sheets_metadata:
        if str(meta.visible).rsplit(".", 1)[-1] != "Visible" or meta.name in (COVER, GUIDE, CODES):
            continue
        sheet = book.get_sheet_by_name(meta.name)
        rows = [list(r) for r in sheet.to_python(skip_empty_area=False)]
        head = [list(r) for r in rows[:HEADER_SCAN]]
        _fill_merged(head, sheet.merged_cell_ranges or [])
        rows[: len(head)] = head
        header = _find_header(rows, labels)
        if header is None:
            continue
        score = sum(1 for m in header.columns.values() if not m.startswith("@")) + (
            100 if meta.name == sheet_name(layer) else 0
        )
        if best is None or score > best[0]:
            best = (score, meta.name, rows, header)
    if best is None:
        raise MalformedInput.one(
            "no_header",
            f"工作簿中找不到{layer.zh}台账的表头（前 {HEADER_SCAN} 行中没有可识别的列名，如“{layer.fields[0].zh}”）",
            f"no sheet has a header naming {layer.en} fields in its first {HEADER_SCAN} rows",
        )
    return best[1], best[2], best[3]


def _open(body: bytes | Path) -> CalamineWorkbook:
    try:
        if isinstance(body, Path):
            with zipfile.ZipFile(body) as zf:
                _check_parts(zf)
            return CalamineWorkbook.from_path(str(body))
        with zipfile.ZipFile(io.BytesIO(body)) as zf:
            _check_parts(zf)
        return CalamineWorkbook.from_filelike(io.BytesIO(body))
    except (zipfile.BadZipFile, ValueError, OSError, CalamineError) as exc:
        raise _unreadable(exc) from None


def _unreadable(exc: Exception) -> MalformedInput:
    return MalformedInput.one(
        "not_xlsx",
        "文件不是有效的 Excel 工作簿（.xlsx）：请用 Excel 或 WPS 另存为 .xlsx 后重试",
        f"not a readable .xlsx workbook ({type(exc).__name__}): save it as .xlsx and try again",
    )


def _check_parts(zf: zipfile.ZipFile) -> None:
    names = set(zf.namelist())
    if "xl/workbook.xml" not in names:
        raise MalformedInput.one(
            "not_xlsx", "ZIP 文件中没有 Excel 工作簿（xl/workbook.xml）", "a ZIP file but no .xlsx workbook in it"
        )
    total = sum(i.file_size for i in zf.infolist())
    if total > 1_000_000_000:  # a zip bomb: a few MB unpacking to gigabytes
        raise MalformedInput.one("xlsx_too_big", "工作簿解压后过大", "the workbook unpacks to more than 1 GB")
    for part, sheet in _worksheets(zf).items():
        with zf.open(part) as stream:
            _scan_sheet(stream, sheet)


def _worksheets(zf: zipfile.ZipFile) -> dict[str, str]:
    """Return {part: sheet name} of every worksheet in the package (a part no sheet names: its path)."""
    names: dict[str, str] = {}
    try:
        targets = {r.get("Id"): r.get("Target", "") for r in ElementTree.fromstring(zf.read(RELS))}
        for sheet in ElementTree.fromstring(zf.read("xl/workbook.xml")).iter(f"{{{MAIN_NS}}}sheet"):
            target = targets.get(sheet.get(f"{{{REL_NS}}}id"), "")
            part = target.lstrip("/") if target.startswith("/") else posixpath.normpath("xl/" + target)
            names[part] = sheet.get("name", part)
    except (KeyError, ElementTree.ParseError):
        pass  # unnamed: every worksheet part is still looked at below
    parts = {n for n in zf.namelist() if n.startswith("xl/worksheets/") and n.endswith(".xml")}
    return {part: names.get(part, part) for part in sorted(parts)}


_REF = re.compile(r"([A-Z]{1,3})([0-9]{1,7})")


def _column_number(letters: str) -> int:
    n = 0
    for ch in letters:
        n = n * 26 + ord(ch) - 64
    return n


class _Refused(Exception):
    """Stops the scan of a sheet at the first thing too large in it."""


def _scan_sheet(stream: IO[bytes], sheet: str) -> None:
    """Refuse a sheet whose used range passes MAX_SHEET_ROWS or MAX_SHEET_CELLS, or with over MAX_MERGED ranges.

    Streamed through expat from the sheet's XML, before the reader makes a cell: nothing of the
    sheet is kept, and the scan stops at the first cell too far.
    """
    at = {"row": 0, "col": 0, "rows": 0, "cols": 0, "open": 0, "merged": 0}

    def start(name: str, attrs: dict[str, str]) -> None:
        tag = name.rsplit(":", 1)[-1]
        if tag == "row":
            r = attrs.get("r", "")
            at["row"], at["col"] = (int(r) if r.isdigit() else at["row"] + 1), 0
        elif tag == "c":
            ref = _REF.fullmatch(attrs.get("r", ""))
            at["col"] = _column_number(ref.group(1)) if ref else at["col"] + 1
            at["row"] = int(ref.group(2)) if ref else at["row"]
            at["open"] = 1
        elif tag in ("v", "is", "f") and at["open"]:  # the cell holds a value, an inline string or a formula
            at["open"] = 0
            rows, cols = max(at["rows"], at["row"]), max(at["cols"], at["col"])
            if rows > MAX_SHEET_ROWS or rows * cols > MAX_SHEET_CELLS:
                raise _Refused(f"{get_column_letter(min(at['col'], 18_278))}{at['row']}")
            at["rows"], at["cols"] = rows, cols
        elif tag == "mergeCell":
            at["merged"] += 1
            if at["merged"] > MAX_MERGED:
                raise _Refused("")

    parser = expat.ParserCreate()
    parser.StartElementHandler = start
    try:
        parser.ParseFile(stream)
    except _Refused as refused:
        far = str(refused)
        if not far:
            raise MalformedInput.one(
                "sheet_too_many_merged",
                f"工作表“{sheet}”的合并单元格超过 {MAX_MERGED} 处：请取消多余的合并后另存重试",
                f"sheet {sheet!r} has more than {MAX_MERGED} merged ranges: unmerge them and save again",
            ) from None
        raise MalformedInput.one(
            "sheet_too_large",
            f"工作表“{sheet}”的 {far} 单元格有内容，使用范围过大（至多 {MAX_SHEET_ROWS} 行、"
            f"{MAX_SHEET_CELLS} 个单元格）：请删除多余的行列后另存重试",
            f"sheet {sheet!r} holds a value in {far}: its used range is too large "
            f"(at most {MAX_SHEET_ROWS} rows, {MAX_SHEET_CELLS} cells); delete the stray rows and columns",
        ) from None
    except expat.ExpatError:
        pass  # not well-formed: the reader says so


def _fixed_width(f: Field, digits: str, known: set[str] | None) -> str | None:
    """Return DIGITS with the zeros Excel dropped, when only one width makes a code F takes (KNOWN: its list)."""
    if known is not None and digits in known:
        return None
    if known is None and f.pattern and re.search(f.pattern, digits):
        return None

    def fits(code: str) -> bool:
        return code in known if known is not None else bool(f.pattern and re.search(f.pattern, code))

    found = [w for w in range(len(digits) + 1, f.max_length + 1) if fits(digits.zfill(w))]
    return digits.zfill(found[0]) if len(found) == 1 else None


_DATE = re.compile(r"^(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})日?$")
EXCEL_EPOCH = dt.date(1899, 12, 30)


class _CellError(Exception):
    def __init__(self, code: str, zh: str, en: str) -> None:
        super().__init__(code)
        self.code, self.zh, self.en = code, zh, en


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _value(f: Field, raw: Any, notes: list[dict[str, Any]], known: set[str] | None = None) -> Any:
    """Return cell RAW as field F's value (None for blank), or raise _CellError (KNOWN: F's code list)."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if isinstance(raw, bool):
        raise _CellError("cell_invalid", f"{f.zh}不能是逻辑值 TRUE/FALSE", f"{f.name} cannot be TRUE/FALSE")
    if f.kind == "code":
        if isinstance(raw, float | int):
            if not float(raw).is_integer() or raw < 0:
                raise _CellError("cell_invalid", f"{f.zh}不是编码：{raw}", f"{f.name} is not a code: {raw}")
            if raw >= 1e15:  # Excel keeps 15 significant digits: the last ones are gone
                raise _CellError(
                    "code_as_number",
                    f"{f.zh} 被 Excel 存成了数字，超过 15 位的末几位已丢失：请把该列设为文本后重新填写",
                    f"{f.name} was stored as a number of more than 15 digits; its last digits are lost: "
                    "format the column as text and type it again",
                )
            digits = str(int(raw))
            restored = _fixed_width(f, digits, known)
            if restored is not None:
                notes.append(
                    {
                        "code": "leading_zeros_restored",
                        "message": f"{f.zh} {digits} 被存成数字，已补足前导零为 {restored} "
                        f"({f.name}: leading zeros restored)",
                        "field": f.name,
                    }
                )
                return restored
            if f.pattern and not re.search(f.pattern, digits):
                raise _CellError(
                    "code_as_number",
                    f"{f.zh} {digits} 被 Excel 存成了数字，前导零已丢失且位数不确定：请把该列设为文本后重新填写",
                    f"{f.name} {digits} was stored as a number; its leading zeros are lost and its width "
                    "is not fixed: format the column as text and type it again",
                )
            return digits
        return str(raw).strip()
    if f.kind in ("text", "enum"):
        if isinstance(raw, float | int):
            return _number_text(raw)
        if isinstance(raw, dt.datetime | dt.date):
            return raw.isoformat()[:10]
        return str(raw).strip()
    if f.kind == "int":
        if isinstance(raw, float | int) and float(raw).is_integer():
            return int(raw)
        if isinstance(raw, str) and re.fullmatch(r"-?\d+", raw.strip().replace(",", "")):
            return int(raw.strip().replace(",", ""))
        raise _CellError("cell_invalid", f"{f.zh}应为整数：{str(raw)[:30]}", f"{f.name} must be a whole number")
    if f.kind == "float":
        if isinstance(raw, float | int):
            return float(raw)
        try:
            return float(str(raw).strip().replace(",", ""))
        except ValueError:
            raise _CellError("cell_invalid", f"{f.zh}应为数字：{str(raw)[:30]}", f"{f.name} must be a number") from None
    # a date: an Excel date, a serial number, or written out
    if isinstance(raw, dt.datetime):
        return raw.date()
    if isinstance(raw, dt.date):
        return raw
    if isinstance(raw, float | int) and 1 <= raw < 2_958_466:
        return EXCEL_EPOCH + dt.timedelta(days=int(raw))
    found = _DATE.match(str(raw).strip())
    if found:
        try:
            return dt.date(*map(int, found.groups()))
        except ValueError:
            pass
    raise _CellError("cell_invalid", f"{f.zh}不是日期：{str(raw)[:30]}（应为 YYYY-MM-DD）", f"{f.name} is not a date")


def _geometry(header: _Header, row: list[Any]) -> tuple[dict[str, Any] | None, str | None]:
    """Return the row's geometry (GeoJSON) from its WKT or lon/lat cells, or (None, why it cannot be read)."""
    cells = {m: row[c] if c < len(row) else "" for c, m in header.columns.items() if m in ("@wkt", "@lon", "@lat")}
    wkt = cells.get("@wkt")
    if isinstance(wkt, str) and wkt.strip():
        try:
            geom = shapely.from_wkt(wkt.strip())
        except shapely.errors.GEOSException:
            return None, "wkt"
        if geom is None or geom.is_empty:
            return None, "wkt"
        return orjson.loads(shapely.to_geojson(geom)), None
    lon, lat = cells.get("@lon"), cells.get("@lat")
    if lon in ("", None) and lat in ("", None):
        return None, None
    try:
        x, y = float(str(lon).strip()), float(str(lat).strip())
    except ValueError:
        return None, "lonlat"
    return {"type": "Point", "coordinates": [x, y]}, None


PLACEHOLDER = {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [0, 0]}}
"""What stands in the features for a row refused while read (the checks never see it)."""


def read_ledger(session: Session, layer: Layer, body: bytes | Path, mode: ImportMode | None) -> Ledger:
    """Read the ledger in BODY (an .xlsx workbook) as LAYER's features for the upload pipeline.

    MODE ``add`` refuses a row whose code is stored (already_exists); ``update`` a row whose
    code is not (not_found), takes the stored value of every column the sheet lacks and the
    stored shape of a row without one. Without MODE: add when the sheet has a geometry
    column, else update. Rows without geometry take the shape of the stored feature with their
    code, else with their address (one match, in what the user may read); the rest: no_shape.
    """
    labels = header_labels(layer)
    book = _open(body)
    try:
        name, rows, header = _pick_sheet(book, layer, labels)
    except CalamineError as exc:
        raise _unreadable(exc) from None
    finally:
        book.close()
    present = set(header.columns.values())
    missing = [f for f in layer.fields if f.required and f.name not in present]
    has_geometry = "@wkt" in present or {"@lon", "@lat"} <= present
    mode = mode or ("add" if has_geometry else "update")
    key = layer.key_field
    if key not in present or (mode == "add" and missing):
        shown = [layer.field(key)] if key not in present else missing
        raise InvalidInput.one(
            "missing_columns",
            f"工作表“{name}”缺少必填列：{'、'.join(f.zh for f in shown)}（表头在第 {header.row + 1} 行）",
            f"sheet {name!r} lacks required columns: {', '.join(f.name for f in shown)}",
            field=shown[0].name,
        )
    data = [(n, r) for n, r in enumerate(rows[header.row + 1 :], start=header.row + 2) if _filled(r)]
    if len(data) > MAX_IMPORT_ROWS:
        raise InvalidInput.one(
            "too_many_rows",
            f"工作表有 {len(data)} 行数据，超过上限 {MAX_IMPORT_ROWS} 行：请分批导入",
            f"the sheet has {len(data)} rows, more than {MAX_IMPORT_ROWS}: import it in parts",
        )
    ledger = Ledger(b"", [n for n, _ in data], mode, name)
    if header.unknown:
        ledger.warnings.append(
            {
                "code": "unknown_columns",
                "message": f"以下列无法识别，已忽略：{'、'.join(header.unknown)} (unknown columns left out)",
                "columns": header.unknown,
            }
        )
    parsed: list[tuple[int, dict[str, Any], dict[str, Any] | None, Any]] = []
    known = {f.name: set(f.known()) for f in layer.fields if f.known is not None and f.name in present}
    for index, (sheet_row, row) in enumerate(data):
        props, geometry, version = _parse_row(layer, header, row, index, sheet_row, ledger, known)
        if props is not None:
            parsed.append((index, props, geometry, version))
    shapes = _match(session, layer, parsed, present, ledger)
    features = []
    for index in range(len(data)):
        if index in ledger.rejected or index not in shapes:
            features.append(PLACEHOLDER)
            continue
        props = {k: _plain(v) for k, v in ledger.new_values[index].items()}
        features.append({"type": "Feature", "properties": props, "geometry": shapes[index]})
    ledger.geojson = orjson.dumps({"type": "FeatureCollection", "features": features})
    return ledger


def _filled(row: Sequence[Any]) -> bool:
    return any(v not in ("", None) for v in row)


def _parse_row(
    layer: Layer,
    header: _Header,
    row: list[Any],
    index: int,
    sheet_row: int,
    ledger: Ledger,
    known: dict[str, set[str]],
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, Any]:
    """Return one row's (properties, geometry, version), or Nones with the row refused in LEDGER."""
    props: dict[str, Any] = {}
    notes: list[dict[str, Any]] = []
    problems: list[Problem] = []
    version = None
    for c, meaning in header.columns.items():
        raw = row[c] if c < len(row) else ""
        if meaning == "@version":
            version = raw if isinstance(raw, float | int) else None
        if meaning.startswith("@"):
            continue
        f = layer.field(meaning)
        try:
            props[f.name] = _value(f, raw, notes, known.get(f.name))
        except _CellError as exc:
            problems.append(_problem(exc.code, exc.zh, exc.en, index, f.name, sheet_row))
    geometry, unreadable = _geometry(header, row)
    if unreadable:
        what = ("图形(WKT)", "WKT") if unreadable == "wkt" else ("经纬度", "lon/lat")
        problems.append(
            _problem(
                "geometry_unreadable",
                f"{what[0]}无法读取",
                f"the {what[1]} cells cannot be read",
                index,
                "geometry",
                sheet_row,
            )
        )
    if notes:
        ledger.notes[index] = notes
    if problems:
        _refuse(ledger, index, props.get(layer.key_field), problems)
        return None, None, None
    return props, geometry, version


def _refuse(ledger: Ledger, index: int, key: Any, problems: list[Problem]) -> None:
    entry: dict[str, Any] = {"index": index, "status": "rejected", "problems": [p.as_dict() for p in problems]}
    if isinstance(key, str):
        entry["key"] = key[:60]
    ledger.rejected[index] = entry


def _stored(session: Session, layer: Layer, column: str, values: list[str]) -> list[dict[str, Any]]:
    """Return the stored rows (what this user may read; personal fields as shown) whose COLUMN is one of VALUES."""
    if not values:
        return []
    personal = set(personal_fields(layer))
    picked = [f"({shown_function(layer)}(t.id) ->> '{n}')" if n in personal else f"t.{n}" for n in layer.field_names]
    sql = (
        f"SELECT t.id, t.version, ST_AsGeoJSON(t.geom, 15), {', '.join(picked)} "
        f"FROM unnest(CAST(:v AS text[])) AS k(v) JOIN {layer.table} t ON t.{column} = k.v"
    )
    out = []
    for fid, version, geojson, *values_ in session.execute(text(sql), {"v": values}):
        row = dict(zip(layer.field_names, values_, strict=True))
        row.update({"@id": fid, "@version": version, "@geometry": orjson.loads(geojson)})
        out.append(row)
    return out


def _match(
    session: Session,
    layer: Layer,
    parsed: list[tuple[int, dict[str, Any], dict[str, Any] | None, Any]],
    present: set[str],
    ledger: Ledger,
) -> dict[int, dict[str, Any]]:
    """Match rows to stored features (code, then address), fill what update keeps, refuse what cannot be.

    Return each row's geometry (its own, else its stored feature's).
    """
    shapes: dict[int, dict[str, Any]] = {}
    key = layer.key_field
    codes = sorted({p[key] for _, p, _, _ in parsed if p.get(key)})
    by_key = {r[key]: r for r in _stored(session, layer, key, codes)}
    address = address_field(layer)
    by_address: dict[str, list[dict[str, Any]]] = {}
    if address is not None:
        wanted = {p[address.name] for _, p, g, _ in parsed if g is None and p.get(address.name)}
        for r in _stored(session, layer, address.name, sorted(wanted)):
            by_address.setdefault(r[address.name], []).append(r)
    for index, props, geometry, version in parsed:
        row = ledger.rows[index]
        code = props.get(key)
        stored = by_key.get(code) if code else None
        if ledger.mode == "add" and stored is not None:
            message = (
                f"编码 {code} 已存在：新增导入不改已有要素，请用更新导入",
                f"{key} {code} is already stored: an add import changes nothing stored; use update",
            )
            ledger.rejected[index] = _entry(index, code, _problem("already_exists", *message, index, key, row))
            continue
        if stored is None and geometry is None and address is not None and props.get(address.name):
            matches = by_address.get(props[address.name], [])
            if len(matches) == 1 and ledger.mode == "add":
                geometry = matches[0]["@geometry"]  # a new feature at a stored one's address: its shape lent
            elif len(matches) == 1 and not code:
                stored = matches[0]  # the row names its feature by address
                props[key] = code = stored[key]
        if geometry is None and stored is None:
            ledger.unmatched.append(row)
            ledger.rejected[index] = _entry(index, code, _no_shape(layer, index, row))
            continue
        if ledger.mode == "update" and stored is None:
            message = (
                f"编码 {code or '（空）'} 不在库中（或不在您的范围内）：更新导入只改已有要素，新要素请用新增导入",
                f"{key} {code!r} is not stored (or not in your area): an update import changes stored features "
                "only; add new ones with an add import",
            )
            ledger.rejected[index] = _entry(index, code, _problem("not_found", *message, index, key, row))
            continue
        if stored is not None:
            if version is not None and int(version) != stored["@version"]:
                message = (
                    f"此行导出时为第 {int(version)} 版，库中现为第 {stored['@version']} 版：请重新导出后再改",
                    f"exported at version {int(version)}, stored now at {stored['@version']}: export again",
                )
                ledger.rejected[index] = _entry(index, code, _problem("version_conflict", *message, index, key, row))
                continue
            _keep_stored(layer, props, stored, present)
            ledger.old_values[index] = {n: stored[n] for n in layer.field_names}
            geometry = geometry or stored["@geometry"]
        if geometry is not None:  # always, by now: its own, or its stored feature's
            shapes[index] = geometry
            ledger.new_values[index] = props
    return shapes


def _keep_stored(layer: Layer, props: dict[str, Any], stored: dict[str, Any], present: set[str]) -> None:
    """Fill PROPS from the STORED feature where the sheet has no column; keep a personal value sent back unchanged."""
    personal = set(personal_fields(layer))
    for name in layer.field_names:
        if name not in present:
            props[name] = stored[name]
        elif name in personal and stored[name] is not None and props.get(name) is not None:
            sent = str(props[name])
            if sent == stored[name]:  # the same value sent back: kept, never written or reported
                props[name] = mask_text(stored[name]) if not looks_masked_text(stored[name]) else stored[name]


def _no_shape(layer: Layer, index: int, row: int) -> Problem:
    return _problem(
        "no_shape",
        f"第 {row} 行没有图形，按编码和地址都匹配不到已有的{layer.zh}（或匹配到多个）：请补充图形或核对编码、地址",
        f"row {row} has no geometry and matches no stored feature by code or address (or several)",
        index,
        "geometry",
        row,
    )


def _entry(index: int, key: Any, problem: Problem) -> dict[str, Any]:
    entry: dict[str, Any] = {"index": index, "status": "rejected", "problems": [problem.as_dict()]}
    if isinstance(key, str):
        entry["key"] = key[:60]
    return entry


def rows_of(book_bytes: bytes, sheet: str) -> Iterator[list[Any]]:
    """Yield the rows of SHEET in BOOK_BYTES (for tests and tools)."""
    book = CalamineWorkbook.from_filelike(io.BytesIO(book_bytes))
    try:
        yield from (list(r) for r in book.get_sheet_by_name(sheet).to_python(skip_empty_area=False))
    finally:
        book.close()
