"""A QGIS project (.qgz) wired to this deployment: every layer through OGC API – Features, the big ones as vector tiles.

The project is written here from the declarations, element by element (QGIS's project format:
a ``qgis`` root holding the project CRS, the layer tree, the map canvas' extent and the map layers,
each with its datasource, provider, CRS and renderer). No data is in it: only URLs, names, colours
and the extent of what the user sees as the initial view.

- Each layer is a vector layer of the ``OAPIF`` provider, ``url='<base>/ogc' typename='<layer id>'``,
  drawn with a categorized renderer by its styled field, in its declared colours (the emphasised
  value's outline thicker), its declared fill opacity and outline width.
- Each layer drawn from vector tiles on the map (``Style.tiled``: a county's parcels) is also a
  vector tile layer (``type=xyz&url=<base>/tiles/<layer>/{z}/{x}/{y}.pbf``, with its zooms and the
  style URL), shown at first instead of its OGC API – Features twin, which then starts hidden.
- QGIS needs the user's API token: an authentication configuration of kind "API Header"
  (``Authorization: Bearer gt_…``) whose id may be given (``authcfg``): it is named in every datasource.

The project CRS is EPSG:4490 (CGCS2000, what the layers are stored in).
"""

from __future__ import annotations

import io
import re
import zipfile
from urllib.parse import quote
from xml.etree import ElementTree as ET

from layers.base import REGISTRY, Layer
from layers.tiles import MAX_ZOOM
from spatial.errors import InvalidInput

QGIS_VERSION = "3.34.0-Prizren"
"""The QGIS version the project says it was written for (3.34 LTR; older 3.x read it too)."""
AUTHCFG = re.compile(r"^[A-Za-z0-9]{7}$")
"""An authentication configuration id as QGIS makes them: seven letters and digits."""
PROJECT_NAME = "guatu.qgs"
CHINA = (73.5, 18.0, 135.1, 53.6)
"""The initial view when the user sees no feature yet."""

CGCS2000 = {
    "authid": "EPSG:4490",
    "srid": "4490",
    "description": "China Geodetic Coordinate System 2000",
    "proj4": "+proj=longlat +ellps=GRS80 +no_defs",
    "projectionacronym": "longlat",
    "ellipsoidacronym": "EPSG:7044",
    "geographicflag": "true",
}
WGS84 = {
    "authid": "EPSG:4326",
    "srid": "4326",
    "description": "WGS 84",
    "proj4": "+proj=longlat +datum=WGS84 +no_defs",
    "projectionacronym": "longlat",
    "ellipsoidacronym": "EPSG:7030",
    "geographicflag": "true",
}
WEB_MERCATOR = {
    "authid": "EPSG:3857",
    "srid": "3857",
    "description": "WGS 84 / Pseudo-Mercator",
    "proj4": "+proj=merc +a=6378137 +b=6378137 +lat_ts=0 +lon_0=0 +x_0=0 +y_0=0 +k=1 +units=m +nadgrids=@null +no_defs",
    "projectionacronym": "merc",
    "ellipsoidacronym": "EPSG:7059",
    "geographicflag": "false",
}


def check_authcfg(authcfg: str | None) -> str | None:
    """Return AUTHCFG if it is a QGIS authentication configuration id (7 letters and digits); refuse anything else."""
    if authcfg in (None, ""):
        return None
    if not AUTHCFG.match(authcfg):
        raise InvalidInput.one(
            "authcfg_invalid",
            "认证配置 ID 应为 7 位字母或数字（QGIS 认证管理器中显示的 ID）",
            "an authentication configuration id is 7 letters and digits (as QGIS shows it)",
            field="authcfg",
        )
    return authcfg


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    node = ET.SubElement(parent, tag, attrib)
    if text is not None:
        node.text = text
    return node


def _srs(parent: ET.Element, crs: dict[str, str]) -> None:
    srs = _sub(parent, "spatialrefsys", nativeFormat="Wkt")
    for key in ("proj4", "srid", "authid", "description", "projectionacronym", "ellipsoidacronym", "geographicflag"):
        _sub(srs, key, crs[key])


def _rgba(color: str, alpha: float = 1.0) -> str:
    """Return '#rrggbb' as QGIS writes a colour: 'r,g,b,a' (0–255)."""
    value = color.lstrip("#")
    r, g, b = (int(value[i : i + 2], 16) for i in (0, 2, 4))
    return f"{r},{g},{b},{round(255 * alpha)}"


def _options(parent: ET.Element, values: dict[str, str]) -> None:
    node = _sub(parent, "Option", type="Map")
    for name, value in values.items():
        _sub(node, "Option", name=name, type="QString", value=value)


def _kind(layer: Layer) -> str:
    """Return the kind of symbol the layer's features take: 'fill', 'marker' or 'line' (its first stored type)."""
    first = layer.stored[0].lower()
    return "marker" if first.endswith("point") else "line" if "line" in first else "fill"


def _symbol(parent: ET.Element, name: str, layer: Layer, color: str, emphasised: bool) -> None:
    """Write symbol NAME of LAYER in COLOR (the declared fill opacity, outline width; thicker if EMPHASISED)."""
    style = layer.style
    kind = _kind(layer)
    width = style.weight * (3 if emphasised else 1)
    symbol = _sub(parent, "symbol", type=kind, name=name, alpha="1", clip_to_extent="1", force_rhr="0")
    if kind == "fill":
        klass = "SimpleFill"
        values = {
            "color": _rgba(color, style.fill_opacity if style.fill else 0.0),
            "style": "solid" if style.fill else "no",
            "outline_color": _rgba(color),
            "outline_style": "dash" if style.dash else "solid",
            "outline_width": f"{width:g}",
            "outline_width_unit": "Pixel",
            "joinstyle": "round",
        }
    elif kind == "marker":
        klass = "SimpleMarker"
        values = {
            "name": "circle",
            "color": _rgba(color, style.fill_opacity if style.fill else 0.0),
            "outline_color": _rgba("#111827") if emphasised else _rgba(color),
            "outline_style": "solid",
            "outline_width": f"{width:g}",
            "outline_width_unit": "Pixel",
            "size": f"{2 * style.radius:g}",
            "size_unit": "Pixel",
        }
    else:
        klass = "SimpleLine"
        values = {
            "line_color": _rgba(color),
            "line_style": "dash" if style.dash else "solid",
            "line_width": f"{width:g}",
            "line_width_unit": "Pixel",
        }
    symbol_layer = _sub(symbol, "layer", **{"class": klass, "enabled": "1", "locked": "0", "pass": "0"})
    _options(symbol_layer, values)


def renderer(parent: ET.Element, layer: Layer) -> ET.Element:
    """Write LAYER's renderer: categorized by its styled field in the declared colours (single symbol if none)."""
    style = layer.style
    if not style.by or not style.colors:
        node = _sub(parent, "renderer-v2", type="singleSymbol", symbollevels="0", enableorderby="0", forceraster="0")
        _symbol(_sub(node, "symbols"), "0", layer, style.default, False)
        return node
    node = _sub(
        parent,
        "renderer-v2",
        type="categorizedSymbol",
        attr=style.by,
        symbollevels="0",
        enableorderby="0",
        forceraster="0",
    )
    categories = _sub(node, "categories")
    symbols = _sub(node, "symbols")
    field = layer.field(style.by)
    for n, (value, color) in enumerate(style.colors.items()):
        _sub(categories, "category", render="true", value=value, symbol=str(n), label=value, type="string")
        _symbol(symbols, str(n), layer, color, value == style.emphasis)
    other = str(len(style.colors))
    _sub(categories, "category", render="true", value="", symbol=other, label=f"其他 other ({field.zh})")
    _symbol(symbols, other, layer, style.default, False)
    source = _sub(node, "source-symbol")
    _symbol(source, "0", layer, style.default, False)
    return node


def _geometry(layer: Layer) -> tuple[str, str]:
    """Return the (geometry, wkbType) of LAYER's map layer as QGIS names them."""
    kind = _kind(layer)
    first = layer.stored[0]
    return {"fill": "Polygon", "marker": "Point", "line": "Line"}[kind], first


def oapif_source(base_url: str, layer: Layer, authcfg: str | None) -> str:
    """Return the OAPIF datasource of LAYER: the deployment's OGC API – Features, the layer's collection."""
    auth = f" authcfg='{authcfg}'" if authcfg else ""
    return f"restrictToRequestBBOX='1' typename='{layer.id}' url='{base_url}/ogc'{auth}"


def tiles_source(base_url: str, layer: Layer, authcfg: str | None) -> str:
    """Return the vector tile datasource of LAYER: its XYZ tile URL, zooms and style (values URL-encoded)."""
    url = f"{base_url}/tiles/{layer.id}/{{z}}/{{x}}/{{y}}.pbf"
    parts = [
        f"styleUrl={quote(f'{base_url}/ogc/collections/{layer.id}/styles/guatu', safe='')}",
        "type=xyz",
        f"url={quote(url, safe='')}",
        f"zmax={MAX_ZOOM}",
        f"zmin={layer.tile_min_zoom}",
    ]
    if authcfg:
        parts.insert(0, f"authcfg={authcfg}")
    return "&".join(parts)


def _map_layer(parent: ET.Element, layer_id: str, name: str, kind: str, source: str) -> ET.Element:
    node = _sub(parent, "maplayer", type=kind, autoRefreshEnabled="0", refreshOnNotifyEnabled="0")
    _sub(node, "id", layer_id)
    _sub(node, "datasource", source)
    _sub(node, "layername", name)
    return node


def project_xml(
    base_url: str, title: str, extent: tuple[float, float, float, float] | None, authcfg: str | None = None
) -> bytes:
    """Return the .qgs document (UTF-8 XML) of every declared layer, in map order, with EXTENT as the initial view."""
    layers = sorted(REGISTRY.values(), key=lambda x: x.order)
    west, south, east, north = extent or CHINA
    root = ET.Element("qgis", projectname=title, version=QGIS_VERSION)
    _sub(root, "homePath", path="")
    _sub(root, "title", title)
    _srs(_sub(root, "projectCrs"), CGCS2000)

    tree = _sub(root, "layer-tree-group")
    _sub(tree, "customproperties")
    tiles_group = _sub(tree, "layer-tree-group", name="矢量瓦片 Vector tiles", checked="Qt::Checked", expanded="1")
    features_group = _sub(tree, "layer-tree-group", name="要素 Features (OGC API)", checked="Qt::Checked", expanded="1")

    canvas = _sub(root, "mapcanvas", name="theMapCanvas", annotationsVisible="1")
    _sub(canvas, "units", "degrees")
    box = _sub(canvas, "extent")
    for key, value in zip(("xmin", "ymin", "xmax", "ymax"), (west, south, east, north), strict=True):
        _sub(box, key, repr(float(value)))
    _sub(canvas, "rotation", "0")
    _srs(_sub(canvas, "destinationsrs"), CGCS2000)

    project_layers = _sub(root, "projectlayers")
    order: list[str] = []
    for layer in reversed(layers):  # the layer tree lists the topmost first: the last drawn on the map
        name = f"{layer.zh} {layer.en}"
        if layer.style.tiled:
            tile_id = f"guatu_tiles_{layer.id}"
            source = tiles_source(base_url, layer, authcfg)
            _sub(
                tiles_group,
                "layer-tree-layer",
                id=tile_id,
                name=f"{name}（瓦片 tiles）",
                source=source,
                providerKey="xyzvectortiles",
                checked="Qt::Checked",
                expanded="0",
            )
            node = _map_layer(project_layers, tile_id, f"{name}（瓦片 tiles）", "vector-tile", source)
            _srs(_sub(node, "srs"), WEB_MERCATOR)
            _sub(node, "provider", "xyzvectortiles", encoding="")
            order.append(tile_id)
        feature_id = f"guatu_features_{layer.id}"
        source = oapif_source(base_url, layer, authcfg)
        checked = "Qt::Unchecked" if layer.style.tiled else "Qt::Checked"
        _sub(
            features_group,
            "layer-tree-layer",
            id=feature_id,
            name=name,
            source=source,
            providerKey="OAPIF",
            checked=checked,
            expanded="0",
        )
        geometry, wkb = _geometry(layer)
        node = _map_layer(project_layers, feature_id, name, "vector", source)
        node.set("geometry", geometry)
        node.set("wkbType", wkb)
        node.set("minScale", "0")
        node.set("maxScale", "0")
        node.set("hasScaleBasedVisibilityFlag", "0")
        _srs(_sub(node, "srs"), WGS84)  # OGC API – Features answers in CRS84 unless asked otherwise
        _sub(node, "provider", "OAPIF", encoding="UTF-8")
        renderer(node, layer)
        order.append(feature_id)
    layer_order = _sub(root, "layerorder")
    for layer_id in order:
        _sub(layer_order, "layer", id=layer_id)
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + body + "\n").encode()


def project_qgz(
    base_url: str, title: str, extent: tuple[float, float, float, float] | None, authcfg: str | None = None
) -> bytes:
    """Return the .qgz (a zip holding the .qgs) of :func:`project_xml`."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(PROJECT_NAME, project_xml(base_url, title, extent, authcfg))
    return out.getvalue()


def deployment_extent(extents: list[list[float] | None]) -> tuple[float, float, float, float] | None:
    """Return the box holding every extent of EXTENTS (lon/lat), or None if none is known."""
    known = [e for e in extents if e]
    if not known:
        return None
    return (
        min(e[0] for e in known),
        min(e[1] for e in known),
        max(e[2] for e in known),
        max(e[3] for e in known),
    )
