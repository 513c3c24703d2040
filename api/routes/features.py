"""Features of a layer as GeoJSON: list by bounding box, read, create, replace, delete."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from api.deps import LayerDep, SessionDep
from api.routes.stats import FILTER_HELP, FilterDep
from layers import features
from layers.base import REGISTRY
from layers.stats import filter_conditions
from spatial.errors import MalformedInput, TooLarge

GEOJSON = "application/geo+json"
JSON_TYPES = ("application/json", GEOJSON)
"""What a feature write must say it sends: a form or text/plain (what another site can post) is refused."""
router = APIRouter(prefix="/api/layers/{layer_id}/features", tags=["features"])


def _example() -> dict[str, Any]:
    """Return an example feature for the API docs: the first layer's declared example, as a point."""
    declared = [layer for layer in sorted(REGISTRY.values(), key=lambda layer: layer.order) if layer.example]
    props = dict(declared[0].example) if declared else {}
    return {"type": "Feature", "geometry": {"type": "Point", "coordinates": [120.3842, 36.3021]}, "properties": props}


FEATURE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/geo+json": {
                "schema": {
                    "type": "object",
                    "example": _example(),
                }
            },
            "application/json": {"schema": {"type": "object"}},
        },
    }
}


FeatureId = Annotated[int, Path(ge=1, le=2**31 - 1, description="要素编号 feature id")]


class GeoJSONResponse(Response):
    """A response with the GeoJSON media type."""

    media_type = GEOJSON


def _too_large(limit: int) -> TooLarge:
    return TooLarge.one("payload_too_large", f"要素过大（上限 {limit} 字节）", f"feature larger than {limit} bytes")


async def _read_feature(request: Request) -> Any:
    """Return the parsed JSON body, or raise a clear error naming line and column (415 if not sent as JSON)."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media not in JSON_TYPES:
        raise HTTPException(415)
    limit = request.app.state.settings.max_feature_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)  # refused before reading a byte of it
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise _too_large(limit)
    if not body.strip():
        raise MalformedInput.one("body_empty", "请求体为空", "request body is empty")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedInput.one(
            "invalid_json",
            f"不是有效的 JSON：第 {exc.lineno} 行第 {exc.colno} 列",
            f"not valid JSON: {exc.msg}",
            location=[exc.lineno, exc.colno],
        ) from None


def _commit(session: Session, write: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run WRITE and commit (in a worker thread: the event loop never waits on the database)."""
    result = write(session, *args)
    session.commit()
    return result


def _geojson(data: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> GeoJSONResponse:
    return GeoJSONResponse(orjson.dumps(data), status_code=status_code, headers=headers)


@router.get(
    "", summary="按范围查询要素 Features in a bounding box", response_class=GeoJSONResponse, description=FILTER_HELP
)
def list_features(
    layer: LayerDep,
    session: SessionDep,
    flt: FilterDep,
    bbox: str | None = Query(None, description="minlon,minlat,maxlon,maxlat (CGCS2000)"),
    limit: int = Query(features.DEFAULT_LIMIT, ge=1, le=features.MAX_LIMIT),
    offset: int = Query(0, ge=0, le=10**9),
) -> GeoJSONResponse:
    """Return the layer's features intersecting BBOX (and kept by the map's filter) as a GeoJSON FeatureCollection."""
    narrowed = filter_conditions(layer, flt) if flt else None
    box = features.parse_bbox(bbox)
    result = features.list_features(session, layer, bbox=box, limit=limit, offset=offset, narrowed=narrowed)
    body = features.feature_collection_bytes(result)
    return GeoJSONResponse(body)


@router.post(
    "", summary="新增要素 Create a feature", status_code=201, openapi_extra=FEATURE_BODY, response_class=GeoJSONResponse
)
async def create_feature(layer: LayerDep, session: SessionDep, request: Request) -> GeoJSONResponse:
    """Validate and store a GeoJSON Feature; answer with it as stored."""
    body = await _read_feature(request)
    created = await run_in_threadpool(_commit, session, features.create_feature, layer, body)
    return _geojson(created, 201, {"Location": f"/api/layers/{layer.id}/features/{created['id']}"})


@router.get("/{fid}", summary="读取要素 Read a feature", response_class=GeoJSONResponse)
def get_feature(layer: LayerDep, session: SessionDep, fid: FeatureId) -> GeoJSONResponse:
    """Return one feature."""
    return _geojson(features.get_feature(session, layer, fid))


@router.put("/{fid}", summary="替换要素 Replace a feature", openapi_extra=FEATURE_BODY, response_class=GeoJSONResponse)
async def replace_feature(layer: LayerDep, session: SessionDep, fid: FeatureId, request: Request) -> GeoJSONResponse:
    """Replace a feature's properties and geometry."""
    body = await _read_feature(request)
    updated = await run_in_threadpool(_commit, session, features.replace_feature, layer, fid, body)
    return _geojson(updated)


@router.delete("/{fid}", summary="删除要素 Delete a feature", status_code=204)
def delete_feature(layer: LayerDep, session: SessionDep, fid: FeatureId) -> Response:
    """Delete a feature."""
    features.delete_feature(session, layer, fid)
    session.commit()
    return Response(status_code=204)
