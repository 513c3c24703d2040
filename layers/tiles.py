"""Vector tiles (MVT) of a layer: only what styling and popups need, snapped to the tile grid.

A tile is built by PostGIS (``ST_AsMVT``) in one statement; the properties are the feature
id, its code and name, and the field the layer is styled by (popups fetch the full ledger
by id). Tiles outside the layer's extent are answered without asking the database.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect
from sqlalchemy.orm import Session

from layers.base import Layer
from layers.stats import Filter, filter_conditions
from spatial.errors import InvalidInput, NotFound
from spatial.geometry import STORAGE_SRID

log = logging.getLogger("guatu")

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


def tile_of_layer(layer: Layer, z: int, x: int, y: int) -> Tile:
    """Return LAYER's tile Z/X/Y, or refuse one below the layer's tile zoom (NotFound) or no tile at all."""
    address = tile(z, x, y)
    if z < layer.tile_min_zoom:
        raise NotFound.one(
            "tile_below_minzoom",
            f"{layer.zh}的矢量瓦片从第 {layer.tile_min_zoom} 级起提供（请求的是第 {z} 级）",
            f"{layer.en} tiles start at zoom {layer.tile_min_zoom} (asked for {z})",
            field="z",
        )
    return address


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


SESSION_SETTINGS = (("max_parallel_workers_per_gather", "0"),)
"""Set for every tile query: a tile is a small index scan, and on a few cores a parallel
plan's workers cost more than they save (bench/tile_serving.py: 47.9 → 24.2 s for 500 tiles
over a million parcels). The tile pool's connections are opened with them (``spatial.pool``);
a session sets them locally per tile."""


def tile_statement(layer: Layer, conditions: Sequence[str] = ()) -> str:
    """Return the SQL that builds one tile of LAYER (parameters: ``tile_params`` and the filter's).

    ``ST_AsMVTGeom`` clips to the tile plus its buffer and snaps to the tile's 4096 grid,
    which is all the simplification a tile needs; rows whose geometry collapses to nothing
    are left out by ``ST_AsMVT`` itself.
    """
    columns = ", ".join(f"t.{name}" for name in tile_properties(layer))
    narrowed = "".join(f" AND {condition}" for condition in conditions)
    return f"""
        WITH bounds AS (SELECT ST_TileEnvelope(:z, :x, :y) AS env),
        rows AS (
            SELECT t.id, {columns},
                   ST_AsMVTGeom(ST_Transform(t.geom, 3857), bounds.env, {EXTENT}, {BUFFER}, true) AS geom
            FROM {layer.table} t, bounds
            WHERE t.geom && ST_Transform(ST_Expand(bounds.env, :margin), {STORAGE_SRID}){narrowed}
        )
        SELECT ST_AsMVT(rows, :layer, {EXTENT}, 'geom', 'id') FROM rows
    """


def tile_query(layer: Layer, conditions: tuple[str, ...] = ()) -> str:
    """Return ``tile_statement`` as psycopg takes it (``%(name)s`` parameters), made once per layer and filter shape.

    The text is the same for every tile of a layer and filter shape, so a connection prepares
    it once and each tile only binds its parameters.
    """
    key = (layer.id, layer.table, conditions)
    found = _QUERIES.get(key)
    if found is None:
        found = _QUERIES[key] = str(text(tile_statement(layer, conditions)).compile(dialect=_PSYCOPG))
        while len(_QUERIES) > 256:
            del _QUERIES[next(iter(_QUERIES))]
    return found


_PSYCOPG = psycopg_dialect.dialect()  # type: ignore[no-untyped-call]
_QUERIES: dict[tuple[str, str, tuple[str, ...]], str] = {}


def tile_params(layer: Layer, address: Tile) -> dict[str, Any]:
    """Return the tile's parameters of ``tile_statement``: its address and the buffer in metres."""
    size = 2 * WEB_MERCATOR_HALF / 2**address.z
    return {"z": address.z, "x": address.x, "y": address.y, "layer": layer.id, "margin": size * BUFFER / EXTENT}


def outside(address: Tile, extent: list[float] | None) -> bool:
    """Return True when the tile ADDRESS cannot hold anything of a layer whose extent is EXTENT."""
    if extent is None:
        return True
    west, south, east, north = address.bounds_lonlat()
    return east < extent[0] or west > extent[2] or north < extent[1] or south > extent[3]


def render_tile(session: Session, layer: Layer, address: Tile, flt: Filter | None = None) -> bytes:
    """Return the MVT bytes of LAYER's features under FLT in the tile ADDRESS (empty when nothing is there).

    FLT is the map's filter (scope, status, land use, ownership, idle since): what is drawn
    is what the statistics count. Current versions only, for a versioned layer.
    """
    conditions, params = filter_conditions(layer, flt or Filter())
    for name, value in SESSION_SETTINGS:
        session.execute(text("SELECT set_config(:setting, :value, true)"), {"setting": name, "value": value})
    data = session.execute(text(tile_statement(layer, conditions)), params | tile_params(layer, address)).scalar()
    return bytes(data or b"")


def tilejson(layer: Layer, base_url: str, extent: list[float] | None) -> dict[str, Any]:
    """Return the TileJSON 3.0 document of LAYER's vector tiles."""
    fields = {name: f"{layer.field(name).zh} {layer.field(name).en}" for name in tile_properties(layer)}
    return {
        "tilejson": "3.0.0",
        "name": f"{layer.zh} {layer.en}",
        "scheme": "xyz",
        "tiles": [f"{base_url}/tiles/{layer.id}/{{z}}/{{x}}/{{y}}.pbf"],
        "minzoom": layer.tile_min_zoom,
        "maxzoom": MAX_ZOOM,
        "bounds": extent or [-180, -85.0511, 180, 85.0511],
        "vector_layers": [
            {"id": layer.id, "fields": {"id": "编号 id", **fields}, "minzoom": layer.tile_min_zoom, "maxzoom": MAX_ZOOM}
        ],
    }


class TileStore:
    """Tiles of the low zooms kept on disk, one file each, shared by every worker process of the server.

    A tile's file lies under its database (NAMESPACE), layer, generation, and what it shows
    (VARIANT: the visibility and the filter), ``…/<generation>/<variant>/<z>/<x>/<y>.mvt``: a
    tile is only ever looked up at the generation just read from the database, so one of an
    older generation is never served. Files are written whole, under a temporary name, and
    renamed into place (atomic: concurrent writers of one tile leave one whole file). Older
    generations of a layer are moved aside and deleted once a newer one is seen. A store holding
    MAX_BYTES is emptied and starts again (a soft cap: each process counts its own writes on
    top of what it found at start). Only tiles without a filter are kept here (the route's
    choice): a filter's free values would let one user fill the disk with variants.
    """

    DIGEST = 20
    """Hex digits of the tile's SHA-1 kept before its bytes (the ETag's)."""

    def __init__(self, root: Path, max_bytes: int, max_zoom: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.max_zoom = max_zoom
        self.used = 0
        self._lock = threading.Lock()
        self._emptying = False
        threading.Thread(target=self._measure, name="tile-store-size", daemon=True).start()

    def _measure(self) -> None:
        found = _size_of(self.root)
        with self._lock:
            self.used += found

    def keeps(self, address: Tile) -> bool:
        """Return whether tiles at ADDRESS's zoom are kept here."""
        return address.z <= self.max_zoom

    def path(self, namespace: str, layer_id: str, generation: int, variant: str, address: Tile) -> Path:
        """Return the file of a tile."""
        return (
            self.root
            / namespace
            / layer_id
            / str(generation)
            / variant
            / str(address.z)
            / str(address.x)
            / f"{address.y}.mvt"
        )

    def get(
        self, namespace: str, layer_id: str, generation: int, variant: str, address: Tile
    ) -> tuple[bytes, str] | None:
        """Return the stored (bytes, digest) of a tile made at GENERATION, or None."""
        try:
            raw = self.path(namespace, layer_id, generation, variant, address).read_bytes()
        except OSError:
            return None
        if len(raw) < self.DIGEST:
            return None
        return raw[self.DIGEST :], raw[: self.DIGEST].decode("ascii", "replace")

    def put(
        self, namespace: str, layer_id: str, generation: int, variant: str, address: Tile, data: bytes, digest: str
    ) -> None:
        """Keep a tile made at GENERATION (nothing when the store is full or the zoom is not kept)."""
        if not self.keeps(address) or len(digest) != self.DIGEST:
            return
        with self._lock:
            full = bool(self.max_bytes) and self.used + len(data) > self.max_bytes
            if not full:
                self.used += len(data) + self.DIGEST
        if full:
            self.empty()
            return
        target = self.path(namespace, layer_id, generation, variant, address)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(temporary, "wb") as out:
                out.write(digest.encode("ascii") + data)
            os.replace(temporary, target)
        except OSError as exc:  # a full disk, a generation pruned meanwhile: the tile is just not kept
            log.debug("tile not stored: %s", exc)
            with contextlib.suppress(OSError):
                temporary.unlink()

    def retire(self, namespace: str, layer_id: str, generation: int) -> None:
        """Delete a layer's tiles of generations older than GENERATION (moved aside at once, deleted in a thread)."""
        folder = self.root / namespace / layer_id
        try:
            older = [d for d in folder.iterdir() if d.name.isdigit() and int(d.name) < generation]
        except OSError:
            return
        trash = self.root / ".trash"
        moved = []
        for each in older:
            aside = trash / f"{namespace}-{layer_id}-{each.name}-{os.getpid()}-{threading.get_ident()}"
            try:
                trash.mkdir(parents=True, exist_ok=True)
                each.rename(aside)  # another process may have moved it first
                moved.append(aside)
            except OSError:
                continue
        if moved:
            threading.Thread(target=self._delete, args=(moved,), name="tile-store-prune", daemon=True).start()

    def empty(self) -> None:
        """Start again from nothing (the store is full): everything moved aside at once, deleted in a thread.

        A cache, not a record: what is asked for again is rendered again. Emptying, rather than
        keeping nothing more, means tiles of yesterday's variants (a layer with versions is keyed
        by the day) or of areas nobody looks at any more cannot hold the space for ever.
        """
        with self._lock:
            if self._emptying:
                return
            self._emptying = True
        log.warning("瓦片存储已满，清空重来 tile store full (%s bytes in %s): emptied", self.used, self.root)
        trash = self.root / ".trash"
        moved = []
        try:
            trash.mkdir(parents=True, exist_ok=True)
            for each in self.root.iterdir():
                if each.name == ".trash":
                    continue
                aside = trash / f"{each.name}-{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}"
                with contextlib.suppress(OSError):
                    each.rename(aside)
                    moved.append(aside)
        except OSError as exc:
            log.debug("tile store not emptied: %s", exc)

        def delete() -> None:
            try:
                for folder in moved:
                    shutil.rmtree(folder, ignore_errors=True)
            finally:
                with self._lock:
                    self.used = 0
                    self._emptying = False

        threading.Thread(target=delete, name="tile-store-empty", daemon=True).start()

    def _delete(self, folders: list[Path]) -> None:
        for folder in folders:
            size = _size_of(folder)
            shutil.rmtree(folder, ignore_errors=True)
            with self._lock:
                self.used = max(0, self.used - size)


def _size_of(root: Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(folder, name)).st_size
    return total


def variant_key(text_key: str) -> str:
    """Return the store's folder name of a tile variant (its visibility and filter key)."""
    return hashlib.sha1(text_key.encode(), usedforsecurity=False).hexdigest()[:16]
