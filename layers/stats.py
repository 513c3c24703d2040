"""Statistics that follow the map's filter: counts, area in 亩, idle rate, revitalised, per community or grid.

The status field and the idle value of a layer come from its style declaration (the field
it is coloured by, the value that must stand out); "revitalised" is ``stage = 已盘活``
where the layer has a stage. One or two SQL statements per request, whatever the size.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from layers.base import Layer
from spatial.errors import InvalidInput

REVITALISED = "已盘活"
NOTHING = "-"
"""The value the map sends when no status is ticked: it matches nothing."""
STREET_DIGITS = 9


@dataclass
class Filter:
    """What the planner narrowed the map to."""

    scope: str | None = None
    bbox: tuple[float, float, float, float] | None = None
    status: Sequence[str] = ()
    land_use: Sequence[str] = ()
    ownership: Sequence[str] = ()
    idle_since_before: dt.date | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def said(self) -> str:
        """Return the filter as a wall map's title block says it (empty for none)."""
        parts = []
        if self.status:
            parts.append("状态 " + "、".join(self.status))
        if self.land_use:
            parts.append("地类 " + "、".join(self.land_use))
        if self.ownership:
            parts.append("权属 " + "、".join(self.ownership))
        if self.idle_since_before:
            parts.append(f"闲置早于 {self.idle_since_before.isoformat()}")
        return "；".join(parts)


def _no_such_filter(layer: Layer, name: str, zh: str) -> InvalidInput:
    zh_message = f"{layer.zh}没有{zh}，不能按它筛选"
    return InvalidInput.one("filter_invalid", zh_message, f"{layer.en} has no {name}", field=name)


def _known_values(layer: Layer, name: str, values: Sequence[str]) -> None:
    """Refuse VALUES the field NAME cannot hold (an enumeration's): they would be printed as given."""
    choices = layer.field(name).choices
    wrong = next((v for v in values if choices and v not in choices and v != NOTHING), None)
    if wrong is not None:
        label = layer.field(name).zh
        raise InvalidInput.one(
            "filter_invalid",
            f"“{label}”没有取值 {wrong[:40]!r}（可选：{'、'.join(choices)}）",
            f"{name} has no value {wrong[:40]!r} (one of: {', '.join(choices)})",
            field=name,
        )


def filter_conditions(layer: Layer, flt: Filter) -> tuple[list[str], dict[str, Any]]:
    """Return the SQL conditions (on LAYER's own columns, unqualified) and parameters of FLT.

    Current versions only, for a versioned layer. Raises ``filter_invalid`` for a filter on a
    field the layer does not have. Shared by the statistics and the vector tiles, so what is
    drawn is what is counted.
    """
    names = set(layer.field_names)
    conditions: list[str] = []
    params: dict[str, Any] = {}
    if flt.scope:
        if len(flt.scope) > 12 and "grid_code" in names:
            conditions.append("grid_code = :scope")
        elif "community_code" in names:
            conditions.append("community_code LIKE :scope_prefix")
        else:
            conditions.append("code LIKE :scope_prefix")
        params |= {"scope": flt.scope, "scope_prefix": flt.scope + "%"}
    if flt.bbox:
        conditions.append("ST_Intersects(geom, ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4490))")  # as the map lists them
        params |= dict(zip(("x0", "y0", "x1", "y1"), flt.bbox, strict=True))
    if flt.status:
        if not layer.style.by:
            raise _no_such_filter(layer, "status", "状态字段")
        _known_values(layer, layer.style.by, flt.status)
        conditions.append(f"{layer.style.by} = ANY(CAST(:status AS text[]))")
        params["status"] = list(flt.status)
    if flt.land_use:
        if "land_use_code" not in names:
            raise _no_such_filter(layer, "land_use", "地类")
        conditions.append("(" + " OR ".join(f"land_use_code LIKE :lu{i}" for i in range(len(flt.land_use))) + ")")
        params |= {f"lu{i}": code + "%" for i, code in enumerate(flt.land_use)}
    if flt.ownership and "ownership" not in names:
        raise _no_such_filter(layer, "ownership", "权属")
    if flt.ownership:
        _known_values(layer, "ownership", flt.ownership)
        conditions.append("ownership = ANY(CAST(:ownership AS text[]))")
        params["ownership"] = list(flt.ownership)
    if flt.idle_since_before and "idle_since" not in names:
        raise _no_such_filter(layer, "idle_since_before", "闲置起始日期")
    if flt.idle_since_before:
        conditions.append("idle_since < :idle_before")
        params["idle_before"] = flt.idle_since_before
    if "valid_to" in names:
        conditions.append("(valid_to IS NULL OR valid_to > current_date)")
    return conditions, params


def _where(layer: Layer, flt: Filter) -> tuple[str, dict[str, Any]]:
    conditions, params = filter_conditions(layer, flt)
    return (" WHERE " + " AND ".join(conditions)) if conditions else "", params


def statistics(session: Session, layer: Layer, flt: Filter, *, by: str | None = None) -> dict[str, Any]:
    """Return the counts, areas and idle figures of LAYER under FLT, and a roll-up BY street, community or grid.

    Each roll-up row carries its unit's name and bounding box (for the map's drill-down).
    """
    where, params = _where(layer, flt)
    status = layer.style.by
    idle = layer.style.emphasis
    names = set(layer.field_names)
    area = "coalesce(sum(area_m2), 0)" if layer.has_area else "0"
    idle_sql = f"count(*) FILTER (WHERE {status} = :idle)" if status and idle else "0"
    done_sql = "count(*) FILTER (WHERE stage = :done)" if "stage" in names else "NULL"
    params |= {"idle": idle, "done": REVITALISED}
    figures = f"count(*) AS n, {area} AS a, {idle_sql} AS i, {done_sql} AS d"
    total = session.execute(text(f"SELECT {figures} FROM {layer.table}{where}"), params).one()
    out: dict[str, Any] = {"layer": layer.id, "total": _figures(total)}
    if status:
        rows = session.execute(
            text(f"SELECT {status}, count(*), {area} FROM {layer.table}{where} GROUP BY 1 ORDER BY 2 DESC"), params
        ).all()
        out["by_status"] = [
            {"value": value, "count": n, "area_m2": round(a, 2), "area_mu": round(a * 3 / 2000, 2)}
            for value, n, a in rows
        ]
    column = {"street": "community_code", "community": "community_code", "grid": "grid_code"}.get(by or "")
    if by and (column is None or column not in names):
        raise InvalidInput.one(
            "group_invalid", f"不能按“{by}”汇总{layer.zh}", f"cannot roll {layer.en} up by {by!r}", field="by"
        )
    if column:
        # a street is the first 9 digits of its communities' codes (GB/T 2260 + 3-digit street number)
        group = f"left({column}, {STREET_DIGITS})" if by == "street" else column
        frame = "grids" if by == "grid" else "divisions"
        rows = session.execute(
            text(
                f"""
                SELECT g.key, f.name, g.n, g.a, g.i, g.d, f.x0, f.y0, f.x1, f.y1
                FROM (SELECT {group} AS key, {figures} FROM {layer.table}{where} GROUP BY 1) g
                LEFT JOIN LATERAL (
                    SELECT name, ST_XMin(geom) AS x0, ST_YMin(geom) AS y0, ST_XMax(geom) AS x1, ST_YMax(geom) AS y1
                    FROM {frame} WHERE code = g.key LIMIT 1
                ) f ON true
                ORDER BY 1 NULLS LAST
                """
            ),
            params,
        ).all()
        out["by"] = by
        out["rows"] = [
            {
                "code": key,
                "name": name if key is not None else "未归属 unassigned",
                **_figures((n, a, i, d)),
                "bbox": None if x0 is None else [round(v, 7) for v in (x0, y0, x1, y1)],
            }
            for key, name, n, a, i, d, x0, y0, x1, y1 in rows
        ]
    return out


def _figures(row: Any) -> dict[str, Any]:
    count, area, idle, done = row
    return {
        "count": int(count),
        "area_m2": round(float(area), 2),
        "area_mu": round(float(area) * 3 / 2000, 2),
        "idle": int(idle),
        "idle_rate": round(int(idle) / int(count), 4) if count else 0.0,
        "revitalised": None if done is None else int(done),
    }
