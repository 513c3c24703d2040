"""GIS exports of a layer's filtered ledger: ``GET /api/layers/{layer_id}/export.{geojson|csv|kml|gpkg|shp.zip}``.

The Excel export is ``GET /api/layers/{layer_id}/export.xlsx`` (:mod:`api.routes.workbooks`).
Every format takes the map's filter and view as the Excel export does, runs in the ``exports``
lane, and shows personal fields as the user may see them (the database masks them). GeoJSON,
CSV and KML are streamed as the rows come from a server-side cursor (a batch at a time, each
fetched in the lane's thread: the event loop never waits on the database); GeoPackage and
Shapefile are written to a temporary file in the lane, then sent and removed, also when the
client leaves half way.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, AsyncExitStack, ExitStack, suppress
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import anyio
from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from sqlalchemy.orm import Session
from starlette.types import Message, Receive, Scope, Send

from api.auth import ActorDep, rule
from api.deps import LayerDep, ReadSessionsDep
from api.routes.stats import FILTER_HELP, FilterDep
from api.work import client_of, heavy, lane
from layers.access import Actor, personal_fields
from layers.accounts import log_personal
from layers.base import Layer
from layers.exports import FORMATS, Export, export_for
from layers.features import parse_bbox
from layers.stats import Filter, filter_conditions
from spatial.db import query_canceller
from spatial.work import CancelToken

router = APIRouter(tags=["exports"])
log = logging.getLogger(__name__)


def attachment(filename: str, fallback: str | None = None) -> dict[str, str]:
    """Return the Content-Disposition of a download named FILENAME (RFC 5987), FALLBACK for old clients (ASCII)."""
    plain = f'filename="{fallback}"; ' if fallback else ""
    return {"Content-Disposition": f"attachment; {plain}filename*=UTF-8''{quote(filename)}"}


def _names(layer: Layer, fmt: str) -> dict[str, str]:
    day = dt.date.today().isoformat()
    return attachment(f"{layer.zh}-{day}.{fmt}", f"{layer.id}-{day}.{fmt}")


SEND_TIMEOUT_S = 60.0
"""Seconds a streamed export waits for its client to take one chunk: a client that stops reading (its
TCP window shut) held a place of the exports lane and a database transaction for as long as it liked."""


class _Released(StreamingResponse):
    """A streamed answer that runs RELEASE once sent, cut off or never started (the lane's place, the session).

    A client that takes no chunk for SEND_TIMEOUT_S is let go: the connection is closed half way.
    """

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], Awaitable[None]], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        late = False

        async def timed(message: Message) -> None:
            nonlocal late
            try:
                with anyio.fail_after(SEND_TIMEOUT_S):
                    await send(message)
            except TimeoutError:
                late = True
                raise

        try:
            await super().__call__(scope, receive, timed)
        except Exception:  # the timeout, or what Starlette makes of it (ClientDisconnect: a TimeoutError is an OSError)
            if not late:
                raise
            log.info("export %s: the client took nothing for %s s, let go", scope.get("path"), SEND_TIMEOUT_S)
        finally:
            with anyio.CancelScope(shield=True):
                await self._release()


class _Removed(FileResponse):
    """A temporary file sent, then removed: also when the client leaves half way."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with suppress(OSError):
                os.unlink(self.path)


def _log(session: Session, export: Export, actor: Actor | None, route: str) -> None:
    """Record who was shown personal values in full (as the Excel export does)."""
    fields = personal_fields(export.layer)
    if actor is not None and export.shown_full and fields:
        log_personal(session, actor, export.layer.id, export.shown_full, fields, route)


async def _streamed(
    request: Request, sessions: Callable[[], AbstractContextManager[Session]], export: Export, actor: Actor | None
) -> Response:
    """Answer EXPORT as it is produced; refuse (before any byte) a full lane or an export beyond its cap."""
    work = lane(request, "exports")
    held = AsyncExitStack()
    await held.enter_async_context(work.slot(client_of(request)))
    opened = ExitStack()
    route = request.url.path

    def start() -> Iterator[bytes]:
        session = opened.enter_context(sessions())
        export.count(session)
        chunks = export.chunks(session)
        opened.callback(_finish, session, chunks)
        return chunks

    def _finish(session: Session, chunks: Iterator[bytes]) -> None:
        try:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # the cursor closed, the batches shown so far counted
            _log(session, export, actor, route)
            session.commit()
        except Exception:  # a failed query left the transaction aborted: nothing to log, the session is closed next
            log.exception("export of %s ended with an error", export.layer.id)
            session.rollback()

    async def release() -> None:
        try:
            await work.run(opened.close)
        finally:
            await held.aclose()

    try:
        chunks = await work.run(start)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await release()
        raise

    async def body() -> AsyncIterator[bytes]:
        while True:
            chunk = await work.run(next, chunks, None)  # one batch fetched and formatted in the lane's thread
            if chunk is None:
                return
            yield chunk

    return _Released(
        body(),
        release,
        media_type=export.format.media_type,
        headers=_names(export.layer, export.fmt) | {"Cache-Control": "no-store"},
    )


def _write(
    sessions: Callable[[], AbstractContextManager[Session]],
    token: CancelToken,
    export: Export,
    actor: Actor | None,
    route: str,
) -> Path:
    """Write EXPORT's file in a lane thread; record who was shown personal values in full."""
    with sessions() as session, token.hook(query_canceller(session)):
        export.count(session)
        path = export.write_file(session, token.check)
        try:
            _log(session, export, actor, route)
            session.commit()
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    return path


async def _file(
    request: Request, sessions: Callable[[], AbstractContextManager[Session]], export: Export, actor: Actor | None
) -> Response:
    route = request.url.path

    async def job(token: CancelToken) -> Path:
        return await lane(request, "exports").run(_write, sessions, token, export, actor, route)

    path = await heavy(request, "exports", job)
    return _Removed(
        path,
        media_type=export.format.media_type,
        headers=_names(export.layer, export.fmt) | {"Cache-Control": "no-store"},
    )


async def send_export(
    request: Request,
    sessions: Callable[[], AbstractContextManager[Session]],
    actor: Actor | None,
    layer: Layer,
    flt: Filter,
    fmt: str,
    encoding: str = "utf-8",
) -> Response:
    """Answer LAYER's rows kept by FLT in format FMT (streamed, or written to a file first)."""
    export = export_for(layer, flt, fmt, actor, encoding)
    filter_conditions(layer, flt)  # a filter the layer cannot take: refused now (422), not queued
    if export.format.streamed:
        return await _streamed(request, sessions, export, actor)
    return await _file(request, sessions, export, actor)


EXPORT_HELP = (
    FILTER_HELP
    + "\n\nGeoJSON (RFC 7946), CSV (UTF-8 with BOM: WKT and the lon/lat of a point on the surface) and KML are "
    "streamed as produced; GeoPackage and Shapefile (zipped: .shp .shx .dbf .prj .cpg and 字段说明.csv, "
    "`encoding=gbk` for a GBK .dbf) are written first. Personal fields are masked unless the role sees them."
)


def _route(fmt: str) -> None:
    described = FORMATS[fmt]

    async def export_layer(
        layer: LayerDep,
        sessions: ReadSessionsDep,
        actor: ActorDep,
        flt: FilterDep,
        request: Request,
        bbox: Annotated[str | None, Query(description="minlon,minlat,maxlon,maxlat (the map's view)")] = None,
        encoding: Annotated[
            str, Query(max_length=10, description="Shapefile only: utf-8 (default) or gbk (.cpg says GBK)")
        ] = "utf-8",
    ) -> Response:
        flt.bbox = parse_bbox(bbox)
        return await send_export(request, sessions, actor, layer, flt, fmt, encoding)

    export_layer.__doc__ = f"Return the layer's features kept by the map's filter as {described.en}."
    router.add_api_route(
        f"/api/layers/{{layer_id}}/export.{fmt}",
        export_layer,
        methods=["GET"],
        summary=f"导出 {described.zh} Export as {described.en}",
        description=EXPORT_HELP,
        response_class=Response,
        name=f"export_{fmt.replace('.', '_')}",
        **rule("user"),
    )


for _fmt in FORMATS:
    _route(_fmt)
