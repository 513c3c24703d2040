"""Ledger tables: a layer's rows a page at a time under the map's filter, and each user's column choice."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.auth import ActorDep, SignedInDep, rule
from api.deps import LayerDep, ReadSessionDep, SessionDep
from api.routes.features import _log_personal
from api.routes.stats import FILTER_HELP, FilterDep
from api.security import NONCE_STATE, with_nonce
from layers import ledger, preferences
from layers.access import Actor
from layers.base import REGISTRY
from layers.features import parse_bbox
from spatial.errors import MalformedInput, TooLarge
from web.ledger import build_ledger_page

router = APIRouter(tags=["ledger"])

SORT_HELP = "排序字段 a declared field, area_m2/area_mu, updated_at or id (ties broken by id)"


@router.get(
    "/api/layers/{layer_id}/rows",
    summary="台账分页 Ledger rows, a page at a time",
    description=FILTER_HELP,
    **rule("user"),
)
def ledger_rows(
    layer: LayerDep,
    session: ReadSessionDep,
    flt: FilterDep,
    actor: ActorDep,
    request: Request,
    bbox: Annotated[str | None, Query(description="minlon,minlat,maxlon,maxlat (the map's view)")] = None,
    sort: Annotated[str | None, Query(max_length=40, description=SORT_HELP)] = None,
    dir: Annotated[str | None, Query(max_length=4, description="asc | desc")] = None,  # noqa: A002 - the usual name
    page: Annotated[int, Query(ge=1, le=10**7, description="页码 page, from 1")] = 1,
    size: Annotated[int, Query(ge=1, le=ledger.MAX_SIZE, description="每页行数 rows per page")] = ledger.DEFAULT_SIZE,
    at: Annotated[
        int | None, Query(ge=1, le=2**31 - 1, description="给出含此要素的那一页 the page holding this feature id")
    ] = None,
) -> Response:
    """Return a page of the layer's rows (id, version, bbox, properties as the features API shows them).

    ``more`` says whether a next page exists; ``count`` is exact up to ``count_cap`` rows, else null
    (``count_capped``): GET …/rows/count gives it then.
    """
    flt.bbox = parse_bbox(bbox)
    order = ledger.check_order(layer, sort, dir, sees_personal=actor is not None and actor.sees_personal())
    if at is not None:
        page = ledger.page_of(session, layer, flt, order, at, size)
    found = ledger.rows(session, layer, flt, order, page=page, size=size)
    _log_personal(session, layer, actor, [row["id"] for row in found["data"]], request.url.path)
    return Response(orjson.dumps(found), media_type="application/json")


@router.get(
    "/api/layers/{layer_id}/rows/count",
    summary="台账行数 How many ledger rows match",
    description=FILTER_HELP,
    **rule("user"),
)
def ledger_count(
    layer: LayerDep,
    session: ReadSessionDep,
    flt: FilterDep,
    bbox: Annotated[str | None, Query(description="minlon,minlat,maxlon,maxlat (the map's view)")] = None,
    size: Annotated[int, Query(ge=1, le=ledger.MAX_SIZE, description="每页行数 rows per page")] = ledger.DEFAULT_SIZE,
) -> dict[str, Any]:
    """Return the exact number of rows the filter keeps, and the last page at SIZE rows a page."""
    flt.bbox = parse_bbox(bbox)
    n = ledger.count_rows(session, layer, flt)
    return {"layer": layer.id, "count": n, "last_page": max(1, -(-n // size))}


PreferenceKey = Annotated[str, Path(max_length=60, description="偏好名称 key, e.g. ledger.columns.<layer>")]


@router.get("/api/me/preferences/{key}", summary="读取偏好 Read one of my preferences", **rule("user"))
def read_preference(key: PreferenceKey, session: SessionDep, actor: SignedInDep) -> Response:
    """Return the value stored under KEY for the signed-in user (404 if none)."""
    return Response(orjson.dumps(preferences.read(session, actor, key)), media_type="application/json")


def _store(session: Session, actor: Actor, key: str, value: Any) -> None:
    preferences.write(session, actor, key, value)
    session.commit()


@router.put("/api/me/preferences/{key}", summary="保存偏好 Save one of my preferences", status_code=204, **rule("user"))
async def write_preference(key: PreferenceKey, session: SessionDep, actor: SignedInDep, request: Request) -> Response:
    """Store the JSON body as the signed-in user's preference KEY (at most 8 KB)."""
    preferences.check_key(key)
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > preferences.MAX_BYTES * 2:
            raise TooLarge.one(
                "payload_too_large",
                f"偏好过大（上限 {preferences.MAX_BYTES} 字节）",
                f"preference larger than {preferences.MAX_BYTES} bytes",
            )
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise MalformedInput.one("invalid_json", "请求体不是有效的 JSON", "body is not valid JSON") from None
    await run_in_threadpool(_store, session, actor, key, value)
    return Response(status_code=204)


pages = APIRouter(tags=["pages"], include_in_schema=False)


@pages.get("/ledger", **rule("page"))
def ledger_home() -> RedirectResponse:
    """Send to the ledger of the first layer."""
    first = min(REGISTRY.values(), key=lambda layer: layer.order)
    return RedirectResponse(f"/ledger/{first.id}", status_code=303)


@pages.get("/ledger/{layer_id}", response_class=HTMLResponse, **rule("page"))
def ledger_page(layer: LayerDep, request: Request) -> HTMLResponse:
    """Return the ledger page (台账) of the layer: its rows in a grid, paged and sorted on the server."""
    html = build_ledger_page(list(REGISTRY.values()), layer, title=request.app.state.settings.site_title)
    return HTMLResponse(with_nonce(html, getattr(request.state, NONCE_STATE)))
