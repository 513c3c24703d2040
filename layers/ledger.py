"""Ledger rows (台账) of any declared layer: a page at a time, sorted, under the map's filter.

The rows are the features' properties as the features API shows them to the user (personal
fields full or masked by role), with the id, the version (the If-Match of an edit) and the
bounding box (the map frames a row with it). A page is fetched with one row more than asked,
which tells whether there is a next one; the rows matched are counted only up to
``COUNT_CAP`` (counting a county's million parcels under row-level security costs seconds):
the exact count is :func:`count_rows`, asked for apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from layers.base import Layer
from layers.features import properties_json, shown_value
from layers.stats import Filter, filter_conditions
from spatial.errors import InvalidInput, NotFound

MAX_SIZE = 500
DEFAULT_SIZE = 50
COUNT_CAP = 5_000
"""Rows counted at most with a page (100 pages of 50, ~20 ms); beyond it ``count: null`` (ask /rows/count)."""
DIRECTIONS = ("asc", "desc")


def sortable(layer: Layer) -> list[str]:
    """Return the names LAYER's rows sort by: its fields, its area, when last changed, its id."""
    return [*layer.field_names, *(("area_m2", "area_mu") if layer.has_area else ()), "updated_at", "id"]


@dataclass(frozen=True)
class Order:
    """How rows are sorted: by a field (or area, updated_at, id), ascending or descending."""

    by: str = "id"
    direction: str = "asc"


def check_order(layer: Layer, sort: str | None, direction: str | None, *, sees_personal: bool) -> Order:
    """Return the order asked for, or raise ``sort_invalid`` / ``sort_personal`` / ``dir_invalid``.

    A personal field sorts only for a role that sees it in full: the order of masked rows
    would tell what the masks hide.
    """
    by = sort or "id"
    if by not in sortable(layer):
        shown = by[:40]
        offered = ", ".join(sortable(layer))
        raise InvalidInput.one(
            "sort_invalid",
            f"{layer.zh}不能按“{shown}”排序（可用：{offered}）",
            f"{layer.en} cannot be sorted by {shown!r} (offered: {offered})",
            field="sort",
        )
    if by in layer.field_names and layer.field(by).personal and not sees_personal:
        raise InvalidInput.one(
            "sort_personal",
            f"“{layer.field(by).zh}”是个人信息，您的角色看到的是打码值，不能按它排序",
            f"{by} is personal data shown masked to your role: rows cannot be sorted by it",
            field="sort",
        )
    way = (direction or "asc").lower()
    if way not in DIRECTIONS:
        raise InvalidInput.one("dir_invalid", "排序方向应为 asc 或 desc", "dir must be asc or desc", field="dir")
    return Order(by, way)


def _where(layer: Layer, flt: Filter) -> list[Any]:
    conditions, params = filter_conditions(layer, flt)
    if not conditions:
        return []
    return [text(" AND ".join(f"({c})" for c in conditions)).bindparams(**params)]


def _order_by(layer: Layer, order: Order) -> list[Any]:
    model = layer.model
    name = "area_m2" if order.by == "area_mu" else order.by  # 亩 follow from m²: one index
    column = model.id if name == "id" else shown_value(layer, name)
    keys = [column] if name == "id" else [column, model.id]  # the id breaks ties: a row is on one page only
    return [k.desc() if order.direction == "desc" else k.asc() for k in keys]


def page_of(session: Session, layer: Layer, flt: Filter, order: Order, fid: int, size: int) -> int:
    """Return the page (of SIZE rows, from 1) holding row FID of LAYER under FLT in ORDER, or raise NotFound.

    It numbers every row the filter keeps: cheap for a view or a unit, seconds for a whole county.
    """
    model = layer.model
    numbered = select(model.id, func.row_number().over(order_by=_order_by(layer, order)).label("n"))
    inner = numbered.where(*_where(layer, flt)).subquery()
    n = session.execute(select(inner.c.n).where(inner.c.id == fid)).scalar()
    if n is None:
        raise NotFound.one(
            "row_not_found",
            f"{layer.zh} {fid} 不在当前筛选的台账中",
            f"{layer.en} {fid} is not among the rows the filter keeps",
            id=fid,
        )
    return (int(n) - 1) // size + 1


def rows(session: Session, layer: Layer, flt: Filter, order: Order, *, page: int, size: int) -> dict[str, Any]:
    """Return page PAGE (from 1) of SIZE rows of LAYER under FLT in ORDER, whether more follow, and a capped count."""
    model = layer.model
    where = _where(layer, flt)
    offset = (page - 1) * size
    box = [func.ST_XMin(model.geom), func.ST_YMin(model.geom), func.ST_XMax(model.geom), func.ST_YMax(model.geom)]
    # The page's ids first, its rows built after: PostgreSQL would build every row's JSON before sorting.
    ids = select(model.id).where(*where).order_by(*_order_by(layer, order)).limit(size + 1).offset(offset).subquery()
    query = select(model.id, model.version, *box, properties_json(layer)).join(ids, ids.c.id == model.id)
    found = session.execute(query.order_by(*_order_by(layer, order))).all()
    more = len(found) > size
    data = [
        {"id": row[0], "version": row[1], "bbox": [round(v, 7) for v in row[2:6]], "properties": row[6]}
        for row in found[:size]
    ]
    count: int | None
    if more:
        capped = select(model.id).where(*where).limit(COUNT_CAP + 1).subquery()
        n = session.execute(select(func.count()).select_from(capped)).scalar_one()
        count = n if n <= COUNT_CAP else None
    elif data or page == 1:
        count = offset + len(data)
    else:  # past the end (a filter narrowed while on a far page): how far it goes
        count = count_rows(session, layer, flt)
    if count is not None:
        last_page = max(1, math.ceil(count / size))
    else:
        last_page = max(page + 1 if more else page, math.ceil(COUNT_CAP / size))
    return {
        "layer": layer.id,
        "page": page,
        "size": size,
        "sort": order.by,
        "dir": order.direction,
        "more": more,
        "count": count,
        "count_capped": count is None,
        "count_cap": COUNT_CAP,
        "last_page": last_page,
        "data": data,
    }


def count_rows(session: Session, layer: Layer, flt: Filter) -> int:
    """Return how many rows of LAYER match FLT (exact: a county's parcels take a while)."""
    model = layer.model
    return int(session.execute(select(func.count()).select_from(model).where(*_where(layer, flt))).scalar_one())
