"""Vector tiles: `/tiles/{layer}/{z}/{x}/{y}.pbf` (MVT) and `/tiles/{layer}.json` (TileJSON).

Tiles carry an ETag (a client sending it back, plain or weakened to `W/"…"`, gets 304) and are
kept in a small in-process cache that every write through this app invalidates for its layer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.deps import LayerDep, SessionDep, SessionsDep
from api.routes.stats import FilterDep
from layers.base import Layer
from layers.features import layer_or_404, layer_summary
from layers.stats import Filter, filter_conditions
from layers.tiles import Tile, outside, render_tile, tile_of_layer, tilejson

MVT = "application/vnd.mapbox-vector-tile"
router = APIRouter(tags=["tiles"])


class TileCache:
    """Recently served tiles and layer extents, by layer generation (bumped on every write)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.generation: dict[str, int] = {}
        self.extents: dict[str, tuple[int, list[float] | None]] = {}
        self.tiles: OrderedDict[tuple[str, int, int, int, str, int], tuple[bytes, str]] = OrderedDict()
        self.lock = threading.Lock()
        self.hits = 0

    def bump(self, layer_id: str) -> None:
        """Forget every tile of LAYER_ID: it was written to."""
        with self.lock:
            self.generation[layer_id] = self.generation.get(layer_id, 0) + 1

    def get(self, key: tuple[str, int, int, int, str]) -> tuple[bytes, str] | None:
        """Return the cached (bytes, ETag) of tile KEY (layer, z, x, y, filter) of the current generation."""
        with self.lock:
            found = self.tiles.get((*key, self.generation.get(key[0], 0)))
            if found is not None:
                self.hits += 1
                self.tiles.move_to_end((*key, self.generation.get(key[0], 0)))
            return found

    def current(self, layer_id: str) -> int:
        """Return LAYER_ID's generation now (read it before rendering, store the tile under it)."""
        with self.lock:
            return self.generation.get(layer_id, 0)

    def put(self, key: tuple[str, int, int, int, str], value: tuple[bytes, str], generation: int) -> None:
        """Keep tile KEY's (bytes, ETag) as rendered at GENERATION, forgetting the least recently used.

        A write that lands while the tile is being rendered has bumped the generation: the tile
        is then filed under the old one and never served again.
        """
        if self.size <= 0:
            return
        with self.lock:
            self.tiles[(*key, generation)] = value
            while len(self.tiles) > self.size:
                self.tiles.popitem(last=False)


def tile_cache(request: Request) -> TileCache:
    """Return the app's tile cache (created on first use)."""
    state = request.app.state
    if not hasattr(state, "tiles"):
        state.tiles = TileCache(getattr(state.settings, "tile_cache_size", 4096))
    cache: TileCache = state.tiles
    return cache


def _extent(cache: TileCache, session: Session, layer: Layer) -> list[float] | None:
    generation = cache.generation.get(layer.id, 0)
    known = cache.extents.get(layer.id)
    if known is not None and known[0] == generation:
        return known[1]
    extent: list[float] | None = layer_summary(session, layer)["extent"]
    cache.extents[layer.id] = (generation, extent)
    return extent


def _known_outside(cache: TileCache, layer: Layer, address: Tile) -> bool:
    """Return True when the cached extent of LAYER already says the tile is empty."""
    known = cache.extents.get(layer.id)
    return known is not None and known[0] == cache.generation.get(layer.id, 0) and outside(address, known[1])


def _filter_key(params: dict[str, object]) -> str:
    """Return a short key of the filter's parameters and today (versions in force change at midnight)."""
    text = repr((sorted(params.items()), dt.date.today().isoformat()))
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


def etag_matches(header: str | None, etag: str) -> bool:
    """Return True when an If-None-Match HEADER names ETAG, compared weakly as HTTP says for it.

    A proxy that compresses the tile (nginx with gzip) weakens its ETag to `W/"…"`, and the
    client sends that form back.

    >>> etag_matches('W/"ab"', '"ab"'), etag_matches('"x", "ab"', '"ab"'), etag_matches('"abc"', '"ab"')
    (True, True, False)
    """
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag.removeprefix("W/") for tag in header.split(","))


def _render(
    sessions: Callable[[], AbstractContextManager[Session]], cache: TileCache, layer: Layer, address: Tile, flt: Filter
) -> bytes:
    with sessions() as session:
        return render_tile(session, layer, address, _extent(cache, session, layer), flt)


@router.get("/tiles/{layer_id}/{z}/{x}/{y}.pbf", summary="矢量瓦片 Vector tile (MVT)")
async def vector_tile(
    layer_id: str,
    request: Request,
    z: Annotated[int, Path(ge=0, le=30)],
    x: Annotated[int, Path(ge=0)],
    y: Annotated[int, Path(ge=0)],
    flt: FilterDep,
    sessions: SessionsDep,
) -> Response:
    """Return one tile of the layer: id, code, name and the styled field of each feature.

    The map's filter (scope, status, land use, ownership, idle since) narrows the tile as
    it narrows the statistics. Nothing here blocks but the database work, which runs in one
    trip to the thread pool with its own session.
    """
    layer = layer_or_404(layer_id)
    address = tile_of_layer(layer, z, x, y)
    _, params = filter_conditions(layer, flt)  # refuses a filter the layer cannot take
    cache = tile_cache(request)
    key = (layer.id, z, x, y, _filter_key(params))
    cached = cache.get(key)
    if cached is None:
        generation = cache.current(layer.id)  # before the query sees the data
        if _known_outside(cache, layer, address):
            data = b""
        else:
            data = await run_in_threadpool(_render, sessions, cache, layer, address, flt)
        cached = (data, '"' + hashlib.sha1(data, usedforsecurity=False).hexdigest()[:20] + '"')
        cache.put(key, cached, generation)
    data, etag = cached
    headers = {"ETag": etag, "Cache-Control": "public, max-age=60, must-revalidate"}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    if not data:
        return Response(status_code=204, headers=headers)
    return Response(data, media_type=MVT, headers=headers)


@router.get("/tiles/{layer_id}.json", summary="TileJSON")
def layer_tilejson(layer: LayerDep, session: SessionDep, request: Request) -> JSONResponse:
    """Return the TileJSON document of LAYER's vector tiles."""
    base = str(request.base_url).rstrip("/")
    return JSONResponse(tilejson(layer, base, _extent(tile_cache(request), session, layer)))
