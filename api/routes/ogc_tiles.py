"""OGC API – Tiles for the layers' vector tiles, and their MapLibre GL style.

``/ogc/tileMatrixSets``, ``/ogc/tileMatrixSets/WebMercatorQuad``, ``/ogc/collections/{id}/tiles``,
``/ogc/collections/{id}/tiles/WebMercatorQuad`` (whose ``item`` link is the template of the existing
``/tiles/{layer}/{z}/{x}/{y}.pbf``), the tile itself at the OGC path, and ``/ogc/styles/guatu``
(``/ogc/collections/{id}/styles/guatu`` for one layer). The landing page, conformance and the
collections are the OGC API – Features routes' (:mod:`api.routes.ogc`): they take
:data:`TILES_CONFORMANCE` and :func:`tiles_links` from here. URLs start with GUATU_PUBLIC_URL
(what the proxy serves), never the request's Host.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from api.auth import ActorDep, rule
from api.deps import LayerDep, ReadGenerationsDep, ReadSessionDep
from api.routes import tiles
from layers import ogc_tiles
from layers.ogc_tiles import TILES_CONFORMANCE, tiles_links
from spatial.errors import NotFound

__all__ = ["TILES_CONFORMANCE", "router", "tiles_links"]

router = APIRouter(tags=["ogc-tiles"])
STYLE = "application/vnd.mapbox.style+json"
STYLE_ID = "guatu"


def _base(request: Request) -> str:
    base: str = request.app.state.settings.public_url
    return base.rstrip("/")


def _tms(tms_id: str) -> None:
    if tms_id != ogc_tiles.TMS_ID:
        raise NotFound.one(
            "tile_matrix_set_unknown",
            f"没有这个瓦片矩阵集：{tms_id[:40]}（仅 WebMercatorQuad）",
            f"no tile matrix set {tms_id[:40]!r} (WebMercatorQuad only)",
            field="tileMatrixSetId",
        )


@router.get("/ogc/tileMatrixSets", summary="瓦片矩阵集 Tile matrix sets", **rule("public"))
def tile_matrix_sets(request: Request) -> JSONResponse:
    """Return the tile matrix sets the tiles follow (WebMercatorQuad). Holds no data: public."""
    return JSONResponse(ogc_tiles.tile_matrix_sets(_base(request)))


@router.get("/ogc/tileMatrixSets/{tms_id}", summary="瓦片矩阵集定义 Tile matrix set", **rule("public"))
def tile_matrix_set(tms_id: str, request: Request) -> JSONResponse:
    """Return the definition of WebMercatorQuad (2D TMS 2.0, JSON). Holds no data: public."""
    _tms(tms_id)
    return JSONResponse(ogc_tiles.tile_matrix_set(_base(request)))


@router.get("/ogc/collections/{layer_id}/tiles", summary="矢量瓦片集 Vector tilesets", **rule("user"))
def collection_tilesets(layer: LayerDep, request: Request) -> JSONResponse:
    """Return the layer's tilesets (one, vector, in WebMercatorQuad)."""
    return JSONResponse(ogc_tiles.tilesets(_base(request), layer))


@router.get("/ogc/collections/{layer_id}/tiles/{tms_id}", summary="矢量瓦片集元数据 Tileset", **rule("user"))
def collection_tileset(
    layer: LayerDep,
    tms_id: str,
    session: ReadSessionDep,
    read: ReadGenerationsDep,
    request: Request,
    actor: ActorDep,
) -> JSONResponse:
    """Return the tileset's metadata: its layer's fields, zooms, the extent the user sees, the tile URL template."""
    _tms(tms_id)
    cache = tiles.tile_cache(request)
    extent = tiles.extent_of(cache, session, layer, read, actor)
    return JSONResponse(ogc_tiles.tileset(_base(request), layer, extent))


router.add_api_route(
    "/ogc/collections/{layer_id}/tiles/WebMercatorQuad/{z}/{y}/{x}",
    tiles.vector_tile,
    methods=["GET"],
    summary="矢量瓦片 Vector tile (OGC path: tileMatrix/tileRow/tileCol)",
    response_class=Response,
    **rule("user"),
)


@router.get("/ogc/styles/guatu", summary="地图样式 Map style (MapLibre GL)", **rule("public"))
def style(request: Request) -> JSONResponse:
    """Return the style drawing every layer's vector tiles as the map does. Holds no data: public."""
    return JSONResponse(ogc_tiles.style_document(_base(request)), media_type=STYLE)


@router.get("/ogc/collections/{layer_id}/styles/guatu", summary="图层样式 Layer style (MapLibre GL)", **rule("public"))
def collection_style(layer: LayerDep, request: Request) -> JSONResponse:
    """Return the style of one layer's vector tiles. Holds no data: public."""
    return JSONResponse(ogc_tiles.style_document(_base(request), [layer]), media_type=STYLE)
