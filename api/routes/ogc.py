"""OGC API – Features under /ogc: Part 1 Core, Part 2 CRS, Part 3 Filtering (CQL2), Part 4 Create/Replace/Update/Delete.

GDAL (``ogrinfo OAPIF:https://host/ogc``), QGIS and any OGC client read the layers here. The
collections, CRS, queryables, schemas and the CQL2 translation come from ``layers.ogc``; the
writes are the features API's own (``layers.features``): the same checks, roles, area, ETag
and history. Reads need a signed-in user (rule "user"; the database keeps them to the area);
the landing page and the conformance are public (the API document names the layers: signed
in). Links are absolute, built from the request's own address (its Host is one of
GUATU_ALLOWED_HOSTS: ``api.security``): GDAL follows them as given.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Header, Path, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.auth import ActorDep, SignedInDep, rule
from api.deps import LayerDep, ReadGenerationsDep, ReadSessionDep, SessionDep
from api.routes.features import FEATURE_BODY, GEOJSON, JSON_TYPES, _commit, _log_personal, _read_feature
from api.routes.tiles import extent_of, tile_cache
from api.work import heavy, lane
from layers import features, ogc
from layers.access import Actor
from layers.base import Layer
from layers.ogc_tiles import TILES_CONFORMANCE, tiles_links
from spatial.errors import MalformedInput, NotFound
from spatial.work import CancelToken

router = APIRouter(prefix="/ogc", tags=["ogc"])

OPENAPI = "application/vnd.oai.openapi+json;version=3.0"
SCHEMA_JSON = "application/schema+json"
MERGE_PATCH = "application/merge-patch+json"
FeatureId = Annotated[int, Path(ge=1, le=2**31 - 1, description="要素编号 feature id")]
IfMatch = Annotated[str | None, Header(alias="If-Match", description="所读版本的 ETag the ETag read (or *)")]
LANE_ABOVE = 1_000
"""A page of more features than this is read in the exports lane (api.work): a county's 10,000-feature pages queue."""
RESERVED = frozenset(
    {"bbox", "bbox-crs", "crs", "limit", "offset", "cursor", "datetime", "filter", "filter-lang", "filter-crs", "f"}
)


def more_conformance() -> list[str]:
    """Return the conformance classes the other OGC APIs served here add (Tiles: api/routes/ogc_tiles.py)."""
    return list(TILES_CONFORMANCE)


def more_links(base: str, layer: Layer | None) -> list[dict[str, Any]]:
    """Return the links other OGC APIs add to the landing page (LAYER None) or to LAYER's collection.

    The landing page links the tile matrix sets and the map's style; a collection its tilesets and style.
    """
    if layer is not None:
        return tiles_links(base, layer)
    return [
        {
            "rel": "http://www.opengis.net/def/rel/ogc/1.0/tiling-schemes",
            "type": "application/json",
            "title": "瓦片矩阵集 Tile matrix sets",
            "href": f"{base}/ogc/tileMatrixSets",
        },
        {
            "rel": "http://www.opengis.net/def/rel/ogc/1.0/styles",
            "type": "application/vnd.mapbox.style+json",
            "title": "地图样式 Map style (MapLibre GL)",
            "href": f"{base}/ogc/styles/guatu",
        },
    ]


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/ogc"


def _json(data: Any, media: str = "application/json", headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), media_type=media, headers=headers)


@router.get("/", summary="OGC API 入口 Landing page", **rule("public"))
def landing(request: Request) -> Response:
    """Return the landing page: links to the API document, the conformance and the collections."""
    base = _base(request)
    links = [
        {"rel": "self", "href": f"{base}/", "type": "application/json", "title": "本页 this document"},
        {"rel": "service-desc", "href": f"{base}/api", "type": OPENAPI, "title": "OpenAPI 3.0 文档 API definition"},
        {
            "rel": "conformance",
            "href": f"{base}/conformance",
            "type": "application/json",
            "title": "符合性 conformance",
        },
        {"rel": "data", "href": f"{base}/collections", "type": "application/json", "title": "集合 collections"},
        *more_links(base, None),
    ]
    return _json(
        {
            "title": "挂图 guatu OGC API – Features",
            "description": "集体资源台账图层（地块、商铺、网格……） guatu's layers as OGC API – Features",
            "links": links,
        }
    )


router.add_api_route(
    "", landing, methods=["GET"], include_in_schema=False, summary="OGC API 入口 Landing page", **rule("public")
)


@router.get("/conformance", summary="符合性 Conformance classes", **rule("public"))
def conformance() -> Response:
    """Return the conformance classes claimed: each is exercised by tests/test_ogc.py."""
    return _json({"conformsTo": [*ogc.CONFORMANCE, *more_conformance()]})


def _collection(
    request: Request, session: Session, layer: Layer, read: Callable[[str], int], actor: Actor | None
) -> dict[str, Any]:
    cache = tile_cache(request)
    extent = extent_of(cache, session, layer, read, actor)
    base = _base(request)
    return ogc.collection(layer, base, extent, ogc.temporal_extent(session, layer), more_links(base, layer))


@router.get("/collections", summary="集合列表 Collections", **rule("user"))
def collections(request: Request, session: ReadSessionDep, read: ReadGenerationsDep, actor: ActorDep) -> Response:
    """Return every layer as a collection: titles, extent (of what the user may see), CRS and links."""
    base = _base(request)
    found = [_collection(request, session, layer, read, actor) for layer in ogc.collections_in_order()]
    links = [{"rel": "self", "href": f"{base}/collections", "type": "application/json"}]
    return _json({"collections": found, "links": links})


@router.get("/collections/{layer_id}", summary="集合 A collection", **rule("user"))
def one_collection(
    layer: LayerDep, request: Request, session: ReadSessionDep, read: ReadGenerationsDep, actor: ActorDep
) -> Response:
    """Return one layer as a collection."""
    return _json(_collection(request, session, layer, read, actor))


@router.get("/collections/{layer_id}/queryables", summary="可查询字段 Queryables", **rule("user"))
def queryables(layer: LayerDep, request: Request) -> Response:
    """Return the fields a filter may name (personal ones never) as JSON Schema."""
    return _json(ogc.queryables(layer, f"{_base(request)}/collections/{layer.id}/queryables"), SCHEMA_JSON)


@router.get("/collections/{layer_id}/schema", summary="模式 Schema", **rule("user"))
def schema(layer: LayerDep, request: Request, form: str | None = None) -> Response:
    """Return the schema of the layer's features (``?form=feature``: of a whole GeoJSON Feature, as GDAL reads it)."""
    url = f"{_base(request)}/collections/{layer.id}/schema"
    body = ogc.feature_schema(layer, url + "?form=feature") if form == "feature" else ogc.schema(layer, url)
    return _json(body, SCHEMA_JSON)


def _one(params: Any, name: str) -> str | None:
    values = params.getlist(name)
    if len(values) > 1:
        raise MalformedInput.one(
            "parameter_repeated", f"参数 {name} 只能给一次", f"parameter {name} given more than once", field=name
        )
    return values[0] if values else None


def _whole(raw: str | None, name: str, low: int, high: int, default: int) -> int:
    if raw is None or raw == "":
        return default
    if not (raw.strip().isascii() and raw.strip().isdigit()) or len(raw.strip()) > 12:  # not ² nor ٣
        raise MalformedInput.one(
            f"{name}_invalid", f"{name} 应为非负整数", f"{name} must be a whole number", field=name
        )
    return max(low, min(int(raw), high))


def _link(base: str, rel: str, params: dict[str, str], title: str) -> dict[str, Any]:
    query = urlencode(params)
    return {"rel": rel, "href": base + (f"?{query}" if query else ""), "type": GEOJSON, "title": title}


@router.get(
    "/collections/{layer_id}/items",
    summary="要素 Features",
    response_class=Response,
    description=(
        "Part 1: bbox, limit (≤10000), offset or cursor (next links), datetime, and a declared filter field "
        "as ?field=value. Part 2: crs, bbox-crs. Part 3: filter, filter-lang (cql2-text, cql2-json), filter-crs."
    ),
    **rule("user"),
)
async def items(layer: LayerDep, request: Request, session: ReadSessionDep, actor: ActorDep) -> Response:
    """Return a page of the layer's features as GeoJSON, with paging links and the count matched.

    The parameters are read and the filter translated first (a bad one is refused at once);
    a page of more than LANE_ABOVE features is read in the exports lane (bounded, per user).
    """
    params = request.query_params
    crs = ogc.parse_crs_uri(_one(params, "crs"), "crs")
    conditions: list[Any] = ogc.property_conditions(layer, {k: v for k, v in params.items() if k not in RESERVED})
    box = ogc.bbox_condition(layer, _one(params, "bbox"), ogc.parse_crs_uri(_one(params, "bbox-crs"), "bbox-crs"))
    when = ogc.datetime_condition(layer, _one(params, "datetime"))
    cql = ogc.filter_condition(
        layer,
        _one(params, "filter"),
        _one(params, "filter-lang"),
        ogc.parse_crs_uri(_one(params, "filter-crs"), "filter-crs"),
    )
    conditions += [c for c in (box, when, cql) if c is not None]
    limit = _whole(_one(params, "limit"), "limit", 1, ogc.MAX_LIMIT, ogc.DEFAULT_LIMIT)
    offset = _whole(_one(params, "offset"), "offset", 0, 10**9, 0)
    raw_cursor = _one(params, "cursor")
    cursor = _whole(raw_cursor, "cursor", 0, 2**31 - 1, 0) if raw_cursor else None
    route = request.url.path

    def read() -> ogc.Page:
        found = ogc.items(session, layer, conditions, crs, limit=limit, offset=offset, after=cursor)
        _log_personal(session, layer, actor, found.ids, route)
        return found

    if limit > LANE_ABOVE:

        async def job(token: CancelToken) -> ogc.Page:
            return await lane(request, "exports").run(read)

        page = await heavy(request, "exports", job)
    else:
        page = await run_in_threadpool(read)
    here = f"{_base(request)}/collections/{layer.id}/items"
    kept = {k: v for k, v in params.items() if k not in ("offset", "cursor")}
    same = dict(params.items())
    links = [_link(here, "self", same, "本页 this page")]
    full = len(page.features) == limit and (page.matched is None or offset + len(page.features) < page.matched)
    if full and page.ids:
        links.append(_link(here, "next", kept | {"cursor": str(page.ids[-1])}, "下一页 next page"))
    if cursor is None and offset > 0:
        links.append(_link(here, "prev", kept | {"offset": str(max(0, offset - limit))}, "上一页 previous page"))
    links.append({"rel": "collection", "href": f"{_base(request)}/collections/{layer.id}", "type": "application/json"})
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = b"".join(ogc.feature_collection(page, links, stamp))
    return Response(body, media_type=GEOJSON, headers={"Content-Crs": f"<{crs.uri}>"})


@router.get("/collections/{layer_id}/items/{fid}", summary="要素 A feature", response_class=Response, **rule("user"))
def item(
    layer: LayerDep, fid: FeatureId, request: Request, session: ReadSessionDep, actor: ActorDep, crs: str | None = None
) -> Response:
    """Return one feature; its ETag is its version (send it back as If-Match to change it)."""
    out = ogc.parse_crs_uri(crs, "crs")
    found = ogc.item(session, layer, fid, out)
    if found is None:
        raise NotFound.one(
            "feature_not_found", f"{layer.zh}中没有编号为 {fid} 的要素", f"no feature {fid} in {layer.en}", id=fid
        )
    _log_personal(session, layer, actor, [fid], request.url.path)
    text, version = found
    headers = {"ETag": f'"{version}"', "Content-Crs": f"<{out.uri}>"}
    return Response(text.encode(), media_type=GEOJSON, headers=headers)


def _content_crs(request: Request) -> ogc.OutCrs:
    raw = request.headers.get("content-crs")
    return ogc.parse_crs_uri(raw.strip().strip("<>") if raw else None, "Content-Crs")


def _written(request: Request, layer: Layer, feature: dict[str, Any], status: int) -> Response:
    location = f"{_base(request)}/collections/{layer.id}/items/{feature['id']}"
    headers = {"ETag": f'"{feature["version"]}"', "Location": location, "Content-Crs": f"<{ogc.CRS84}>"}
    return Response(orjson.dumps(feature), status_code=status, media_type=GEOJSON, headers=headers)


@router.post(
    "/collections/{layer_id}/items",
    summary="新增要素 Create a feature (Part 4)",
    status_code=201,
    response_class=Response,
    **rule("edit", **FEATURE_BODY),
)
async def create_item(layer: LayerDep, session: SessionDep, actor: SignedInDep, request: Request) -> Response:
    """Validate and store a GeoJSON Feature as the features API does (same checks, area, history)."""
    crs = _content_crs(request)
    body = ogc.feature_to_storage(await _read_feature(request), crs)
    created = await run_in_threadpool(_commit, session, features.create_feature, layer, body, actor)
    return _written(request, layer, created, 201)


async def _change(
    layer: Layer, session: Session, fid: int, actor: Actor, request: Request, if_match: str | None, *, partial: bool
) -> Response:
    version = features.parse_if_match(if_match)
    crs = _content_crs(request)
    types = (*JSON_TYPES, MERGE_PATCH) if partial else JSON_TYPES
    body = ogc.feature_to_storage(await _read_feature(request, types), crs)
    updated = await run_in_threadpool(
        _commit, session, features.replace_feature, layer, fid, body, actor, version, partial=partial
    )
    return _written(request, layer, updated, 200)


@router.put(
    "/collections/{layer_id}/items/{fid}",
    summary="替换要素 Replace a feature (Part 4)",
    response_class=Response,
    **rule("edit", **FEATURE_BODY),
)
async def replace_item(
    layer: LayerDep, session: SessionDep, fid: FeatureId, actor: SignedInDep, request: Request, if_match: IfMatch = None
) -> Response:
    """Replace every field and the geometry; If-Match is required (the ETag read)."""
    return await _change(layer, session, fid, actor, request, if_match, partial=False)


@router.patch(
    "/collections/{layer_id}/items/{fid}",
    summary="修改要素 Update a feature (Part 4)",
    response_class=Response,
    **rule("edit", **FEATURE_BODY),
)
async def update_item(
    layer: LayerDep, session: SessionDep, fid: FeatureId, actor: SignedInDep, request: Request, if_match: IfMatch = None
) -> Response:
    """Change the properties given (the others stay) and, when sent, the geometry; If-Match is required."""
    return await _change(layer, session, fid, actor, request, if_match, partial=True)


@router.delete(
    "/collections/{layer_id}/items/{fid}", summary="删除要素 Delete a feature (Part 4)", status_code=204, **rule("edit")
)
def delete_item(layer: LayerDep, session: SessionDep, fid: FeatureId, if_match: IfMatch = None) -> Response:
    """Delete a feature (kept in its history); If-Match is required."""
    version = features.parse_if_match(if_match)
    features.delete_feature(session, layer, fid, version, None)
    session.commit()
    return Response(status_code=204)


# --------------------------------------------------------------------------- the API document


def _param(name: str, description: str, schema: dict[str, Any], style: str | None = None) -> dict[str, Any]:
    out = {"name": name, "in": "query", "required": False, "description": description, "schema": schema}
    if style:
        out |= {"style": style, "explode": False}
    return out


DATETIME_HELP = "RFC 3339 时刻或区间 instant or interval (a versioned layer: its validity; else: its last change)"


def _items_parameters(layer: Layer) -> list[dict[str, Any]]:
    params = [
        _param(
            "bbox",
            "minx,miny,maxx,maxy (bbox-crs, CRS84 by default)",
            {"type": "array", "items": {"type": "number"}},
            "form",
        ),
        _param("bbox-crs", "bbox 的坐标系 CRS of bbox", {"type": "string", "format": "uri"}),
        _param("crs", "输出坐标系 CRS of the response", {"type": "string", "format": "uri"}),
        _param(
            "limit",
            "每页要素数 features per page",
            {"type": "integer", "minimum": 1, "maximum": ogc.MAX_LIMIT, "default": ogc.DEFAULT_LIMIT},
        ),
        _param("offset", "跳过的要素数 features skipped", {"type": "integer", "minimum": 0, "default": 0}),
        _param("cursor", "上一页最后的要素编号（next 链接）the last id of the page before", {"type": "integer"}),
        _param("datetime", DATETIME_HELP, {"type": "string"}),
        _param("filter", "CQL2 筛选 filter", {"type": "string"}),
        _param("filter-lang", "cql2-text (default), cql2-json", {"type": "string", "enum": list(ogc.FILTER_LANGS)}),
        _param("filter-crs", "筛选中几何的坐标系 CRS of the filter's geometries", {"type": "string", "format": "uri"}),
    ]
    for f in layer.fields:
        if f.filter and not f.personal:
            params.append(_param(f.name, f"{f.zh} {f.en} =", {"type": "string"}))
    return params


def _ok(description: str, media: str) -> dict[str, Any]:
    return {"200": {"description": description, "content": {media: {"schema": {"type": "object"}}}}}


def openapi(base: str) -> dict[str, Any]:
    """Return the OpenAPI 3.0 document of the OGC API (one items path per collection, with its parameters)."""
    paths: dict[str, Any] = {
        "/": {"get": {"summary": "Landing page", "responses": _ok("landing page", "application/json")}},
        "/conformance": {"get": {"summary": "Conformance", "responses": _ok("conformance", "application/json")}},
        "/collections": {"get": {"summary": "Collections", "responses": _ok("collections", "application/json")}},
    }
    for layer in ogc.collections_in_order():
        at = f"/collections/{layer.id}"
        feature_id = {"name": "featureId", "in": "path", "required": True, "schema": {"type": "integer"}}
        paths[at] = {"get": {"summary": f"{layer.zh} {layer.en}", "responses": _ok("collection", "application/json")}}
        paths[f"{at}/queryables"] = {"get": {"summary": "Queryables", "responses": _ok("queryables", SCHEMA_JSON)}}
        paths[f"{at}/schema"] = {"get": {"summary": "Schema", "responses": _ok("schema", SCHEMA_JSON)}}
        paths[f"{at}/items"] = {
            "get": {
                "summary": f"{layer.zh}要素 features of {layer.en}",
                "parameters": _items_parameters(layer),
                "responses": _ok("features", GEOJSON),
            },
            "post": {"summary": "Create (Part 4)", "responses": {"201": {"description": "created"}}},
        }
        paths[f"{at}/items/{{featureId}}"] = {
            "parameters": [feature_id],
            "get": {"summary": "A feature", "responses": _ok("feature", GEOJSON)},
            "put": {"summary": "Replace (Part 4)", "responses": {"200": {"description": "replaced"}}},
            "patch": {"summary": "Update (Part 4)", "responses": {"200": {"description": "updated"}}},
            "delete": {"summary": "Delete (Part 4)", "responses": {"204": {"description": "deleted"}}},
        }
    return {
        "openapi": "3.0.3",
        "info": {"title": "挂图 guatu OGC API – Features", "version": "1.0.0"},
        "servers": [{"url": base}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }


@router.get("/api", summary="OpenAPI 文档 API definition", **rule("user"))
def api_document(request: Request) -> JSONResponse:
    """Return the OpenAPI 3.0 document of the OGC API."""
    return JSONResponse(openapi(_base(request)), media_type=OPENAPI)
