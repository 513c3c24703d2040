"""Excel: a filtered ledger exported as XLSX (one sheet per layer), and a template per layer.

Importing a ledger goes through the uploads (``POST /api/layers/{layer_id}/uploads`` with
an .xlsx file and ``import_mode``): the same checks, report, dry run and idempotency.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask

from api.auth import ActorDep, rule
from api.deps import LayerDep, SessionsDep
from api.routes.exports import attachment
from api.routes.printing import _narrowing
from api.routes.stats import FILTER_HELP, FilterDep
from api.work import heavy, lane
from layers.access import Actor, personal_fields
from layers.accounts import log_personal
from layers.features import layer_or_404, parse_bbox
from layers.stats import Filter, filter_conditions
from layers.templates import write_geojson_template, write_gpkg_template
from layers.workbook import Exported, Sheet, Table, write_export, write_tables, write_template
from spatial.db import query_canceller
from spatial.work import CancelToken

router = APIRouter(tags=["excel"])
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _export(
    sessions: Callable[[], AbstractContextManager[Session]],
    token: CancelToken,
    sheets: list[Sheet],
    actor: Actor | None,
    title: str,
    route: str,
) -> Exported:
    """Write the export in a lane thread; record who was shown personal values in full."""
    with sessions() as session, token.hook(query_canceller(session)):
        done = write_export(session, sheets, actor, title=title)
        for layer_id, ids in done.shown_full.items():
            fields = personal_fields(layer_or_404(layer_id))
            if actor is not None and ids and fields:
                log_personal(session, actor, layer_id, ids, fields, route)
        session.commit()
    return done


async def _send(request: Request, sessions: SessionsDep, actor: Actor | None, sheets: list[Sheet]) -> Response:
    for sheet in sheets:
        filter_conditions(sheet.layer, sheet.flt)  # a filter the layer cannot take: refused now (422), not queued
    title = f"{request.app.state.settings.site_title} 台账导出"
    route = request.url.path

    async def job(token: CancelToken) -> Exported:
        return await lane(request, "exports").run(_export, sessions, token, sheets, actor, title, route)

    done = await heavy(request, "exports", job)
    names = "-".join(sheet.layer.zh for sheet in sheets)
    filename = f"{names}-{dt.date.today().isoformat()}.xlsx"
    return FileResponse(
        done.path,
        media_type=XLSX,
        headers=attachment(filename),
        background=BackgroundTask(os.unlink, Path(done.path)),
    )


Built = tuple[list[Table], list[tuple[str, str]]]


def _tables(
    sessions: Callable[[], AbstractContextManager[Session]],
    token: CancelToken,
    build: Callable[[Session], Built],
    actor: Actor | None,
    title: str,
) -> Exported:
    """Build and write a ledger that is not a layer in a lane thread (BUILD may log who was shown what)."""
    with sessions() as session, token.hook(query_canceller(session)):
        tables, about = build(session)
        done = write_tables(tables, actor, title=title, about=about)
        session.commit()
    return done


async def send_tables(
    request: Request,
    sessions: SessionsDep,
    actor: Actor | None,
    name: str,
    build: Callable[[Session], Built],
) -> Response:
    """Answer the workbook BUILD gives (its sheets and cover lines), written in the exports lane, off the event loop."""
    title = f"{request.app.state.settings.site_title} {name}导出"

    async def job(token: CancelToken) -> Exported:
        return await lane(request, "exports").run(_tables, sessions, token, build, actor, title)

    done = await heavy(request, "exports", job)
    return FileResponse(
        done.path,
        media_type=XLSX,
        headers=attachment(f"{name}-{dt.date.today().isoformat()}.xlsx"),
        background=BackgroundTask(os.unlink, Path(done.path)),
    )


@router.get(
    "/api/layers/{layer_id}/export.xlsx",
    summary="导出台账 Export the ledger as XLSX",
    description=FILTER_HELP,
    response_class=Response,
    **rule("user"),
)
async def export_layer(
    layer: LayerDep,
    sessions: SessionsDep,
    actor: ActorDep,
    flt: FilterDep,
    request: Request,
    bbox: Annotated[str | None, Query(description="minlon,minlat,maxlon,maxlat (the map's view)")] = None,
) -> Response:
    """Return the layer's features kept by the map's filter as an Excel workbook (a cover sheet 说明 first)."""
    flt.bbox = parse_bbox(bbox)
    return await _send(request, sessions, actor, [Sheet(layer, flt)])


@router.get(
    "/api/export.xlsx",
    summary="导出多个台账 Export several ledgers as one XLSX",
    description=FILTER_HELP,
    response_class=Response,
    **rule("user"),
)
async def export_layers(
    sessions: SessionsDep,
    actor: ActorDep,
    flt: FilterDep,
    request: Request,
    layers: Annotated[str, Query(max_length=400, description="comma-separated layer ids: one sheet each")],
    bbox: Annotated[str | None, Query(description="minlon,minlat,maxlon,maxlat (the map's view)")] = None,
) -> Response:
    """Return several layers, one sheet each, in map order.

    Each layer may be narrowed as on the map and in a print: ``narrow_<layer id>=<its filter as
    a query string>``; filter parameters given plainly narrow the layers that offer them.
    """
    asked = list(dict.fromkeys(x.strip() for x in layers.split(",") if x.strip()))
    chosen = sorted((layer_or_404(layer_id) for layer_id in asked), key=lambda layer: layer.order)
    box = parse_bbox(bbox)
    narrowed = _narrowing(request, chosen, dataclasses.replace(flt, scope=None))
    sheets = []
    for layer in chosen:
        own = {p: v for p, v in flt.values.items() if layer.filter_field(p) is not None}
        before = {p: d for p, d in flt.before.items() if layer.filter_field(p) is not None}
        given = narrowed.get(layer.id)
        if given is not None and given:
            own, before = given.values, given.before
        sheets.append(Sheet(layer, Filter(scope=flt.scope, bbox=box, values=own, before=before)))
    return await _send(request, sessions, actor, sheets)


@router.get(
    "/api/layers/{layer_id}/template.xlsx",
    summary="台账模板 Ledger template (XLSX)",
    response_class=Response,
    **rule("user"),
)
def layer_template(layer: LayerDep) -> Response:
    """Return the layer's import template: headers (required starred), dropdowns, an example row, 填写说明."""
    return Response(write_template(layer), media_type=XLSX, headers=attachment(f"{layer.zh}-导入模板.xlsx"))


@router.get(
    "/api/layers/{layer_id}/template.geojson",
    summary="GeoJSON 模板 Upload template (GeoJSON)",
    response_class=Response,
    **rule("user"),
)
def layer_template_geojson(layer: LayerDep) -> Response:
    """Return the layer's GeoJSON template: the example feature, and `fields` describing every field."""
    headers = attachment(f"{layer.zh}-导入模板.geojson")
    return Response(write_geojson_template(layer), media_type="application/geo+json", headers=headers)


@router.get(
    "/api/layers/{layer_id}/template.gpkg",
    summary="GeoPackage 模板 Upload template (GPKG)",
    response_class=Response,
    **rule("user"),
)
def layer_template_gpkg(layer: LayerDep) -> Response:
    """Return the layer's GeoPackage template: its fields with their types, the example feature, a `fields` table."""
    headers = attachment(f"{layer.zh}-导入模板.gpkg")
    return Response(write_gpkg_template(layer), media_type="application/geopackage+sqlite3", headers=headers)
