"""The wall map (挂图) export: `GET /api/print` returns a PDF or PNG of a scope, drawn on the server."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Annotated, Literal
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

import shapely
from shapely.geometry.base import BaseGeometry

from api.auth import rule
from api.deps import ReadSessionsDep
from api.routes.stats import FilterDep
from api.work import heavy, lane
from layers import cockpit
from layers.base import REGISTRY, Layer
from layers.features import layer_or_404, parse_bbox
from layers.scopes import features_in, scope_unit
from layers.stats import Filter, filter_conditions, parse_filter
from spatial.db import query_canceller
from spatial.errors import InvalidInput
from spatial.work import CancelToken, in_process
from web.printing import PAPER_MM, Printed, PrintLayer, SideTable, draw

router = APIRouter(tags=["print"])
MAX_PRINTED = 200_000
DEFAULT_LAYERS = ",".join(lr.id for lr in sorted(REGISTRY.values(), key=lambda lr: lr.order) if lr.style.printed)
"""The layers a print shows unless it names them: those their declaration says are printed."""
LEFT_OUT_HEADER = "X-Guatu-Sheets-Left-Out"
"""Says which sheets of a cut were left out, blank (their numbers on the assembly sheet, comma-separated)."""


def _gather(
    sessions: Callable[[], AbstractContextManager[Session]],
    token: CancelToken,
    scope: str | None,
    view: tuple[float, float, float, float] | None,
    chosen: list[Layer],
    narrowing: dict[str, Filter],
    day: dt.date,
    figures: bool = False,
) -> tuple[list[PrintLayer], str, BaseGeometry | None, list[SideTable]]:
    """Read what the sheet shows: the scope's shape and label, each layer's features in it, the tables beside."""
    with sessions() as session, token.hook(query_canceller(session)):
        shape, label = scope_unit(session, scope, day) if scope else (None, "")
        label = f"{label}（{scope}）" if scope else "全部 everything"
        if view is not None:
            shape = shapely.box(*view) if shape is None else shape.intersection(shapely.box(*view))
            label = label if scope else "当前视野 map view"
        said = "；".join(
            f"{lay.zh} {narrowing[lay.id].label(lay)}" for lay in chosen if lay.id in narrowing and narrowing[lay.id]
        )
        if said:
            label = f"{label}    筛选 {said}"
        printed: list[PrintLayer] = []
        room = MAX_PRINTED
        for layer in chosen:
            wanted = [*layer.key, layer.style.by, *layer.style.label]  # its key, what its colour and label say
            names = [n for n in dict.fromkeys(wanted) if n and n in layer.field_names]
            features = features_in(session, layer, shape, names, room, narrowing.get(layer.id))
            room -= len(features)
            printed.append(PrintLayer(layer.id, features, layer.module))
        tables = [SideTable(**table) for table in cockpit.print_tables(session, scope)] if figures else []
    return printed, label, shape, tables


NARROW = "narrow_"
"""A print's filter of one layer: ``narrow_<layer id>=<that layer's filter as a query string>``."""


def _narrowing(request: Request, chosen: list[Layer], plain: Filter) -> dict[str, Filter]:
    """Return each printed layer's filter, checked against that layer: as the map shows it, each layer its own.

    ``narrow_shops=status%3D闲置`` narrows the shops; filter parameters given plainly
    (``status=闲置``) narrow the layers declared ``filtered`` (the parcels), as before.
    """
    printed = {layer.id: layer for layer in chosen}
    out: dict[str, Filter] = {layer.id: plain for layer in chosen if layer.filtered and plain}
    for param, value in request.query_params.items():
        if not param.startswith(NARROW):
            continue
        layer = layer_or_404(param.removeprefix(NARROW))
        narrowed = parse_filter(parse_qs(value, keep_blank_values=True))
        if layer.id in printed and narrowed:
            out[layer.id] = narrowed
    for layer_id, narrowed in out.items():
        filter_conditions(printed[layer_id], narrowed)  # refused now (422), not in the queue
    return out


@router.get("/api/print", summary="挂图导出 Wall map (PDF/PNG)", **rule("print"))
async def print_map(
    sessions: ReadSessionsDep,
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
    figures: Annotated[
        bool, Query(description="set a statistics table, the progress per unit and the open problems beside the map")
    ] = False,
    scale: Annotated[
        int | None,
        Query(
            ge=100,
            le=5_000_000,
            description="draw at 1:SCALE (e.g. 2000) around the scope; default: the largest "
            "round scale the scope fits in",
        ),
    ] = None,
) -> Response:
    """Return the wall map of SCOPE: title block, legend, scale bar, north arrow, grid labels.

    With `sheets=A4`, an A0–A2 wall map comes as a PDF of A4 pages to print on an office
    printer: an assembly sheet first, then every sheet with its row, column and a glue strip.
    Each printed layer may be narrowed as on the map: `narrow_<layer id>=<its filter as a query
    string>` (e.g. `narrow_shops=status%3D闲置`); filter parameters given plainly narrow the
    parcels. Prints are drawn a few at a time in worker processes; when they are all busy and the
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
    asked = {layer_id.strip() for layer_id in layers.split(",") if layer_id.strip()}
    chosen = sorted((layer_or_404(layer_id) for layer_id in asked), key=lambda layer: layer.order)
    view = parse_bbox(bbox)
    day = dt.date.today()
    narrowing = _narrowing(request, chosen, dataclasses.replace(flt, scope=None))
    settings = request.app.state.settings
    heading = title or settings.site_title

    async def job(token: CancelToken) -> Printed:
        gather = lane(request, "print").run
        printed, label, shape, tables = await gather(
            _gather, sessions, token, scope, view, chosen, narrowing, day, figures
        )
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
            tables=tables,
            at_scale=scale,
            workers=settings.print_workers,
            timeout_s=settings.print_timeout_s,
            token=token,
        )

    printed = await heavy(request, "print", job)
    filename = f"挂图-{scope or 'all'}-{size}{'-分幅' + sheets if sheets else ''}.{format}"
    media = "application/pdf" if format == "pdf" else "image/png"
    headers = {"Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}"}
    if sheets is not None:
        headers[LEFT_OUT_HEADER] = ",".join(map(str, printed.left_out))
    return Response(printed.data, media_type=media, headers=headers)
