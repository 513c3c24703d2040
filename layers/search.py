"""Search by code, name or address across the layers, for the map's search box.

What is searched is declared: a layer's key (by prefix) and its fields marked ``searched``
(by the words typed); a hit is named by the layer's ``name_field``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from layers.base import REGISTRY, Layer
from layers.stats import Filter, filter_conditions


def _kept(layer: Layer, flt: Filter | None) -> tuple[str, dict[str, Any]]:
    """Return SQL telling whether a feature is kept by FLT (the map's filter of that layer), and its parameters."""
    if flt is None:
        return "TRUE", {}
    conditions, params = filter_conditions(layer, flt)
    return "(" + " AND ".join(conditions or ["TRUE"]) + ")", params


def search(
    session: Session, query: str, limit: int = 20, filters: dict[str, Filter] | None = None
) -> list[dict[str, Any]]:
    """Return features whose code starts with QUERY or whose searched fields contain it, exact codes first.

    FILTERS: the map's filter of some layers; each hit says whether that filter keeps it
    (``kept``: false for a hit the map does not draw now).
    """
    query = query.strip()
    if not query:
        return []
    like = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    found: list[dict[str, Any]] = []
    for layer in sorted(REGISTRY.values(), key=lambda lay: lay.order):
        key = layer.key_field
        searched = [f.name for f in layer.fields if f.searched and f.name != key]
        name = layer.name_field or "NULL"
        where = " OR ".join([f"{key} LIKE :prefix"] + [f"{f} ILIKE :like" for f in searched])
        current = "".join(f" AND {c}" for c in layer.in_force())
        kept, params = _kept(layer, (filters or {}).get(layer.id))
        rows = session.execute(
            text(
                f"""
                SELECT id, {key}, {name}, ST_XMin(geom), ST_YMin(geom), ST_XMax(geom), ST_YMax(geom), {key} = :q,
                       {kept}
                FROM {layer.table} WHERE ({where}){current}
                ORDER BY {key} = :q DESC, {key} LIMIT :limit
                """
            ),
            params | {"q": query, "prefix": query.replace("%", "") + "%", "like": like, "limit": limit},
        ).all()
        for fid, code, label, x0, y0, x1, y1, exact, is_kept in rows:
            found.append(
                {
                    "layer": layer.id,
                    "layer_zh": layer.zh,
                    "id": fid,
                    "code": code,
                    "name": label,
                    "bbox": [x0, y0, x1, y1],
                    "exact": bool(exact),
                    "kept": bool(is_kept),
                }
            )
    found.sort(key=lambda hit: (not hit["exact"], REGISTRY[hit["layer"]].order))
    return found[:limit]
