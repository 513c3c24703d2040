"""Scopes: the county, street, community or grid a planner or grid manager works in, and what lies in it."""

from __future__ import annotations

import datetime as dt
from typing import Any, NoReturn

from sqlalchemy import text
from sqlalchemy.orm import Session

import shapely
from shapely.geometry.base import BaseGeometry

from layers import hierarchy
from layers.base import REGISTRY, Layer
from layers.stats import Filter, filter_conditions
from spatial.errors import InvalidInput, NotFound
from spatial.geometry import STORAGE_SRID


def unit_layers() -> list[Layer]:
    """Return the layers holding units of the hierarchy, the widest levels first."""
    depth = {lv.id: n for n, lv in enumerate(hierarchy.levels())}
    held = [(layer, layer.units.levels) for layer in REGISTRY.values() if layer.units]
    return [layer for layer, ids in sorted(held, key=lambda pair: min(depth.get(i, 99) for i in pair[1]))]


def _unit_layer(scope: str) -> Layer | None:
    """Return the layer holding the unit coded SCOPE (by the level its length says)."""
    lv = hierarchy.level_of(scope)
    return next((lay for lay in unit_layers() if lv and lay.units and lv.id in lay.units.levels), None)


def scope_unit(session: Session, scope: str, as_of: dt.date | None = None) -> tuple[BaseGeometry, str]:
    """Return the shape and name of the unit coded SCOPE (a division, or a grid in force on AS_OF)."""
    as_of = as_of or dt.date.today()
    layer = _unit_layer(scope)
    if layer is not None and layer.units is not None:
        tables = [layer.table, *([layer.history_table] if layer.history_table else [])]
        dated = "".join(f" AND {c}" for c in layer.in_force(on=":d"))
        name, key = layer.units.name_field, layer.key_field
        query = " UNION ALL ".join(f"SELECT {name}, ST_AsBinary(geom) FROM {t} WHERE {key} = :c{dated}" for t in tables)
        rows = session.execute(text(query), {"c": scope, "d": as_of}).all()
        if rows:
            return shapely.union_all([shapely.from_wkb(wkb) for _, wkb in rows]), str(rows[0][0])
    names = "、".join(lv.label() for lv in hierarchy.levels())
    _not_found(scope, names)


def _not_found(scope: str, names: str) -> NoReturn:
    raise NotFound.one(
        "scope_not_found",
        f"没有编码为 {scope} 的{names}",
        f"no {', '.join(lv.label_en().lower() for lv in hierarchy.levels())} coded {scope}",
        field="scope",
    )


def scope_choices(session: Session) -> list[tuple[str, str, str]]:
    """Return (code, name, level name) of every unit in force, in code order."""
    parts = []
    for layer in unit_layers():
        units = layer.units
        assert units is not None
        level = units.level_field or f"'{hierarchy.level(units.levels[0]).label()}'"
        where = " AND ".join(layer.in_force()) or "TRUE"
        parts.append(f"SELECT {layer.key_field}, {units.name_field}, {level} FROM {layer.table} WHERE {where}")
    rows = session.execute(text(" UNION ALL ".join(parts) + " ORDER BY 1")).all()
    shown = {name: lv.label() for lv in hierarchy.levels() for name in lv.names}
    return [(str(code), str(name), shown.get(str(level), str(level))) for code, name, level in rows]


def features_in(
    session: Session,
    layer: Layer,
    shape: BaseGeometry | None,
    names: list[str],
    cap: int,
    flt: Filter | None = None,
) -> list[tuple[BaseGeometry, dict[str, Any]]]:
    """Return the geometry and the NAMES properties of LAYER's features in force within SHAPE (at most CAP).

    FLT, when given, narrows them as it narrows the map and its statistics.
    """
    conditions, params = filter_conditions(layer, flt or Filter())  # current versions, and the filter
    where = " AND ".join(
        [f"ST_Intersects(geom, ST_GeomFromWKB(:shape, {STORAGE_SRID}))" if shape is not None else "TRUE", *conditions]
    )
    rows = session.execute(
        text(f"SELECT {', '.join(names)}, ST_AsBinary(geom) FROM {layer.table} WHERE {where} LIMIT :cap"),
        params | {"shape": shapely.to_wkb(shape) if shape is not None else None, "cap": cap + 1},
    ).all()
    if len(rows) > cap:
        raise InvalidInput.one(
            "print_too_large",
            f"范围内要素超过 {cap:,} 个，请选更小的范围或更少的图层",
            f"more than {cap:,} features in scope: pick a smaller scope or fewer layers",
            field="scope",
        )
    return [(shapely.from_wkb(row[-1]), dict(zip(names, row[:-1], strict=True))) for row in rows]
