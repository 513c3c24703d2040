"""Vector tiles (MVT) of a layer: only what styling and popups need, simplified by zoom.

A tile is built by PostGIS (``ST_AsMVT``) in one statement; the properties are the feature
id, its code and name, and the field the layer is styled by (popups fetch the full ledger
by id). Tiles outside the layer's extent are answered without asking the database.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from layers.base import Layer
from layers.stats import Filter, filter_conditions
from spatial.errors import InvalidInput

EXTENT = 4096
BUFFER = 64
MAX_ZOOM = 22
WEB_MERCATOR_HALF = 20037508.342789244


@dataclass(frozen=True)
class Tile:
    """A tile address, checked."""

    z: int
    x: int
    y: int

    def bounds_lonlat(self) -> tuple[float, float, float, float]:
        """Return the tile's (west, south, east, north) in degrees."""
        n = 2**self.z

        def lat(row: int) -> float:
            return math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * row / n))))

        return self.x / n * 360 - 180, lat(self.y + 1), (self.x + 1) / n * 360 - 180, lat(self.y)


def tile(z: int, x: int, y: int) -> Tile:
    """Return the tile Z/X/Y or raise with code tile_invalid."""
    if not 0 <= z <= MAX_ZOOM or not 0 <= x < 2**z or not 0 <= y < 2**z:
        raise InvalidInput.one(
            "tile_invalid",
            f"瓦片编号无效：{z}/{x}/{y}（缩放级别 0–{MAX_ZOOM}，行列号 0–2^z−1）",
            f"no tile {z}/{x}/{y} (zoom 0–{MAX_ZOOM}, column and row 0–2^z−1)",
            field="tile",
        )
    return Tile(z, x, y)


def tile_properties(layer: Layer) -> list[str]:
    """Return the properties a tile carries for LAYER: id, code, name and the styled field."""
    names: list[str] = [name for name in ("code", "name") if name in layer.field_names]
    if layer.style.by and layer.style.by not in names:
        names.append(layer.style.by)
    return names


def _sql(layer: Layer, simplify: bool, conditions: Sequence[str] = ()) -> str:
    columns = ", ".join(f"t.{name}" for name in tile_properties(layer))
    geom = "ST_Transform(t.geom, 3857)"
    if simplify:  # below street level, drop detail finer than a quarter pixel before clipping
        geom = f"ST_SimplifyPreserveTopology({geom}, :pixel / 4)"
    versioned = "".join(f" AND {condition}" for condition in conditions)
    return f"""
        WITH bounds AS (SELECT ST_TileEnvelope(:z, :x, :y) AS env),
        rows AS (
            SELECT t.id, {columns},
                   ST_AsMVTGeom({geom}, bounds.env, {EXTENT}, {BUFFER}, true) AS geom
            FROM {layer.table} t, bounds
            WHERE t.geom && ST_Transform(ST_Expand(bounds.env, :margin), 4490){versioned}
        )
        SELECT ST_AsMVT(rows, :layer, {EXTENT}, 'geom', 'id') FROM rows WHERE geom IS NOT NULL
    """


def render_tile(
    session: Session, layer: Layer, address: Tile, extent: list[float] | None, flt: Filter | None = None
) -> bytes:
    """Return the MVT bytes of LAYER's features under FLT in the tile ADDRESS (empty when nothing is there).

    FLT is the map's filter (scope, status, land use, ownership, idle since): what is drawn
    is what the statistics count. Current versions only, for a versioned layer.
    """
    if extent is None:
        return b""
    west, south, east, north = address.bounds_lonlat()
    if east < extent[0] or west > extent[2] or north < extent[1] or south > extent[3]:
        return b""  # nothing of the layer here: no query
    size = 2 * WEB_MERCATOR_HALF / 2**address.z
    conditions, params = filter_conditions(layer, flt or Filter())
    params |= {
        "z": address.z,
        "x": address.x,
        "y": address.y,
        "layer": layer.id,
        "margin": size * BUFFER / EXTENT,
        "pixel": size / EXTENT,
    }
    data = session.execute(text(_sql(layer, address.z < 15, conditions)), params).scalar()
    return bytes(data or b"")


def tilejson(layer: Layer, base_url: str, extent: list[float] | None) -> dict[str, Any]:
    """Return the TileJSON 3.0 document of LAYER's vector tiles."""
    fields = {name: f"{layer.field(name).zh} {layer.field(name).en}" for name in tile_properties(layer)}
    return {
        "tilejson": "3.0.0",
        "name": f"{layer.zh} {layer.en}",
        "scheme": "xyz",
        "tiles": [f"{base_url}/tiles/{layer.id}/{{z}}/{{x}}/{{y}}.pbf"],
        "minzoom": 0,
        "maxzoom": MAX_ZOOM,
        "bounds": extent or [-180, -85.0511, 180, 85.0511],
        "vector_layers": [{"id": layer.id, "fields": {"id": "编号 id", **fields}, "minzoom": 0, "maxzoom": MAX_ZOOM}],
    }
