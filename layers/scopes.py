"""Scopes: the county, street, community or grid a planner or grid manager works in, and what lies in it."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

import shapely
from shapely.geometry.base import BaseGeometry

from layers.base import REGISTRY, Layer
from layers.stats import Filter, filter_conditions
from spatial.errors import InvalidInput, NotFound


def scope_unit(session: Session, scope: str, as_of: dt.date | None = None) -> tuple[BaseGeometry, str]:
    """Return the shape and name of the unit coded SCOPE (a division, or a grid in force on AS_OF)."""
    as_of = as_of or dt.date.today()
    for layer_id in ("divisions", "grids"):
        layer = REGISTRY[layer_id]
        tables = [layer.table, *([layer.history_table] if layer.history_table else [])]
        dated = (
            " AND valid_from <= :d AND (valid_to IS NULL OR valid_to > :d)" if "valid_to" in layer.field_names else ""
        )
        query = " UNION ALL ".join(f"SELECT name, ST_AsBinary(geom) FROM {t} WHERE code = :c{dated}" for t in tables)
        rows = session.execute(text(query), {"c": scope, "d": as_of}).all()
        if rows:
            return shapely.union_all([shapely.from_wkb(wkb) for _, wkb in rows]), str(rows[0][0])
    raise NotFound.one(
        "scope_not_found",
        f"没有编码为 {scope} 的区县、街道、社区或网格",
        f"no county, street, community or grid coded {scope}",
        field="scope",
    )


def scope_choices(session: Session) -> list[tuple[str, str, str]]:
    """Return (code, name, level) of every division and grid in force, in code order."""
    rows = session.execute(
        text(
            "SELECT code, name, level FROM divisions UNION ALL "
            "SELECT code, name, '网格' FROM grids WHERE valid_to IS NULL OR valid_to > current_date ORDER BY 1"
        )
    ).all()
    return [(str(code), str(name), str(level)) for code, name, level in rows]


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
        ["ST_Intersects(geom, ST_GeomFromWKB(:shape, 4490))" if shape is not None else "TRUE", *conditions]
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
