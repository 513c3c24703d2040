"""Search by code, name or address across the layers, for the map's search box."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from layers.base import REGISTRY

SEARCHED = ("code", "name", "address", "house_number")


def search(session: Session, query: str, limit: int = 20) -> list[dict[str, Any]]:
    """Return features whose code starts with QUERY or whose name or address contains it, exact codes first."""
    query = query.strip()
    if not query:
        return []
    like = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    found: list[dict[str, Any]] = []
    for layer in sorted(REGISTRY.values(), key=lambda lay: lay.order):
        fields = [f for f in SEARCHED if f in layer.field_names]
        name = "name" if "name" in layer.field_names else "NULL"
        where = " OR ".join(["code LIKE :prefix"] + [f"{f} ILIKE :like" for f in fields if f != "code"])
        current = " AND (valid_to IS NULL OR valid_to > current_date)" if "valid_to" in layer.field_names else ""
        rows = session.execute(
            text(
                f"""
                SELECT id, code, {name}, ST_XMin(geom), ST_YMin(geom), ST_XMax(geom), ST_YMax(geom), code = :q
                FROM {layer.table} WHERE ({where}){current}
                ORDER BY code = :q DESC, code LIMIT :limit
                """
            ),
            {"q": query, "prefix": query.replace("%", "") + "%", "like": like, "limit": limit},
        ).all()
        for fid, code, label, x0, y0, x1, y1, exact in rows:
            found.append(
                {
                    "layer": layer.id,
                    "layer_zh": layer.zh,
                    "id": fid,
                    "code": code,
                    "name": label,
                    "bbox": [x0, y0, x1, y1],
                    "exact": bool(exact),
                }
            )
    found.sort(key=lambda hit: (not hit["exact"], REGISTRY[hit["layer"]].order))
    return found[:limit]
