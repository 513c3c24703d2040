"""Vector tiles: `/tiles/{layer}/{z}/{x}/{y}.pbf` (MVT) and `/tiles/{layer}.json` (TileJSON).

A tile is read on the event loop from a pool of plain psycopg connections (``spatial.pool``),
no ORM session and no thread hop: who acts, the layer's generation and the tile's statement
(prepared once per connection, layer and filter shape) go to PostgreSQL in one pipelined
round trip, in one read-only snapshot, so the generation a tile is kept under is exactly the
one its rows were read at, on the server that rendered it.

Tiles carry an ETag (a client sending it back, plain or weakened to `W/"…"`, gets 304), are
gzipped for a client that asks (``Accept-Encoding``; the ETag then weakened, as a proxy
would), kept in a small in-process cache, and the low zooms in a tile store on disk that
every worker process shares (``layers.tiles.TileStore``). All are keyed by the layer's
generation, which every committed write raises, whichever process or role made it: a tile
already kept costs one primary-key lookup of the generation (one round trip), a tile not
kept the pipelined round trip above.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, asynccontextmanager
from typing import Annotated, Any, Protocol

import psycopg
from fastapi import APIRouter, Depends, FastAPI, Path, Request, Response
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as EnginePoolTimeout
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.auth import ActorDep, rule
from api.deps import (
    LayerDep,
    ReadGenerationsDep,
    ReadSessionDep,
    ReadTarget,
    ReadTargetDep,
    SessionsDep,
    actor_settings,
    generation_reader,
)
from api.routes.stats import FilterDep
from layers import generations
from layers.access import Actor
from layers.base import Layer
from layers.features import layer_or_404, layer_summary
from layers.settings import layer_settings
from layers.stats import Filter, filter_conditions
from layers.tiles import (
    SESSION_SETTINGS,
    Tile,
    TileStore,
    outside,
    render_tile,
    tile_of_layer,
    tile_params,
    tile_query,
    tilejson,
    variant_key,
)
from spatial.db import read_url
from spatial.pool import ReadPool, pipelined, read_conninfo

MVT = "application/vnd.mapbox-vector-tile"
STANDBY_WAIT_S = 3.0
"""How long a tile waits for a connection to the standby before it is read on the primary instead."""
GZIP_FROM = 1024
"""Tiles smaller than this many bytes are sent as they are, asked for gzip or not."""
GZIP_LEVEL = 1
"""MVT compresses to about half at level 1 already; higher levels cost milliseconds on a big tile for little."""


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    service: TileService | None = getattr(app.state, "tile_service", None)
    if service is not None:
        await service.close()


router = APIRouter(tags=["tiles"], lifespan=_lifespan)


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
        self.zipped: OrderedDict[str, bytes] = OrderedDict()
        self.lock = threading.Lock()
        self.hits = 0

    def observe(self, layer_id: str, generation: int) -> bool:
        """Note LAYER_ID's GENERATION as just read; forget what was kept of older ones; tell whether it is new."""
        with self.lock:
            if generation <= self.seen.get(layer_id, -1):
                return False
            self.seen[layer_id] = generation
            for key in [k for k, v in self.tiles.items() if k[0] == layer_id and v[0] < generation]:
                del self.tiles[key]
            for slot in [s for s, v in self.extents.items() if s.split("|")[0] == layer_id and v[0] < generation]:
                del self.extents[slot]
            return True

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

        GENERATION is read before the tile's query sees the data (or in its snapshot): a write
        that commits later raises it, and the next request renders the tile again.
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

    def gzipped(self, data: bytes, etag: str) -> bytes:
        """Return DATA gzipped (the tile whose ETag is ETAG), compressed once while it stays recently used."""
        with self.lock:
            found = self.zipped.get(etag)
            if found is not None:
                self.zipped.move_to_end(etag)
                return found
        packed = gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)
        if self.size > 0:
            with self.lock:
                self.zipped[etag] = packed
                while len(self.zipped) > max(16, self.size // 4):
                    self.zipped.popitem(last=False)
        return packed


class TileDb(Protocol):
    """Where tiles are read: the layer's generation, and a tile with the generation it was read at."""

    async def namespace(self) -> str | None:
        """Return the tile store's folder of this database (None: keep nothing on disk)."""

    async def generation(self, layer_id: str) -> int:
        """Return LAYER_ID's committed generation."""

    async def render(self, layer: Layer, address: Tile, flt: Filter) -> tuple[int, bytes]:
        """Return (generation, MVT bytes): the generation read in the snapshot the tile is read in."""


def _database_error(exc: psycopg.OperationalError, statement: str) -> OperationalError:
    return OperationalError(statement, None, exc)


class PoolTiles:
    """Tiles from the app's read pool, as ACTOR's SETTINGS allow (row-level security, stated per transaction)."""

    def __init__(self, pool: ReadPool, settings: dict[str, str]) -> None:
        self.pool = pool
        self.settings = settings

    async def namespace(self) -> str | None:
        """Return the tile store's folder of this database (None: keep nothing on disk)."""
        await self._open()
        identity = self.pool.identity or ""
        return hashlib.sha1(identity.encode(), usedforsecurity=False).hexdigest()[:16]

    async def generation(self, layer_id: str) -> int:
        """Return LAYER_ID's committed generation."""
        rows = await self._run(lambda conn: self._generation(conn, layer_id))
        return int(rows)

    @staticmethod
    async def _generation(conn: psycopg.AsyncConnection[Any], layer_id: str) -> int:
        row = await (await conn.execute(generations.READ, (layer_id,), prepare=True)).fetchone()
        return int(row[0]) if row else 0

    async def render(self, layer: Layer, address: Tile, flt: Filter) -> tuple[int, bytes]:
        """Return (generation, MVT bytes): the generation read in the snapshot the tile is read in."""
        conditions, params = filter_conditions(layer, flt)
        statements: list[tuple[str, Any]] = [
            (generations.READ, (layer.id,)),
            (tile_query(layer, tuple(conditions)), params | tile_params(layer, address)),
        ]

        async def run(conn: psycopg.AsyncConnection[Any]) -> tuple[int, bytes]:
            generation, tile = await pipelined(conn, self.settings, statements)
            return (int(generation[0]) if generation else 0), bytes(tile[0] or b"") if tile else b""

        found: tuple[int, bytes] = await self._run(run)
        return found

    async def _open(self) -> Any:
        """Return the pool, opened; a server that cannot be reached is the app's database error (503), not a 500."""
        try:
            return await self.pool.get()
        except PoolTimeout as exc:
            raise EnginePoolTimeout(str(exc)) from exc
        except psycopg.OperationalError as exc:
            raise _database_error(exc, "connect") from exc

    async def _run(self, work: Callable[[psycopg.AsyncConnection[Any]], Any]) -> Any:
        """Run WORK on a pooled connection; once more on another if the first was broken (a server restart)."""
        pool = await self._open()
        for attempt in range(2):
            try:
                async with pool.connection() as conn:
                    return await work(conn)
            except PoolTimeout as exc:
                raise EnginePoolTimeout(str(exc)) from exc
            except psycopg.OperationalError as exc:
                if attempt or not _broken(exc):
                    raise _database_error(exc, "tile") from exc
        raise AssertionError("unreachable")


def _broken(exc: psycopg.OperationalError) -> bool:
    """Tell a dead connection (worth one retry on another) from a statement the server refused (a timeout)."""
    return not isinstance(exc, psycopg.errors.QueryCanceled)


class SessionTiles:
    """Tiles read through ORM sessions in the thread pool: for tests whose data lives in one uncommitted transaction."""

    def __init__(self, sessions: Callable[[], AbstractContextManager[Session]]) -> None:
        self.sessions = sessions

    async def namespace(self) -> str | None:
        """Return the tile store's folder of this database (None: keep nothing on disk)."""
        return None

    async def generation(self, layer_id: str) -> int:
        """Return LAYER_ID's committed generation."""

        def read() -> int:
            with self.sessions() as session:
                return generations.current(session, layer_id)

        return await run_in_threadpool(read)

    async def render(self, layer: Layer, address: Tile, flt: Filter) -> tuple[int, bytes]:
        """Return (generation, MVT bytes): the generation read in the snapshot the tile is read in."""

        def read() -> tuple[int, bytes]:
            with self.sessions() as session:
                generation = generations.current(session, layer.id)  # before the tile's query sees the data
                return generation, render_tile(session, layer, address, flt)

        return await run_in_threadpool(read)


class TileService:
    """An app's tile cache, tile store, read pool and the generations whose older tiles were pruned."""

    def __init__(self, cache: TileCache, store: TileStore | None) -> None:
        self.cache = cache
        self.store = store
        self.pool: ReadPool | None = None
        self.standby: ReadPool | None = None
        self.retired: dict[tuple[str, str], int] = {}

    def read_pool(self, app_url: str) -> ReadPool:
        """Return the read pool (made on first use; it opens in the event loop that first asks)."""
        if self.pool is None:
            self.pool = ReadPool(read_conninfo(app_url), dict(SESSION_SETTINGS))
        return self.pool

    def standby_pool(self) -> ReadPool | None:
        """Return the read pool on the hot standby (``DATABASE_READ_URL``; made on first use), None without one."""
        if self.standby is None:
            url = read_url()  # reads the app role's password file: once
            if url is None:
                return None
            self.standby = ReadPool(read_conninfo(url), dict(SESSION_SETTINGS), timeout_s=STANDBY_WAIT_S)
        return self.standby

    def observe(self, namespace: str | None, layer_id: str, generation: int) -> None:
        """Note LAYER_ID's GENERATION; prune the store's tiles of its older generations once."""
        self.cache.observe(layer_id, generation)
        if self.store is not None and namespace is not None:
            if generation > self.retired.get((namespace, layer_id), -1):
                self.retired[(namespace, layer_id)] = generation
                self.store.retire(namespace, layer_id, generation)

    async def close(self) -> None:
        """Close the read pools."""
        for pool in (self.pool, self.standby):
            if pool is not None:
                await pool.close()


def tile_service(request: Request) -> TileService:
    """Return the app's tile service (created on first use)."""
    state = request.app.state
    if not hasattr(state, "tile_service"):
        settings = state.settings
        store = None
        if getattr(settings, "tile_store_mb", 0) > 0 and getattr(settings, "tile_store_max_zoom", -1) >= 0:
            root = settings.tile_store_dir or layer_settings().archive_dir.parent / ".tiles"
            store = TileStore(root, settings.tile_store_mb * 1_000_000, settings.tile_store_max_zoom)
        state.tile_service = TileService(TileCache(getattr(settings, "tile_cache_size", 4096)), store)
    service: TileService = state.tile_service
    return service


def tile_cache(request: Request) -> TileCache:
    """Return the app's tile cache (created on first use)."""
    return tile_service(request).cache


class StandbyTiles(PoolTiles):
    """Tiles from the standby's read pool; a standby that fails sends this request, and the next ones, to the primary.

    Whatever is read after a failure is read on the primary, generation and rows together
    (one pipelined snapshot per render), so the rule of ``ReadTarget`` holds: no standby rows
    under a primary's newer generation.
    """

    def __init__(self, pool: ReadPool, settings: dict[str, str], primary: ReadPool, target: ReadTarget) -> None:
        super().__init__(pool, settings)
        self.primary: ReadPool | None = primary
        self.target = target

    async def _open(self) -> Any:
        try:
            return await super()._open()
        except (OperationalError, EnginePoolTimeout) as exc:
            if self.primary is None:
                raise
            self.target.fail(exc)
            self.pool, self.primary = self.primary, None
            return await super()._open()

    async def _run(self, work: Callable[[psycopg.AsyncConnection[Any]], Any]) -> Any:
        try:
            return await super()._run(work)
        except (OperationalError, EnginePoolTimeout) as exc:
            cause = getattr(exc, "orig", None) or exc.__cause__
            if self.primary is None or isinstance(cause, psycopg.errors.QueryCanceled):
                raise  # a statement too slow is as slow on the primary: not the standby's failure
            self.target.fail(exc)
            self.pool, self.primary = self.primary, None
            return await super()._run(work)


async def tile_db(request: Request, actor: ActorDep, target: ReadTargetDep) -> TileDb:
    """Return where this request's tiles are read: a read pool as the user, the standby's when it may answer."""
    service = tile_service(request)
    app_url = request.app.state.engine.url.render_as_string(hide_password=False)
    primary = service.read_pool(app_url)
    if target.where != "standby":
        return PoolTiles(primary, actor_settings(actor))
    standby = service.standby_pool()
    if standby is None:
        return PoolTiles(primary, actor_settings(actor))
    return StandbyTiles(standby, actor_settings(actor), primary, target)


async def session_tile_db(sessions: SessionsDep) -> TileDb:
    """Return tiles read through the request's sessions (tests override ``tile_db`` with it: tests/conftest.py)."""
    return SessionTiles(sessions)


TileDbDep = Annotated[TileDb, Depends(tile_db)]


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


def _digest(data: bytes) -> str:
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()[: TileStore.DIGEST]


def _etag(generation: int, digest: str) -> str:
    # the generation in the ETag: a client never gets 304 for a tile made before a write
    return f'"{generation}-{digest}"'


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


def accepts_gzip(header: str | None) -> bool:
    """Return whether an Accept-Encoding HEADER takes gzip (not refused with ``q=0``).

    >>> accepts_gzip("gzip, deflate, br"), accepts_gzip("identity"), accepts_gzip("gzip;q=0"), accepts_gzip(None)
    (True, False, False, False)
    """
    for part in (header or "").lower().split(","):
        name, _, params = part.strip().partition(";")
        if name.strip() in ("gzip", "*"):
            q = params.strip().removeprefix("q=").strip() if params.strip().startswith("q=") else "1"
            try:
                return float(q) > 0
            except ValueError:
                return False
    return False


async def serve_tile(
    service: TileService,
    db: TileDb,
    layer: Layer,
    address: Tile,
    flt: Filter,
    variant: str,
    who: str,
    *,
    filtered: bool = False,
) -> tuple[bytes, str]:
    """Return the tile's (bytes, ETag): kept if made at the layer's current generation, else rendered.

    A tile kept at the generation last seen (in memory, in the store, or known empty from the
    extent WHO sees) costs one look at the generation; any other is rendered with it in one
    round trip.
    """
    cache, store = service.cache, service.store
    key = (layer.id, address.z, address.x, address.y, variant)
    kept = store is not None and store.keeps(address) and not filtered  # a filter's variants: memory only
    namespace = await db.namespace() if kept else None
    folder = variant_key(variant)
    hint = cache.seen.get(layer.id)
    fresh = hint is None
    if hint is None and namespace is not None:  # a worker's first tile of the layer: the store may hold it
        hint = await db.generation(layer.id)
        service.observe(namespace, layer.id, hint)
    if hint is not None:
        candidate = cache.get(key, hint)
        stored = False
        if candidate is None and namespace is not None and store is not None:
            found = store.get(namespace, layer.id, hint, folder, address)
            if found is not None:
                candidate, stored = (found[0], _etag(hint, found[1])), True
        if candidate is None:
            known = cache.extents.get(f"{layer.id}|{who}")
            if known is not None and known[0] == hint and outside(address, known[1]):
                candidate = (b"", _etag(hint, _digest(b"")))
        if candidate is not None:
            generation = hint if fresh else await db.generation(layer.id)
            service.observe(namespace, layer.id, generation)
            if generation == hint:
                if stored:
                    cache.put(key, hint, candidate)
                return candidate
    generation, data = await db.render(layer, address, flt)
    service.observe(namespace, layer.id, generation)
    digest = _digest(data)
    etag = _etag(generation, digest)
    cache.put(key, generation, (data, etag))
    if namespace is not None and store is not None:
        store.put(namespace, layer.id, generation, folder, address, data, digest)
    return data, etag


@router.get("/tiles/{layer_id}/{z}/{x}/{y}.pbf", summary="矢量瓦片 Vector tile (MVT)", **rule("user"))
async def vector_tile(
    layer_id: str,
    request: Request,
    z: Annotated[int, Path(ge=0, le=30)],
    x: Annotated[int, Path(ge=0)],
    y: Annotated[int, Path(ge=0)],
    flt: FilterDep,
    db: TileDbDep,
    actor: ActorDep,
) -> Response:
    """Return one tile of the layer: id, code, name and the styled field of each feature.

    The map's filter (scope, status, land use, ownership, idle since) narrows the tile as
    it narrows the statistics. Gzipped when the client takes it.
    """
    layer = layer_or_404(layer_id)
    address = tile_of_layer(layer, z, x, y)
    _, params = filter_conditions(layer, flt)  # refuses a filter the layer cannot take
    who = visibility(actor)
    variant = _filter_key(params) + "|" + who  # what one area sees is never served to another
    service = tile_service(request)
    data, etag = await serve_tile(service, db, layer, address, flt, variant, who, filtered=bool(flt))
    zipped = len(data) >= GZIP_FROM and accepts_gzip(request.headers.get("accept-encoding"))
    headers = {
        "ETag": f"W/{etag}" if zipped else etag,  # as a proxy that compresses does: the bytes differ
        "Cache-Control": "private, max-age=60, must-revalidate",
        "Vary": "Cookie, Authorization, Accept-Encoding",
    }
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    if not data:
        return Response(status_code=204, headers=headers)
    if zipped:
        headers["Content-Encoding"] = "gzip"
        return Response(service.cache.gzipped(data, etag), media_type=MVT, headers=headers)
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
