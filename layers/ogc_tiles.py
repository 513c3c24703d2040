"""OGC API – Tiles documents and a MapLibre GL style for the layers' vector tiles, derived from the declarations.

The tiles themselves are :mod:`layers.tiles`' (``/tiles/{layer}/{z}/{x}/{y}.pbf``, also answered at
the OGC path ``/ogc/collections/{layer}/tiles/WebMercatorQuad/{tileMatrix}/{tileRow}/{tileCol}``).
Here: the one tile matrix set they follow (WebMercatorQuad, computed from its definition in OGC
17-083r4, Annex D: a square of half-side πR in EPSG:3857, 256-pixel tiles, 2^z tiles a side), the
tilesets of each layer, and a style drawing each layer as its ``Style`` says (a colour per value of
the styled field, the emphasised value's outline thicker).
"""

from __future__ import annotations

import math
from typing import Any

from layers.base import REGISTRY, Layer
from layers.tiles import MAX_ZOOM, WEB_MERCATOR_HALF, tile_properties

TMS_ID = "WebMercatorQuad"
TMS_URI = "http://www.opengis.net/def/tilematrixset/OGC/1.0/WebMercatorQuad"
CRS_3857 = "http://www.opengis.net/def/crs/EPSG/0/3857"
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
MVT = "application/vnd.mapbox-vector-tile"
REL_TILESETS = "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector"
REL_SCHEME = "http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme"
REL_STYLE = "describedby"
PIXEL_M = 0.00028
"""The standardized rendering pixel size (0.28 mm) relating a cell size to a scale denominator."""
TILE_SIZE = 256

TILES_CONFORMANCE: list[str] = [
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tileset",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tilesets-list",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/geodata-tilesets",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/mvt",
]
"""The OGC API – Tiles conformance classes these routes meet (each exercised in tests/test_ogc_tiles.py)."""


def tile_matrix(z: int) -> dict[str, Any]:
    """Return tile matrix Z of WebMercatorQuad (2D TMS 2.0 JSON encoding)."""
    cell = 2 * WEB_MERCATOR_HALF / TILE_SIZE / 2**z
    return {
        "id": str(z),
        "identifier": str(z),  # the TMS 1.0 (17-083r2) names, beside 2.0's: GDAL 3.6 reads those
        "topLeftCorner": [-WEB_MERCATOR_HALF, WEB_MERCATOR_HALF],
        "scaleDenominator": cell / PIXEL_M,
        "cellSize": cell,
        "cornerOfOrigin": "topLeft",
        "pointOfOrigin": [-WEB_MERCATOR_HALF, WEB_MERCATOR_HALF],
        "tileWidth": TILE_SIZE,
        "tileHeight": TILE_SIZE,
        "matrixWidth": 2**z,
        "matrixHeight": 2**z,
    }


def tile_matrix_set(base_url: str) -> dict[str, Any]:
    """Return the WebMercatorQuad tile matrix set, zoom 0 to the tiles' highest."""
    return {
        "id": TMS_ID,
        "identifier": TMS_ID,
        "title": "Google Maps Compatible for the World (Web Mercator)",
        "uri": TMS_URI,
        "crs": CRS_3857,
        "supportedCRS": CRS_3857,
        "orderedAxes": ["X", "Y"],
        "boundingBox": {
            "crs": CRS_3857,
            "lowerLeft": [-WEB_MERCATOR_HALF, -WEB_MERCATOR_HALF],
            "upperRight": [WEB_MERCATOR_HALF, WEB_MERCATOR_HALF],
            "lowerCorner": [-WEB_MERCATOR_HALF, -WEB_MERCATOR_HALF],  # TMS 1.0's names of the same corners
            "upperCorner": [WEB_MERCATOR_HALF, WEB_MERCATOR_HALF],
        },
        "wellKnownScaleSet": "http://www.opengis.net/def/wkss/OGC/1.0/GoogleMapsCompatible",
        "tileMatrices": [tile_matrix(z) for z in range(MAX_ZOOM + 1)],
        "links": [{"rel": "self", "type": "application/json", "href": f"{base_url}/ogc/tileMatrixSets/{TMS_ID}"}],
    }


def tile_matrix_sets(base_url: str) -> dict[str, Any]:
    """Return the list of tile matrix sets (one)."""
    href = f"{base_url}/ogc/tileMatrixSets/{TMS_ID}"
    return {
        "tileMatrixSets": [
            {
                "id": TMS_ID,
                "title": "Google Maps Compatible for the World (Web Mercator)",
                "uri": TMS_URI,
                "crs": CRS_3857,
                "links": [{"rel": "self", "type": "application/json", "href": href}],
            }
        ],
        "links": [{"rel": "self", "type": "application/json", "href": f"{base_url}/ogc/tileMatrixSets"}],
    }


def tiles_links(base_url: str, layer: Layer) -> list[dict[str, Any]]:
    """Return the links a collection document gives to LAYER's vector tilesets and its style."""
    return [
        {
            "rel": REL_TILESETS,
            "type": "application/json",
            "title": f"{layer.zh}矢量瓦片 Vector tilesets",
            "href": f"{base_url}/ogc/collections/{layer.id}/tiles",
        },
        {
            "rel": REL_STYLE,
            "type": "application/vnd.mapbox.style+json",
            "title": f"{layer.zh}样式 Style (MapLibre GL)",
            "href": f"{base_url}/ogc/collections/{layer.id}/styles/guatu",
        },
    ]


def tile_template(base_url: str, layer: Layer) -> str:
    """Return the URL template of LAYER's tiles with the OGC variables (the existing pbf route)."""
    return f"{base_url}/tiles/{layer.id}/{{tileMatrix}}/{{tileCol}}/{{tileRow}}.pbf"


def _schema(layer: Layer) -> dict[str, Any]:
    """Return the JSON schema of the properties a tile carries for LAYER."""
    kinds = {"int": "integer", "float": "number"}
    props: dict[str, Any] = {"id": {"type": "integer", "title": "编号 id"}}
    for name in tile_properties(layer):
        f = layer.field(name)
        prop: dict[str, Any] = {"type": kinds.get(f.kind, "string"), "title": f"{f.zh} {f.en}"}
        if f.choices:
            prop["enum"] = list(f.choices)
        props[name] = prop
    return {"type": "object", "properties": props}


def _tileset_summary(base_url: str, layer: Layer) -> dict[str, Any]:
    href = f"{base_url}/ogc/collections/{layer.id}/tiles/{TMS_ID}"
    return {
        "title": f"{layer.zh} {layer.en}",
        "dataType": "vector",
        "crs": CRS_3857,
        "tileMatrixSetURI": TMS_URI,
        "links": [
            {"rel": "self", "type": "application/json", "href": href},
            {"rel": REL_SCHEME, "type": "application/json", "href": f"{base_url}/ogc/tileMatrixSets/{TMS_ID}"},
        ],
    }


def tilesets(base_url: str, layer: Layer) -> dict[str, Any]:
    """Return the list of LAYER's tilesets (one: WebMercatorQuad, vector)."""
    return {
        "tilesets": [_tileset_summary(base_url, layer)],
        "links": [
            {"rel": "self", "type": "application/json", "href": f"{base_url}/ogc/collections/{layer.id}/tiles"},
            {"rel": "collection", "type": "application/json", "href": f"{base_url}/ogc/collections/{layer.id}"},
        ],
    }


def _limits(extent: list[float] | None, low: int, high: int) -> list[dict[str, Any]]:
    """Return the tile rows and columns holding EXTENT (lon/lat) at each zoom from LOW to HIGH."""
    if not extent:
        return []
    west, south, east, north = extent
    out = []
    for z in range(low, high + 1):
        n = 2**z

        def col(lon: float, n: int = n) -> int:
            return min(n - 1, max(0, int((lon + 180) / 360 * n)))

        def row(lat: float, n: int = n) -> int:
            lat = max(-85.0511, min(85.0511, lat))
            y = (1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n
            return min(n - 1, max(0, int(y)))

        out.append(
            {
                "tileMatrix": str(z),
                "minTileRow": row(north),
                "maxTileRow": row(south),
                "minTileCol": col(west),
                "maxTileCol": col(east),
            }
        )
    return out


def tileset(base_url: str, layer: Layer, extent: list[float] | None) -> dict[str, Any]:
    """Return LAYER's tileset metadata: its vector layer and fields, zooms, extent and the tile URL template."""
    low, high = layer.tile_min_zoom, MAX_ZOOM
    doc = _tileset_summary(base_url, layer)
    doc["links"] += [
        {
            "rel": "item",
            "type": MVT,
            "title": "矢量瓦片 Mapbox vector tile",
            "href": tile_template(base_url, layer),
            "templated": True,
        },
        {
            "rel": "http://www.opengis.net/def/rel/ogc/1.0/geodata",
            "type": "application/json",
            "href": f"{base_url}/ogc/collections/{layer.id}",
        },
        {"rel": REL_STYLE, "type": "application/vnd.mapbox.style+json", "href": f"{base_url}/ogc/styles/guatu"},
    ]
    doc["layers"] = [
        {
            "id": layer.id,
            "title": f"{layer.zh} {layer.en}",
            "dataType": "vector",
            "geometryDimension": 0 if all(kind.lower().endswith("point") for kind in layer.stored) else 2,
            "minTileMatrix": str(low),
            "maxTileMatrix": str(high),
            "propertiesSchema": _schema(layer),
        }
    ]
    doc["tileMatrixSetLimits"] = _limits(extent, low, min(high, low + 8))
    if extent:
        doc["boundingBox"] = {"lowerLeft": extent[:2], "upperRight": extent[2:], "crs": CRS84}
    doc["centerPoint"] = {"tileMatrix": str(max(low, layer.style.min_zoom)), "crs": CRS84}
    if extent:
        doc["centerPoint"]["coordinates"] = [(extent[0] + extent[2]) / 2, (extent[1] + extent[3]) / 2]
    return doc


# ---------------------------------------------------------------- style


def color_expression(layer: Layer) -> Any:
    """Return the MapLibre expression colouring LAYER's features by its styled field's value."""
    style = layer.style
    if not style.by or not style.colors:
        return style.default
    pairs: list[Any] = []
    for value, color in style.colors.items():
        pairs += [value, color]
    return ["match", ["coalesce", ["get", style.by], ""], *pairs, style.default]


def _dash(layer: Layer) -> list[float] | None:
    if not layer.style.dash:
        return None
    return [float(x) for x in layer.style.dash.replace(",", " ").split()]


def style_layers(layer: Layer) -> list[dict[str, Any]]:
    """Return the style layers drawing LAYER: fill and outline for polygons, circles for points, idle emphasised."""
    style = layer.style
    color = color_expression(layer)
    kinds = {kind.lower().removeprefix("multi") for kind in layer.stored}
    common = {"source": "guatu", "source-layer": layer.id, "minzoom": style.min_zoom}
    out: list[dict[str, Any]] = []
    if "polygon" in kinds:
        polygons = ["==", ["geometry-type"], "Polygon"]
        out.append(
            common
            | {
                "id": f"{layer.id}-fill",
                "type": "fill",
                "filter": polygons,
                "paint": {"fill-color": color, "fill-opacity": style.fill_opacity if style.fill else 0},
            }
        )
        line: dict[str, Any] = {"line-color": color, "line-width": style.weight}
        if _dash(layer):
            line["line-dasharray"] = _dash(layer)
        out.append(common | {"id": f"{layer.id}-line", "type": "line", "filter": polygons, "paint": line})
        if style.emphasis and style.by:
            out.append(
                common
                | {
                    "id": f"{layer.id}-emphasis",
                    "type": "line",
                    "filter": ["all", polygons, ["==", ["get", style.by], style.emphasis]],
                    "paint": {
                        "line-color": style.colors.get(style.emphasis, style.default),
                        "line-width": 3 * max(1, style.weight),
                    },
                }
            )
    if "point" in kinds:
        points = ["==", ["geometry-type"], "Point"]
        paint: dict[str, Any] = {
            "circle-color": color,
            "circle-radius": style.radius,
            "circle-opacity": style.fill_opacity if style.fill else 0,
            "circle-stroke-color": color,
            "circle-stroke-width": style.weight,
        }
        if style.emphasis and style.by:
            emphasised = ["==", ["get", style.by], style.emphasis]
            paint["circle-stroke-width"] = ["case", emphasised, 3 * max(1, style.weight), style.weight]
            paint["circle-stroke-color"] = ["case", emphasised, "#111827", color]
        out.append(common | {"id": f"{layer.id}-circle", "type": "circle", "filter": points, "paint": paint})
    if "linestring" in kinds:
        lines = ["==", ["geometry-type"], "LineString"]
        out.append(
            common
            | {
                "id": f"{layer.id}-line",
                "type": "line",
                "filter": lines,
                "paint": {"line-color": color, "line-width": style.weight},
            }
        )
    return out


def style_document(base_url: str, chosen: list[Layer] | None = None, title: str = "guatu") -> dict[str, Any]:
    """Return a MapLibre/Mapbox GL style (version 8) of CHOSEN layers (all, in map order, by default).

    Each layer has a source of its own (its tiles start at its own zoom); no glyphs or sprites:
    the style draws shapes only, and refers to nothing outside this deployment.
    """
    layers = chosen if chosen is not None else sorted(REGISTRY.values(), key=lambda x: x.order)
    sources: dict[str, Any] = {}
    drawn: list[dict[str, Any]] = []
    for layer in layers:
        source = f"guatu-{layer.id}"
        sources[source] = {
            "type": "vector",
            "tiles": [f"{base_url}/tiles/{layer.id}/{{z}}/{{x}}/{{y}}.pbf"],
            "minzoom": layer.tile_min_zoom,
            "maxzoom": MAX_ZOOM,
            "attribution": title,
        }
        for item in style_layers(layer):
            item["source"] = source
            item.setdefault("metadata", {})["guatu:layer"] = layer.id
            drawn.append(item)
    return {
        "version": 8,
        "name": title,
        "metadata": {"guatu:layers": [layer.id for layer in layers]},
        "sources": sources,
        "layers": drawn,  # no background: the style is laid over other maps (QGIS, a base map)
    }
