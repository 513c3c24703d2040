"""Vector tiles: `/tiles/{layer}/{z}/{x}/{y}.pbf` (MVT) and `/tiles/{layer}.json` (TileJSON).

Tiles carry an ETag (a client sending it back, plain or weakened to `W/"…"`, gets 304) and are
kept in a small in-process cache. Both hold the layer's generation, which every committed write
raises, whichever process or role made it; each tile request reads it (one primary-key lookup on
a connection of its own, ~0.2 ms: `layers.generations.Reader`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.auth import ActorDep, rule
from api.deps import LayerDep, ReadGenerationsDep, ReadSessionDep, ReadSessionsDep, generation_reader
from api.routes.stats import FilterDep
from layers.access import Actor
from layers.base import Layer
from layers.features import layer_or_404, layer_summary
from layers.stats import Filter, filter_conditions
from layers.tiles import Tile, render_tile, tile_of_layer, tilejson

MVT = "application/vnd.mapbox-vector-tile"
router = APIRouter(tags=["tiles"])


class TileCache:
    """Recently served tiles and layer extents, each good while its layer's generation is the current one.

    The generation is the database's (``layers.generations``): every committed write to the
    layer raises it, whoever writes, so a tile is never served past a write another worker,
    ``guatu import`` or plain SQL made.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.seen: dict[str, int] = {}
        self.extents: dict[str, tuple[int, list[float] | None]] = {}
        self.tiles: OrderedDict[tuple[str, int, int, int, str], tuple[int, bytes, str]] = OrderedDict()
        self.lock = threading.Lock()
        self.hits = 0

    def observe(self, layer_id: str, generation: int) -> None:
        """Note LAYER_ID's GENERATION as just read; forget the tiles and extent of older ones."""
        with self.lock:
            if generation <= self.seen.get(layer_id, -1):
                return
            self.seen[layer_id] = generation
            for key in [k for k, v in self.tiles.items() if k[0] == layer_id and v[0] < generation]:
                del self.tiles[key]
            if self.extents.get(layer_id, (generation,))[0] < generation:
                del self.extents[layer_id]

    def get(self, key: tuple[str, int, int, int, str], generation: int) -> tuple[bytes, str] | None:
        """Return the cached (bytes, ETag) of tile KEY (layer, z, x, y, filter) if made at GENERATION."""
        with self.lock:
            found = self.tiles.get(key)
            if found is None or found[0] != generation:
                return None
            self.hits += 1
            self.tiles.move_to_end(key)
            return found[1], found[2]

    def put(self, key: tuple[str, int, int, int, str], generation: int, value: tuple[bytes, str]) -> None:
        """Keep tile KEY's (bytes, ETag) as rendered at GENERATION, forgetting the least recently used.

        GENERATION is read before the tile's query sees the data: a write that commits while the
        tile is rendered raises it, and the next request renders the tile again.
        """
        if self.size <= 0:
            return
        with self.lock:
            if generation < self.seen.get(key[0], 0):
                return  # already superseded
            self.tiles[key] = (generation, *value)
            self.tiles.move_to_end(key)
            while len(self.tiles) > self.size:
                self.tiles.popitem(last=False)


def tile_cache(request: Request) -> TileCache:
    """Return the app's tile cache (created on first use)."""
    state = request.app.state
    if not hasattr(state, "tiles"):
        state.tiles = TileCache(getattr(state.settings, "tile_cache_size", 4096))
    cache: TileCache = state.tiles
    return cache


GenerationsDep = Annotated[Callable[[str], int], Depends(generation_reader)]


def visibility(actor: Actor | None) -> str:
    """Return the key of what ACTOR sees (the area's prefix; ``*`` for everything): caches are kept per key."""
    if actor is None:
        return "-"
    return "*" if actor.is_admin else actor.prefix


def _generation(cache: TileCache, read: Callable[[str], int], layer: Layer) -> int:
    """Return LAYER's generation now, dropping what the cache kept of older ones."""
    generation = read(layer.id)
    cache.observe(layer.id, generation)
    return generation


def _extent(cache: TileCache, session: Session, layer: Layer, generation: int, who: str) -> list[float] | None:
    """Return LAYER's extent at GENERATION (read after it) as WHO sees it, cached per generation and visibility."""
    slot = f"{layer.id}|{who}"
    known = cache.extents.get(slot)
    if known is not None and known[0] == generation:
        return known[1]
    extent: list[float] | None = layer_summary(session, layer)["extent"]
    with cache.lock:
        if generation >= cache.seen.get(layer.id, 0):
            cache.extents[slot] = (generation, extent)
    return extent


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


def _tile(
    read: Callable[[str], int],
    sessions: Callable[[], AbstractContextManager[Session]],
    cache: TileCache,
    layer: Layer,
    address: Tile,
    flt: Filter,
    key: tuple[str, int, int, int, str],
    who: str,
) -> tuple[bytes, str]:
    """Return the tile's (bytes, ETag): cached if made at the layer's current generation, else rendered."""
    generation = _generation(cache, read, layer)  # before the tile's query sees the data
    cached = cache.get(key, generation)
    if cached is not None:
        return cached
    with sessions() as session:
        data = render_tile(session, layer, address, _extent(cache, session, layer, generation, who), flt)
    # the generation in the ETag: a client never gets 304 for a tile made before a write
    etag = f'"{generation}-{hashlib.sha1(data, usedforsecurity=False).hexdigest()[:20]}"'
    cache.put(key, generation, (data, etag))
    return data, etag


@router.get("/tiles/{layer_id}/{z}/{x}/{y}.pbf", summary="矢量瓦片 Vector tile (MVT)", **rule("user"))
async def vector_tile(
    layer_id: str,
    request: Request,
    z: Annotated[int, Path(ge=0, le=30)],
    x: Annotated[int, Path(ge=0)],
    y: Annotated[int, Path(ge=0)],
    flt: FilterDep,
    sessions: ReadSessionsDep,
    read: ReadGenerationsDep,
    actor: ActorDep,
) -> Response:
    """Return one tile of the layer: id, code, name and the styled field of each feature.

    The map's filter (scope, status, land use, ownership, idle since) narrows the tile as
    it narrows the statistics. Nothing here blocks but the database work, which runs in one
    trip to the thread pool with its own session.
    """
    layer = layer_or_404(layer_id)
    address = tile_of_layer(layer, z, x, y)
    _, params = filter_conditions(layer, flt)  # refuses a filter the layer cannot take
    who = visibility(actor)
    key = (layer.id, z, x, y, _filter_key(params) + "|" + who)  # what one area sees is never served to another
    data, etag = await run_in_threadpool(_tile, read, sessions, tile_cache(request), layer, address, flt, key, who)
    headers = {"ETag": etag, "Cache-Control": "private, max-age=60, must-revalidate", "Vary": "Cookie, Authorization"}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    if not data:
        return Response(status_code=204, headers=headers)
    return Response(data, media_type=MVT, headers=headers)


def extent_of(
    cache: TileCache, session: Session, layer: Layer, read: Callable[[str], int], actor: Actor | None
) -> list[float] | None:
    """Return LAYER's extent as ACTOR sees it (cached per generation and visibility)."""
    return _extent(cache, session, layer, _generation(cache, read, layer), visibility(actor))


@router.get("/tiles/{layer_id}.json", summary="TileJSON", **rule("user"))
def layer_tilejson(
    layer: LayerDep, session: ReadSessionDep, read: ReadGenerationsDep, request: Request, actor: ActorDep
) -> JSONResponse:
    """Return the TileJSON document of LAYER's vector tiles; tile URLs start with GUATU_PUBLIC_URL, never the Host."""
    base = request.app.state.settings.public_url
    extent = extent_of(tile_cache(request), session, layer, read, actor)
    return JSONResponse(tilejson(layer, base, extent))
