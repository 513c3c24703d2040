"""The wall map (挂图) export: `GET /api/print` returns a PDF or PNG of a scope, drawn on the server."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

import shapely
from shapely.geometry.base import BaseGeometry

from api.deps import SessionsDep
from api.routes.stats import FilterDep
from api.work import heavy, lane
from layers.base import Layer
from layers.features import layer_or_404, parse_bbox
from layers.scopes import features_in, scope_unit
from layers.stats import Filter
from spatial.db import query_canceller
from spatial.errors import InvalidInput
from spatial.work import CancelToken, in_process
from web.printing import PAPER_MM, PrintLayer, draw

router = APIRouter(tags=["print"])
MAX_PRINTED = 200_000
DEFAULT_LAYERS = "divisions,grids,parcels,shops"
FILTERED_LAYER = "parcels"
"""The layer the map's filter panel narrows, and so the print's filter."""


def filter_label(flt: Filter) -> str:
    """Return the filter as the title block says it (empty for none)."""
    return flt.label(layer_or_404(FILTERED_LAYER))


def _gather(
    sessions: Callable[[], AbstractContextManager[Session]],
    token: CancelToken,
    scope: str | None,
    view: tuple[float, float, float, float] | None,
    chosen: list[Layer],
    flt: Filter,
    day: dt.date,
) -> tuple[list[PrintLayer], str, BaseGeometry | None]:
    """Read what the sheet shows: the scope's shape and label, and each layer's features in it."""
    with sessions() as session, token.hook(query_canceller(session)):
        shape, label = scope_unit(session, scope, day) if scope else (None, "")
        label = f"{label}（{scope}）" if scope else "全部 everything"
        if view is not None:
            shape = shapely.box(*view) if shape is None else shape.intersection(shapely.box(*view))
            label = label if scope else "当前视野 map view"
        said = filter_label(flt)
        if said:
            label = f"{label}    筛选 {said}"
        printed: list[PrintLayer] = []
        room = MAX_PRINTED
        for layer in chosen:
            names = [n for n in ("code", "name", layer.style.by) if n and n in layer.field_names]
            narrowed = flt if layer.id == FILTERED_LAYER else None
            features = features_in(session, layer, shape, names, room, narrowed)
            room -= len(features)
            printed.append(PrintLayer(layer.id, features))
    return printed, label, shape


@router.get("/api/print", summary="挂图导出 Wall map (PDF/PNG)")
async def print_map(
    sessions: SessionsDep,
    request: Request,
    flt: FilterDep,
    scope: Annotated[
        str | None, Query(pattern=r"^[0-9]{6,16}$", description="county, street, community or grid")
    ] = None,
    size: Annotated[Literal["A0", "A1", "A2", "A3", "A4"], Query()] = "A3",
    layers: Annotated[str, Query(description="comma-separated layer ids, drawn in their map order")] = DEFAULT_LAYERS,
    format: Annotated[Literal["pdf", "png"], Query()] = "pdf",
    bbox: Annotated[str | None, Query(description="minlon,minlat,maxlon,maxlat: print the map's view")] = None,
    title: Annotated[str | None, Query(max_length=60)] = None,
    sheets: Annotated[
        Literal["A4", "A3"] | None, Query(description="cut the big sheet into small ones (PDF): an office printer's")
    ] = None,
) -> Response:
    """Return the wall map of SCOPE: title block, legend, scale bar, north arrow, grid labels.

    With `sheets=A4`, an A0–A2 wall map comes as a PDF of A4 pages to print on an office
    printer: an assembly sheet first, then every sheet with its row, column and a glue strip.
    Prints are drawn a few at a time in worker processes; when they are all busy and the
    queue is full, the answer is 503 with Retry-After, and a print whose client left is dropped.
    """
    if sheets is not None:
        if format != "pdf":
            raise InvalidInput.one(
                "sheets_need_pdf", "分幅打印只能输出 PDF", "sheets come as a PDF only", field="format"
            )
        if PAPER_MM[sheets][0] >= PAPER_MM[size][0]:
            raise InvalidInput.one(
                "sheets_too_big",
                f"分幅纸张 {sheets} 须小于挂图 {size}",
                f"sheets of {sheets} must be smaller than the wall map's {size}",
                field="sheets",
            )
    wanted = {name.strip() for name in layers.split(",") if name.strip()}
    chosen = sorted((layer_or_404(name) for name in wanted), key=lambda layer: layer.order)
    view = parse_bbox(bbox)
    day = dt.date.today()
    # The map's filter narrows the parcels, as on the map; the scope frames the sheet instead.
    narrowed = dataclasses.replace(flt, scope=None)
    settings = request.app.state.settings
    heading = title or settings.site_title

    async def job(token: CancelToken) -> bytes:
        gather = lane(request, "print").run
        printed, label, shape = await gather(_gather, sessions, token, scope, view, chosen, narrowed, day)
        return await in_process(
            draw,
            printed,
            title=heading,
            scope_label=label,
            size=size,
            fmt=format,
            day=day,
            frame=shape,
            sheets=sheets,
            workers=settings.print_workers,
            timeout_s=settings.print_timeout_s,
            token=token,
        )

    data = await heavy(request, "print", job)
    filename = f"挂图-{scope or 'all'}-{size}{'-分幅' + sheets if sheets else ''}.{format}"
    media = "application/pdf" if format == "pdf" else "image/png"
    disposition = f"attachment; filename*=UTF-8''{quote(filename)}"
    return Response(data, media_type=media, headers={"Content-Disposition": disposition})
