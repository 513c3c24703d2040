"""The 挂图 map page, built with folium: every layer loaded from the API by bounding box.

Nothing here reaches the internet: Leaflet comes from the app's own static files and the
default basemap is none. Feature text reaches the page only as JSON data and is put into
the DOM with ``textContent``, so a shop called ``<img src=x onerror=…>`` stays text.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import folium
from branca.element import CssLink, Element, Figure, JavascriptLink

from layers import hierarchy
from layers.base import Layer
from layers.stats import filter_description
from web import assets
from web import problems as problem_pages
from web.elements import JsCall

DEFAULT_CENTER = (36.30, 120.38)
PAGE_LIMIT = 5_000
DECIMALS = {"area_m2": 1, "area_mu": 2}
"""Decimals of the areas the server computes for every layer (亩 to two, as surveys give them)."""


@dataclass(frozen=True)
class LayerView:
    """A layer as the map shows it: its declaration plus what the database holds."""

    layer: Layer
    count: int
    extent: Sequence[float] | None


def layer_options(view: LayerView, api_base: str) -> dict[str, Any]:
    """Return the JSON options map.js needs to fetch, style and describe one layer."""
    layer, style = view.layer, view.layer.style
    units = layer.units
    return {
        "id": layer.id,
        "title": {"zh": layer.zh, "en": layer.en},
        "url": f"{api_base}/layers/{layer.id}/features",
        "tiles": f"/tiles/{layer.id}/{{z}}/{{x}}/{{y}}.pbf" if style.tiled else None,
        "limit": PAGE_LIMIT,
        "count": view.count,
        "order": layer.order,
        "popup": popup_fields(layer),
        "key": layer.key_field,
        "name": layer.name_field,
        "units": None
        if units is None
        else {
            "levels": list(units.levels),
            "levelField": units.level_field,
            "nameField": units.name_field,
            "levelOf": {name: lv for lv in units.levels for name in hierarchy.level(lv).names},
        },
        "filter": filter_description(layer) if layer.filter_fields or layer.counts else None,
        "style": {
            "by": style.by,
            "colors": style.colors,
            "default": style.default,
            "fillOpacity": style.fill_opacity,
            "weight": style.weight,
            "radius": style.radius,
            "minZoom": style.min_zoom,
            "dash": style.dash,
            "emphasis": style.emphasis,
            "fill": style.fill,
        },
    }


def popup_fields(layer: Layer) -> list[dict[str, Any]]:
    """Return the popup's fields with the names of coded values (0810 公园与绿地) and the decimals of numbers."""
    out = []
    for row in layer.popup_fields():
        f = layer.field(row["name"]) if row["name"] in layer.field_names else None
        labels = dict(f.labels()) if f is not None and f.labels else None
        out.append({**row, "labels": labels, "decimals": DECIMALS.get(row["name"])})
    return out


def edit_options(views: Sequence[LayerView], api_base: str) -> dict[str, Any]:
    """Return what edit.js needs besides the server's answers: where to ask, and which layers split and merge.

    Whether the user may edit, and each field's rules, come from ``/api/me`` and ``/api/layers``
    at run time. Shapes that tile an area without being units of the hierarchy (polygons only)
    can be split by a line and merged with neighbours.
    """
    return {
        "api": api_base,
        "login": "/login",
        "layers": [
            {
                "id": v.layer.id,
                "split": v.layer.units is None and all(t.endswith("Polygon") for t in v.layer.accepts),
            }
            for v in sorted(views, key=lambda v: v.layer.order)
        ],
    }


CONTRACT_LIGHTS = {"red": "#dc2626", "yellow": "#f59e0b", "green": "#16a34a", "none": "#9ca3af"}
"""The colours of an asset's contract light (layers.rent.LIGHTS)."""


def contract_options(layer_ids: Sequence[str], api_base: str) -> dict[str, Any]:
    """Return what contracts.js needs: the layers it recolours, where to ask, the colours and their legend."""
    return {
        "api": api_base,
        "layers": list(layer_ids),
        "colors": CONTRACT_LIGHTS,
        "legend": [
            {"light": "red", "zh": "欠租/无合同", "en": "arrears, no contract"},
            {"light": "yellow", "zh": "预警", "en": "warning"},
            {"light": "green", "zh": "正常", "en": "in order"},
            {"light": "none", "zh": "未出租", "en": "not let"},
        ],
    }


def _bounds(views: Sequence[LayerView]) -> list[list[float]] | None:
    boxes = [v.extent for v in views if v.extent]
    if not boxes:
        return None
    return [
        [min(b[1] for b in boxes), min(b[0] for b in boxes)],
        [max(b[3] for b in boxes), max(b[2] for b in boxes)],
    ]


TIANDITU = "https://t{s}.tianditu.gov.cn/{layer}_w/wmts?SERVICE=WMTS&REQUEST=GetTile&VERSION=1.0.0&LAYER={layer}&STYLE=default&TILEMATRIXSET=w&FORMAT=tiles&TILEMATRIX={z}&TILEROW={y}&TILECOL={x}&tk={key}"  # noqa: E501
"""天地图 WMTS in Web Mercator; CGCS2000-based, so it lines up with guatu's data without a GCJ-02 shift."""


@dataclass(frozen=True)
class Basemap:
    """Which basemap the map page shows: none (the default: the page asks nothing outside the app),
    天地图 vector or imagery with its labels (a key is needed), or any XYZ URL template."""

    kind: str = "none"
    key: str = ""
    url: str = ""
    attribution: str = ""

    def tile_layers(self) -> list[folium.TileLayer]:
        """Return the folium tile layers of this basemap (none for "none")."""
        if self.kind in ("tianditu-vec", "tianditu-img") and self.key:
            base, labels = ("vec", "cva") if self.kind == "tianditu-vec" else ("img", "cia")
            credit = "© 天地图 Tianditu"
            return [
                folium.TileLayer(
                    tiles=TIANDITU.replace("{layer}", name).replace("{key}", self.key),
                    attr=credit,
                    name=f"天地图 {name}",
                    subdomains="01234567",
                    max_zoom=18,
                    overlay=name == labels,
                    control=False,
                )
                for name in (base, labels)
            ]
        if self.kind == "xyz" and self.url:
            return [folium.TileLayer(tiles=self.url, attr=self.attribution or "basemap", name="底图 basemap")]
        return []


def build_map_page(
    views: Sequence[LayerView],
    *,
    title: str,
    api_base: str = "/api",
    hidden: Sequence[str] = (),
    basemap: Basemap | None = None,
    cockpit: bool = False,
) -> str:
    """Return the HTML of the map page for the given layers (largest extent first fitted)."""
    fig = folium.Figure(title=html.escape(f"{title} · guatu 挂图"))  # folium does not escape it
    fmap = folium.Map(
        location=DEFAULT_CENTER,
        zoom_start=14,
        tiles=None,
        control_scale=True,
        max_zoom=20,
        prefer_canvas=False,
        zoom_control=True,
    )
    # folium's defaults load Leaflet, jQuery, Bootstrap and Font Awesome from CDNs: the
    # map needs only Leaflet, served by the app itself.
    fmap.default_js = [("leaflet", assets.LEAFLET_JS)]
    if any(view.layer.style.tiled for view in views):  # the big layers come as vector tiles
        fmap.default_js.append(("vectorgrid", assets.VECTORGRID_JS))
    fmap.default_css = [("leaflet_css", assets.LEAFLET_CSS)]
    if not cockpit:  # editing (shown only to those the server lets edit): Leaflet-Geoman, then guatu's edit module
        fmap.default_js += [("geoman", assets.GEOMAN_JS), ("guatu_edit", assets.EDIT_JS)]
        fmap.default_css += [("geoman_css", assets.GEOMAN_CSS), ("guatu_edit_css", assets.EDIT_CSS)]
    if not cockpit:  # the ledger docked under the map (web/ledger.py)
        fmap.default_js += [("tabulator", assets.TABULATOR_JS), ("guatu_ledger", assets.LEDGER_JS)]
        fmap.default_css += [("tabulator_css", assets.TABULATOR_CSS), ("guatu_ledger_css", assets.LEDGER_CSS)]
    fig.add_child(fmap)
    for tiles in (basemap or Basemap()).tile_layers():
        tiles.add_to(fmap)
    root = fmap.get_root()
    assert isinstance(root, Figure)
    root.header.add_child(Element('<meta name="robots" content="noindex">'))
    root.header.add_child(Element(f'<link rel="icon" href="{assets.FAVICON}" type="image/svg+xml">'))
    root.header.add_child(CssLink(assets.GUATU_CSS))
    root.header.add_child(JavascriptLink(assets.DOM_JS))
    root.header.add_child(JavascriptLink(assets.GUATU_JS))
    if cockpit:
        root.header.add_child(CssLink(assets.COCKPIT_CSS))
        root.header.add_child(JavascriptLink(assets.COCKPIT_JS))
    for view in sorted(views, key=lambda v: v.layer.order):
        group = folium.FeatureGroup(name=f"{view.layer.zh} {view.layer.en}", show=view.layer.id not in hidden)
        entry = "guatu.tileLayer" if view.layer.style.tiled else "guatu.bboxLayer"
        group.add_child(JsCall(entry, layer_options(view, api_base), names=[fmap.get_name()]))
        fmap.add_child(group)
    if not cockpit:
        folium.LayerControl(collapsed=False, position="topright").add_to(fmap)
    bounds = _bounds(views)
    if bounds:
        fmap.fit_bounds(bounds)
    chrome = {
        "title": title,
        "levels": hierarchy.describe(),
        "legend": [
            {
                "id": v.layer.id,
                "title": {"zh": v.layer.zh, "en": v.layer.en},
                "by": v.layer.style.by and v.layer.field(v.layer.style.by).zh,
                "rows": v.layer.legend(),
                "fill": v.layer.style.fill,
            }
            for v in sorted(views, key=lambda v: v.layer.order)
        ],
    }
    fmap.add_child(JsCall("guatu.chrome", chrome))
    if cockpit:  # the leader's screen: the map and the campaign's figures, no working panels, refreshed each minute
        fmap.add_child(JsCall("guatuCockpit.start", {"api": api_base, "title": title, "refresh_s": 60}))
        return str(fig.render())
    let_out = [v.layer.id for v in sorted(views, key=lambda v: v.layer.order) if v.layer.let]
    if let_out:  # the toggle colouring assets by their contracts (contracts.js)
        root.header.add_child(CssLink(assets.CONTRACTS_CSS))
        root.header.add_child(JavascriptLink(assets.CONTRACTS_JS))
        fmap.add_child(JsCall("guatuContracts", contract_options(let_out, api_base)))
    fmap.add_child(JsCall("guatu.edit", edit_options(views, api_base)))
    root.header.add_child(CssLink(problem_pages.PROBLEMS_CSS))  # the problem ledger's pins (web/problems.py)
    root.header.add_child(JavascriptLink(problem_pages.PINS_JS))
    fmap.add_child(JsCall("guatuProblemPins.start", problem_pages.options(api_base)))
    filtered = [v.layer for v in sorted(views, key=lambda v: v.layer.order) if v.layer.filter_fields]
    counted = [layer for layer in filtered if layer.counts]
    if filtered:
        panel = {
            "api": api_base,
            "layers": [layer.id for layer in filtered],
            "layer": (counted or filtered)[0].id,  # the one whose figures the panel opens on
            "levels": hierarchy.describe(),
        }
        fmap.add_child(JsCall("guatu.panel", panel))
    from web.ledger import dock_options  # web.ledger builds on this module's helpers

    fmap.add_child(JsCall("guatuLedger.dock", dock_options([v.layer for v in views], api_base)))
    page: str = fig.render()
    return page
