"""The wall map (挂图) export: `GET /api/print` returns a PDF or PNG of a scope, drawn on the server."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

import shapely

from api.deps import SessionDep
from layers.features import layer_or_404, parse_bbox
from layers.scopes import features_in, scope_unit
from web.printing import PrintLayer, render_wall_map

router = APIRouter(tags=["print"])
MAX_PRINTED = 200_000
DEFAULT_LAYERS = "divisions,grids,parcels,shops"


@router.get("/api/print", summary="挂图导出 Wall map (PDF/PNG)")
async def print_map(
    session: SessionDep,
    request: Request,
    scope: Annotated[
        str | None, Query(pattern=r"^[0-9]{6,16}$", description="county, street, community or grid")
    ] = None,
    size: Annotated[Literal["A0", "A1", "A2", "A3", "A4"], Query()] = "A3",
    layers: Annotated[str, Query(description="comma-separated layer ids, drawn in their map order")] = DEFAULT_LAYERS,
    format: Annotated[Literal["pdf", "png"], Query()] = "pdf",
    bbox: Annotated[str | None, Query(description="minlon,minlat,maxlon,maxlat: print the map's view")] = None,
    title: Annotated[str | None, Query(max_length=60)] = None,
) -> Response:
    """Return the wall map of SCOPE: title block, legend, scale bar, north arrow, grid labels."""
    wanted = {name.strip() for name in layers.split(",") if name.strip()}
    chosen = sorted((layer_or_404(name) for name in wanted), key=lambda layer: layer.order)
    day = dt.date.today()
    shape, label = scope_unit(session, scope, day) if scope else (None, "")
    label = f"{label}（{scope}）" if scope else "全部 everything"
    view = parse_bbox(bbox)
    if view is not None:
        shape = shapely.box(*view) if shape is None else shape.intersection(shapely.box(*view))
        label = label if scope else "当前视野 map view"
    printed: list[PrintLayer] = []
    room = MAX_PRINTED
    for layer in chosen:
        names = [n for n in ("code", "name", layer.style.by) if n and n in layer.field_names]
        features = features_in(session, layer, shape, names, room)
        room -= len(features)
        printed.append(PrintLayer(layer, features))
    heading = title or request.app.state.settings.site_title
    data = await run_in_threadpool(
        render_wall_map, printed, title=heading, scope_label=label, size=size, fmt=format, day=day, frame=shape
    )
    filename = f"挂图-{scope or 'all'}-{size}.{format}"
    media = "application/pdf" if format == "pdf" else "image/png"
    disposition = f"attachment; filename*=UTF-8''{quote(filename)}"
    return Response(data, media_type=media, headers={"Content-Disposition": disposition})
