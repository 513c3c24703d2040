"""Features of a layer as GeoJSON: list by bounding box, read, create, replace, delete."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from api.auth import ActorDep, SignedInDep, rule
from api.deps import LayerDep, ReadSessionDep, SessionDep
from api.routes.stats import FILTER_HELP, FilterDep
from layers import changes, features
from layers.access import Actor, personal_fields
from layers.accounts import log_personal
from layers.base import REGISTRY, Layer
from layers.stats import filter_conditions
from spatial.errors import InvalidInput, MalformedInput, NotFound, TooLarge

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


async def _read_feature(request: Request, types: tuple[str, ...] = JSON_TYPES) -> Any:
    """Return the parsed JSON body, or raise a clear error naming line and column (415 if not sent as one of TYPES)."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media not in types:
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


def _commit(session: Session, write: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run WRITE and commit (in a worker thread: the event loop never waits on the database)."""
    result = write(session, *args, **kwargs)
    session.commit()
    return result


def _geojson(data: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> GeoJSONResponse:
    return GeoJSONResponse(orjson.dumps(data), status_code=status_code, headers=headers)


def _etag(feature: dict[str, Any]) -> dict[str, str]:
    return {"ETag": f'"{feature["version"]}"'}


def _log_personal(session: Session, layer: Layer, actor: Actor | None, ids: list[int], route: str) -> None:
    """Record that ACTOR was shown LAYER's personal fields of IDS in full (when the role sees them)."""
    fields = personal_fields(layer)
    if actor is not None and fields and ids and actor.sees_personal():
        log_personal(session, actor, layer.id, ids, fields, route)
        session.commit()


@router.get(
    "",
    summary="按范围查询要素 Features in a bounding box",
    response_class=GeoJSONResponse,
    description=FILTER_HELP,
    **rule("user"),
)
def list_features(
    layer: LayerDep,
    session: ReadSessionDep,
    flt: FilterDep,
    actor: ActorDep,
    request: Request,
    bbox: str | None = Query(None, description="minlon,minlat,maxlon,maxlat (CGCS2000)"),
    limit: int = Query(features.DEFAULT_LIMIT, ge=1, le=features.MAX_LIMIT),
    offset: int = Query(0, ge=0, le=10**9),
    as_of: Annotated[
        dt.datetime | None, Query(description="历史地图：该时刻的要素 the features as they stood then (ISO 8601)")
    ] = None,
) -> GeoJSONResponse:
    """Return the layer's features intersecting BBOX (and kept by the map's filter) as a GeoJSON FeatureCollection."""
    box = features.parse_bbox(bbox)
    if as_of is not None:
        if as_of.tzinfo is None:
            as_of = as_of.replace(tzinfo=dt.UTC)
        past = features.features_as_of(session, layer, as_of, box, limit)
        _log_personal(session, layer, actor, [f["id"] for f in past["features"]], request.url.path)
        return _geojson(past)
    narrowed = filter_conditions(layer, flt) if flt else None
    result = features.list_features(session, layer, bbox=box, limit=limit, offset=offset, narrowed=narrowed)
    if personal_fields(layer) and actor is not None and actor.sees_personal() and result["features"]:
        ids = [int(orjson.loads(f)["id"]) for f in result["features"]]
        _log_personal(session, layer, actor, ids, request.url.path)
    return GeoJSONResponse(features.feature_collection_bytes(result))


@router.post(
    "",
    summary="新增要素 Create a feature",
    status_code=201,
    response_class=GeoJSONResponse,
    **rule("edit", **FEATURE_BODY),
)
async def create_feature(layer: LayerDep, session: SessionDep, actor: SignedInDep, request: Request) -> GeoJSONResponse:
    """Validate and store a GeoJSON Feature (an optional top-level ``note`` says why); answer with it as stored."""
    body = await _read_feature(request)
    created = await run_in_threadpool(_commit, session, features.create_feature, layer, body, actor)
    headers = {"Location": f"/api/layers/{layer.id}/features/{created['id']}"} | _etag(created)
    return _geojson(created, 201, headers)


@router.post(
    "/check",
    summary="检查要素（不保存） Check a feature without saving it",
    response_class=JSONResponse,
    **rule("edit", **FEATURE_BODY),
)
async def check_feature(layer: LayerDep, session: SessionDep, actor: SignedInDep, request: Request) -> JSONResponse:
    """Run every check a save would (codes, rules, location, area) and answer the completed properties, or 422."""
    body = await _read_feature(request)

    def check() -> dict[str, Any]:
        clean = {k: v for k, v in body.items() if k not in ("note", "version")} if isinstance(body, dict) else body
        props, _ = features.check_feature(session, layer, clean)
        features.check_area(layer, actor, props)
        return {"ok": True, "properties": jsonable_encoder(props)}

    return JSONResponse(await run_in_threadpool(check))


@router.get("/{fid}", summary="读取要素 Read a feature", response_class=GeoJSONResponse, **rule("user"))
def get_feature(
    layer: LayerDep, session: ReadSessionDep, fid: FeatureId, actor: ActorDep, request: Request
) -> GeoJSONResponse:
    """Return one feature; its ETag is its version (send it back as If-Match to change it)."""
    found = features.get_feature(session, layer, fid)
    _log_personal(session, layer, actor, [fid], request.url.path)
    return _geojson(found, headers=_etag(found))


IfMatch = Annotated[
    str | None, Header(alias="If-Match", description="所读版本的 ETag the ETag of the version read (or *)")
]


@router.put(
    "/{fid}",
    summary="替换要素 Replace a feature (every field)",
    response_class=GeoJSONResponse,
    **rule("edit", **FEATURE_BODY),
)
async def replace_feature(
    layer: LayerDep, session: SessionDep, fid: FeatureId, actor: SignedInDep, request: Request, if_match: IfMatch = None
) -> GeoJSONResponse:
    """Replace a feature's properties (every field given) and geometry; If-Match is required."""
    return await _change(layer, session, fid, actor, request, if_match, partial=False)


async def _change(
    layer: Layer,
    session: Session,
    fid: int,
    actor: Actor,
    request: Request,
    if_match: str | None,
    *,
    partial: bool,
) -> GeoJSONResponse:
    """Replace (PUT) or change (PATCH) feature FID as the version If-Match names; answer it with its new ETag."""
    version = features.parse_if_match(if_match)
    body = await _read_feature(request)
    updated = await run_in_threadpool(
        _commit, session, features.replace_feature, layer, fid, body, actor, version, partial=partial
    )
    return _geojson(updated, headers=_etag(updated))


@router.patch(
    "/{fid}",
    summary="修改要素 Change some fields or the shape",
    response_class=GeoJSONResponse,
    **rule("edit", **FEATURE_BODY),
)
async def patch_feature(
    layer: LayerDep, session: SessionDep, fid: FeatureId, actor: SignedInDep, request: Request, if_match: IfMatch = None
) -> GeoJSONResponse:
    """Change the properties given (the others stay) and, when sent, the geometry; If-Match is required."""
    return await _change(layer, session, fid, actor, request, if_match, partial=True)


@router.delete("/{fid}", summary="删除要素 Delete a feature", status_code=204, **rule("edit"))
def delete_feature(
    layer: LayerDep,
    session: SessionDep,
    fid: FeatureId,
    if_match: IfMatch = None,
    note: str | None = Query(None, max_length=500, description="删除原因 why (kept in the history)"),
) -> Response:
    """Delete a feature (kept in its history: it can be restored with its id); If-Match is required."""
    version = features.parse_if_match(if_match)
    features.delete_feature(session, layer, fid, version, note)
    session.commit()
    return Response(status_code=204)


@router.get("/{fid}/history", summary="修改历史 A feature's history", **rule("user"))
def feature_history(layer: LayerDep, session: ReadSessionDep, fid: FeatureId, actor: ActorDep) -> dict[str, Any]:
    """Return every change of the feature, newest first: who, when, why, and the versions before and after."""
    try:
        current: dict[str, Any] | None = features.get_feature(session, layer, fid)
    except NotFound:
        current = None
    found = changes.changes_of(session, layer, fid, current)
    if not found:
        raise NotFound.one(
            "feature_not_found", f"{layer.zh}中没有编号为 {fid} 的要素", f"no feature {fid} in {layer.en}", id=fid
        )
    return {"layer": layer.id, "feature_id": fid, "deleted": current is None, "changes": found}


@router.post("/{fid}/restore", summary="恢复到某一版本 Restore a version", **rule("edit"))
async def restore_feature(
    layer: LayerDep, session: SessionDep, fid: FeatureId, actor: SignedInDep, request: Request, if_match: IfMatch = None
) -> GeoJSONResponse:
    """Bring the feature back as it stood after the change named in ``{"change": id}`` (a deleted one too).

    If-Match is required: the version it replaces (``*`` for a deleted feature).
    """
    version = features.parse_if_match(if_match)
    body = await _read_json(request)
    change = body.get("change")
    if not _whole(change, 2**63 - 1):
        raise InvalidInput.one(
            "change_required", "请给出要恢复的修改记录编号 change", "give the change id", field="change"
        )
    restored = await run_in_threadpool(
        _commit, session, features.restore_feature, layer, fid, change, actor, body.get("note"), version
    )
    return _geojson(restored, headers=_etag(restored))


MAX_PARTS = 50
"""Features merged, or new parts of a split, at most in one request."""


def _whole(value: Any, top: int = 2**31 - 1) -> bool:
    """Return whether VALUE is a whole number an id column can hold (JSON true is no number)."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= top


async def _read_json(request: Request) -> dict[str, Any]:
    body = await _read_feature(request)
    if not isinstance(body, dict):
        raise MalformedInput.one("body_not_object", "请求体应为 JSON 对象", "body must be a JSON object")
    return body


ops_router = APIRouter(prefix="/api/layers/{layer_id}", tags=["features"])


@ops_router.post("/split", summary="分割 Split a polygon along a line", **rule("edit"))
async def split_feature(
    layer: LayerDep, session: SessionDep, actor: SignedInDep, request: Request, if_match: IfMatch = None
) -> GeoJSONResponse:
    """Split ``{"id", "line", "codes"}``: the largest part keeps the feature, each other part becomes a new one."""
    version = features.parse_if_match(if_match)
    body = await _read_json(request)
    fid, codes = body.get("id"), body.get("codes") or []
    if not _whole(fid) or not isinstance(codes, list) or len(codes) > MAX_PARTS:
        raise InvalidInput.one(
            "split_invalid", "请给出 id（整数）、line 与 codes（列表）", "give id, line and codes", field="id"
        )
    parts = await run_in_threadpool(
        _commit, session, features.split_feature, layer, fid, body.get("line"), codes, actor, version, body.get("note")
    )
    return _geojson({"type": "FeatureCollection", "features": parts})


@ops_router.post("/merge", summary="合并 Merge adjacent polygons", **rule("edit"))
async def merge_features(layer: LayerDep, session: SessionDep, actor: SignedInDep, request: Request) -> GeoJSONResponse:
    """Merge ``{"ids", "keep", "versions": {id: version}}`` into the kept feature; the others are deleted."""
    body = await _read_json(request)
    ids, keep, versions = body.get("ids"), body.get("keep"), body.get("versions")
    valid = isinstance(ids, list) and len(ids) <= MAX_PARTS and all(_whole(i) for i in ids)
    if not valid or not _whole(keep) or not isinstance(versions, dict):
        raise InvalidInput.one(
            "merge_invalid",
            "请给出 ids（至多50个）、keep 与 versions",
            "give ids (up to 50), keep and versions",
            field="ids",
        )
    merged = await run_in_threadpool(
        _commit, session, features.merge_features, layer, ids, keep, versions, actor, body.get("note")
    )
    return _geojson(merged, headers=_etag(merged))
