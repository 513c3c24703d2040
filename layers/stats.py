"""Statistics that follow the map's filter: counts, area in 亩, the layer's own figures, a roll-up per unit.

What can be filtered and counted is read from the declaration: the fields marked ``filter``
and ``count``, the layer's ``counts`` (idle, revitalised…), the hierarchy's levels and the
layers holding their units. A filter is keyed by query parameter: a field's (``land_use``),
or ``status`` for the field the layer is styled by. Two SQL statements per request, three
with a roll-up, whatever the size.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from layers import hierarchy
from layers.base import REGISTRY, Field, Layer, match_sql
from spatial.errors import InvalidInput
from spatial.geometry import STORAGE_SRID, mu_from_m2

NOTHING = "-"
"""The value the map sends when no value of a field is ticked: it matches nothing."""
MAX_VALUES = 50
MAX_PREFIXES = 20
CODE_PREFIX = re.compile(r"[0-9A-Za-z]{1,5}")
UNASSIGNED = "未归属 unassigned"


@dataclass
class Filter:
    """What the planner narrowed the map to: a unit, a view, values of fields, dates."""

    scope: str | None = None
    bbox: tuple[float, float, float, float] | None = None
    values: dict[str, list[str]] = field(default_factory=dict)
    """Query parameter (a field's, or ``status``) → the values kept (prefixes, for a code list)."""
    before: dict[str, dt.date] = field(default_factory=dict)
    """Query parameter of a date field (``idle_since_before``) → features dated before this day."""

    def __bool__(self) -> bool:
        """Tell whether the filter narrows anything."""
        return bool(self.scope or self.bbox or self.values or self.before)

    def label(self, layer: Layer) -> str:
        """Return the filter as a title block says it (状态 闲置；地类 07), empty for none."""
        parts = []
        for f in layer.filter_fields:
            param = layer.filter_param(f)
            name = "状态" if f.name == layer.style.by else (f.filter_zh or f.zh)
            if param in self.values:
                parts.append(f"{name} " + "、".join(self.values[param]))
            if param in self.before:
                parts.append(f"{name}早于 {self.before[param].isoformat()}")
        return "；".join(parts)


def _invalid(zh: str, en: str, name: str) -> InvalidInput:
    return InvalidInput.one("filter_invalid", zh, en, field=name)


def filter_params() -> tuple[set[str], set[str]]:
    """Return the query parameters some layer filters by: (value parameters, date parameters)."""
    values: set[str] = set()
    dates: set[str] = set()
    for layer in REGISTRY.values():
        for f in layer.filter_fields:
            (dates if f.kind == "date" else values).add(layer.filter_param(f))
    return values, dates


def parse_filter(
    raw: Mapping[str, Iterable[str]], *, scope: str | None = None, bbox: tuple[float, float, float, float] | None = None
) -> Filter:
    """Return the filter given by query parameters RAW (each a list of comma-separated values).

    Only parameters some layer filters by are read; their form is checked here (a code prefix
    is 1–5 letters or digits, a date is YYYY-MM-DD), what a layer can take when it is applied.
    """
    value_params, date_params = filter_params()
    flt = Filter(scope=scope, bbox=bbox)
    for param in sorted(value_params & raw.keys()):
        values = sorted({v.strip() for item in raw[param] for v in item.split(",") if v.strip()})
        if not values:
            continue
        if len(values) > MAX_VALUES or any(len(v) > 60 or not v.isprintable() for v in values):
            raise _invalid(f"“{param}”的取值无效（至多 {MAX_VALUES} 个）", f"bad values of {param!r}", param)
        prefixes = any(_is_prefix_field(layer.filter_field(param)) for layer in REGISTRY.values())
        wrong = next((v for v in values if prefixes and v != NOTHING and not CODE_PREFIX.fullmatch(v)), None)
        if wrong is not None or (prefixes and len(values) > MAX_PREFIXES):
            shown = (wrong or "")[:20]
            raise _invalid(
                f"编码前缀无效：{shown}（1–5 位字母数字，至多 {MAX_PREFIXES} 个）",
                f"not a code prefix: {shown!r} (1–5 letters or digits, at most {MAX_PREFIXES})",
                param,
            )
        flt.values[param] = values
    for param in sorted(date_params & raw.keys()):
        given = [v for v in raw[param] if v.strip()]
        if not given:
            continue
        try:
            flt.before[param] = dt.date.fromisoformat(given[-1].strip())
        except ValueError:
            raise _invalid(
                f"日期无效：{given[-1][:20]}（应为 YYYY-MM-DD）", f"not a date: {given[-1][:20]!r}", param
            ) from None
    return flt


def _is_prefix_field(f: Field | None) -> bool:
    """Tell whether a filter on F keeps codes by prefix (a code list, by class) rather than by value."""
    return f is not None and f.kind == "code"


def _no_such_filter(layer: Layer, param: str) -> InvalidInput:
    offered = "、".join(layer.filter_param(f) for f in layer.filter_fields) or "无 none"
    return _invalid(
        f"{layer.zh}不能按“{param}”筛选（可用：{offered}）",
        f"{layer.en} cannot be filtered by {param!r} (offered: {offered})",
        param,
    )


def _known_values(layer: Layer, f: Field, param: str, values: list[str]) -> None:
    """Refuse VALUES the field F cannot hold (an enumeration's): they would be printed as given."""
    wrong = next((v for v in values if f.choices and v not in f.choices and v != NOTHING), None)
    if wrong is not None:
        raise _invalid(
            f"“{f.zh}”没有取值 {wrong[:40]!r}（可选：{'、'.join(f.choices)}）",
            f"{f.name} has no value {wrong[:40]!r} (one of: {', '.join(f.choices)})",
            param,
        )


def bbox_condition(alias: str = "") -> str:
    """Return the SQL condition keeping the features meeting the box ``:x0 :y0 :x1 :y1``."""
    at = f"{alias}." if alias else ""
    box = f"ST_MakeEnvelope(:x0, :y0, :x1, :y1, {STORAGE_SRID})"
    # `&&` spelled out: under row-level security only a LEAKPROOF operator (spatial/roles.py declares
    # it) may use the GiST index; the one ST_Intersects brings in is applied after the policy.
    return f"({at}geom && {box} AND ST_Intersects({at}geom, {box}))"


def filter_conditions(layer: Layer, flt: Filter) -> tuple[list[str], dict[str, Any]]:
    """Return the SQL conditions (on LAYER's own columns, unqualified) and parameters of FLT.

    Current versions only, for a versioned layer. Raises ``filter_invalid`` for a filter the
    layer does not offer. Shared by the statistics, the vector tiles, the features listed
    and the print, so what is drawn is what is counted.
    """
    conditions: list[str] = list(layer.in_force())
    params: dict[str, Any] = {}
    if flt.scope:
        found = layer.scope_condition(flt.scope)
        if found is None and hierarchy.level_of(flt.scope) is None:
            widths = "、".join(str(lv.digits) for lv in hierarchy.levels())
            names = "、".join(lv.label() for lv in hierarchy.levels())
            raise _invalid(
                f"范围编码 {flt.scope} 的位数不对：应为 {widths} 位之一（{names}）",
                f"scope {flt.scope} has no unit's length: a code has {widths.replace('、', ', ')} digits",
                "scope",
            )
        if found is None:
            raise _invalid(
                f"{layer.zh}不能按范围 {flt.scope} 筛选", f"{layer.en} cannot be narrowed to {flt.scope}", "scope"
            )
        conditions.append(found[0])
        params |= found[1]
    if flt.bbox:
        conditions.append(bbox_condition())  # as the map lists them
        params |= dict(zip(("x0", "y0", "x1", "y1"), flt.bbox, strict=True))
    for n, (param, values) in enumerate(sorted(flt.values.items())):
        f = layer.filter_field(param)
        if f is None or f.kind == "date":
            raise _no_such_filter(layer, param)
        kept = [v for v in values if v != NOTHING]  # none kept: an empty list, which matches nothing
        if _is_prefix_field(f):
            conditions.append(f"{f.name} LIKE ANY(CAST(:v{n} AS text[]))")
            params[f"v{n}"] = [v.replace("%", "") + "%" for v in kept]
        else:
            _known_values(layer, f, param, values)
            conditions.append(f"{f.name} = ANY(CAST(:v{n} AS text[]))")
            params[f"v{n}"] = kept
    for n, (param, day) in enumerate(sorted(flt.before.items())):
        f = layer.filter_field(param)
        if f is None or f.kind != "date":
            raise _no_such_filter(layer, param)
        conditions.append(f"{f.name} < :d{n}")
        params[f"d{n}"] = day
    return conditions, params


def filter_description(layer: Layer) -> dict[str, Any]:
    """Return what LAYER offers the map's filter and statistics, as the page's script and the API read it.

    Each filter: its query parameter, field, label, kind (``values``, ``prefix`` or ``before``)
    and the choices it offers; each counted field; each declared figure.
    """
    filters = []
    for f in layer.filter_fields:
        kind = "before" if f.kind == "date" else ("prefix" if _is_prefix_field(f) else "values")
        choices = [{"value": c, "label": c} for c in f.choices]
        if f.classes is not None:
            choices = [{"value": code, "label": f"{code} {name}"} for code, name in f.classes()]
        filters.append(
            {
                "param": layer.filter_param(f),
                "field": f.name,
                "zh": f.filter_zh or f.zh,
                "en": f.en,
                "kind": kind,
                "styled": f.name == layer.style.by,
                "choices": choices,
            }
        )
    return {
        "layer": layer.id,
        "filters": filters,
        "counted": [{"field": f.name, "zh": f.zh, "en": f.en} for f in layer.count_fields],
        "counts": [{"name": c.name, "zh": c.zh, "en": c.en, "rate": c.rate} for c in layer.counts],
        "counter": layer.counter_zh,
        "area": layer.has_area,
    }


def _where(conditions: list[str]) -> str:
    return (" WHERE " + " AND ".join(conditions)) if conditions else ""


def _figures_sql(layer: Layer) -> tuple[str, dict[str, Any]]:
    """Return the SELECT list of a layer's figures (n, area, then one per declared count) and its parameters."""
    area = "coalesce(sum(area_m2), 0)" if layer.has_area else "0"
    parts = ["count(*)", area]
    params: dict[str, Any] = {}
    for i, c in enumerate(layer.counts):
        parts.append(f"count(*) FILTER (WHERE {c.field} = ANY(CAST(:c{i} AS text[])))")
        params[f"c{i}"] = list(c.values)
    return ", ".join(parts), params


def _figures(layer: Layer, row: Any) -> dict[str, Any]:
    count, area, *counted = row
    out: dict[str, Any] = {
        "count": int(count),
        "area_m2": round(float(area), 2),
        "area_mu": round(mu_from_m2(float(area)), 2),
    }
    for c, n in zip(layer.counts, counted, strict=True):
        out[c.name] = int(n)
        if c.rate:
            out[f"{c.name}_rate"] = round(int(n) / int(count), 4) if count else 0.0
    return out


def _group_expression(f: Field) -> tuple[str, dict[str, str]]:
    """Return the SQL grouping F's values (by class, for a code list with classes) and the names of the groups."""
    if f.classes is not None:
        classes = dict(f.classes())
        width = len(next(iter(classes), ""))
        if width:
            return f"left({f.name}, {width})", classes
    return f.name, dict(f.labels()) if f.labels else {}


def _by_field(session: Session, layer: Layer, where: str, params: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Return, for every counted field, the count and area per value (one statement, grouping sets)."""
    fields = layer.count_fields
    if not fields:
        return {}
    groups = [_group_expression(f) for f in fields]
    area = "coalesce(sum(area_m2), 0)" if layer.has_area else "0"
    exprs = [expr for expr, _ in groups]
    flags = ", ".join(f"GROUPING({e})" for e in exprs)
    sets = ", ".join(f"({e})" for e in exprs)
    rows = session.execute(
        text(
            f"SELECT {flags}, {', '.join(exprs)}, count(*), {area} FROM {layer.table}{where} "
            f"GROUP BY GROUPING SETS ({sets}) ORDER BY {len(exprs) * 2 + 1} DESC"
        ),
        params,
    ).all()
    out: dict[str, list[dict[str, Any]]] = {f.name: [] for f in fields}
    k = len(fields)
    for row in rows:
        at = [g for g in range(k) if row[g] == 0][0]
        value, n, a = row[k + at], row[2 * k], row[2 * k + 1]
        names = groups[at][1]
        entry = {"value": value, "count": int(n), "area_m2": round(float(a), 2)}
        entry["area_mu"] = round(mu_from_m2(float(a)), 2)
        if value is not None and value in names:
            entry["label"] = names[value]
        out[fields[at].name].append(entry)
    return out


def _unit_layer(level: hierarchy.Level) -> Layer | None:
    """Return the layer holding the units of LEVEL (divisions, grids)."""
    return next((lay for lay in REGISTRY.values() if lay.units and level.id in lay.units.levels), None)


def unit_column(layer: Layer, level: hierarchy.Level) -> tuple[str, str] | None:
    """Return (SQL giving the code of the unit of LEVEL a feature of LAYER lies in, condition), or None.

    The locator naming that level, else a finer one cut to the level's code length (a street
    is the first 9 digits of its communities' codes), else a unit layer's own finer codes.
    """
    own = layer.locator_for(level.id)
    if own is not None:
        return own.field, "TRUE"
    finer = [loc for loc in layer.locators if loc.level and hierarchy.level(loc.level).digits > level.digits]
    if finer:
        loc = min(finer, key=lambda x: hierarchy.level(x.level or "").digits)
        return f"left({loc.field}, {level.digits})", "TRUE"
    if layer.units and any(hierarchy.level(i).digits > level.digits for i in layer.units.levels):
        return f"left({layer.key_field}, {level.digits})", f"char_length({layer.key_field}) > {level.digits}"
    return None


def _roll_up(
    session: Session, layer: Layer, flt: Filter, by: str, figures: str, fig_params: dict[str, Any]
) -> list[dict[str, Any]]:
    """Return the figures of each unit of level BY under FLT's scope and values: the whole unit's, not the view's.

    With a view (FLT's bbox), each row also says how many of them are in view (``in_view``).
    """
    try:
        level = hierarchy.level(by)
    except KeyError:
        level = None
    grouping = unit_column(layer, level) if level else None
    holder = _unit_layer(level) if level else None
    if level is None or grouping is None or holder is None or holder.units is None:
        raise InvalidInput.one(
            "group_invalid", f"不能按“{by}”汇总{layer.zh}", f"cannot roll {layer.en} up by {by!r}", field="by"
        )
    column, only = grouping
    conditions, params = filter_conditions(layer, dataclasses.replace(flt, bbox=None))
    in_view = "NULL"
    if flt.bbox:
        in_view = f"count(*) FILTER (WHERE {bbox_condition()})"
        params |= dict(zip(("x0", "y0", "x1", "y1"), flt.bbox, strict=True))
    level_sql, level_params = match_sql(holder.level_match(level.id), alias="u", prefix="lv")
    unit_where = " AND ".join([f"u.{holder.key_field} = g.key", *level_sql, *holder.in_force("u")])
    rows = session.execute(
        text(
            f"""
            SELECT g.key, f.unit_name, f.x0, f.y0, f.x1, f.y1, g.in_view, g.*
            FROM (
                SELECT {column} AS key, {in_view} AS in_view, {figures}
                FROM {layer.table}{_where([*conditions, only])} GROUP BY 1
            ) g
            LEFT JOIN LATERAL (
                SELECT u.{holder.units.name_field} AS unit_name,
                       ST_XMin(u.geom) AS x0, ST_YMin(u.geom) AS y0, ST_XMax(u.geom) AS x1, ST_YMax(u.geom) AS y1
                FROM {holder.table} u WHERE {unit_where} LIMIT 1
            ) f ON true
            ORDER BY 1 NULLS LAST
            """
        ),
        params | fig_params | level_params,
    ).all()
    return [
        {
            "code": key,
            "name": name if key is not None else UNASSIGNED,
            **_figures(layer, row[2:]),
            "in_view": None if seen is None else int(seen),
            "bbox": None if x0 is None else [round(v, 7) for v in (x0, y0, x1, y1)],
        }
        for key, name, x0, y0, x1, y1, seen, *row in rows
    ]


def statistics(session: Session, layer: Layer, flt: Filter, *, by: str | None = None) -> dict[str, Any]:
    """Return the counts, areas and declared figures of LAYER under FLT, per counted field, and a roll-up BY a level.

    The totals and the figures per value are those of FLT's view (its bbox) when it has one;
    each roll-up row is its whole unit's (under the same scope and values) with its name,
    its bounding box (for the map's drill-down) and how many of it are in view.
    """
    conditions, params = filter_conditions(layer, flt)
    where = _where(conditions)
    figures, fig_params = _figures_sql(layer)
    total = session.execute(text(f"SELECT {figures} FROM {layer.table}{where}"), params | fig_params).one()
    out: dict[str, Any] = {"layer": layer.id, "total": _figures(layer, total), "in_view": flt.bbox is not None}
    by_field = _by_field(session, layer, where, params)
    out["by_field"] = by_field
    if layer.style.by and layer.style.by in by_field:
        out["by_status"] = by_field[layer.style.by]
    if by:
        out["by"] = by
        out["rows"] = _roll_up(session, layer, flt, by, figures, fig_params)
    return out
