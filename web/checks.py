"""The checks page: a grid manager picks a community or grid, sees the boundary findings listed and drawn."""

from __future__ import annotations

import html
from typing import Any

import folium
from branca.element import CssLink, Element, Figure, JavascriptLink

from web import assets
from web.elements import JsCall
from web.maps import DEFAULT_CENTER


def build_checks_page(scopes: list[dict[str, Any]], *, title: str, api_base: str = "/api") -> str:
    """Return the HTML of the checks page; SCOPES are the streets, communities and grids to pick from."""
    fig = folium.Figure(title=html.escape(f"边界检查 Boundary checks · {title} · guatu 挂图"))
    fmap = folium.Map(location=DEFAULT_CENTER, zoom_start=13, tiles=None, control_scale=True)
    fmap.default_js = [("leaflet", assets.LEAFLET_JS)]
    fmap.default_css = [("leaflet_css", assets.LEAFLET_CSS)]
    fig.add_child(fmap)
    root = fmap.get_root()
    assert isinstance(root, Figure)
    root.header.add_child(Element(f'<link rel="icon" href="{assets.FAVICON}" type="image/svg+xml">'))
    root.header.add_child(CssLink(assets.GUATU_CSS))
    root.header.add_child(JavascriptLink(assets.CHECKS_JS))
    fmap.add_child(JsCall("guatuChecks.start", {"api": api_base, "title": title, "scopes": scopes}))
    page: str = fig.render()
    return page
