"""The upload page: choose a layer and CRS, dry-run a file, read the report, see rejects, commit."""

from __future__ import annotations

import html
from collections.abc import Sequence

import folium
from branca.element import CssLink, Element, Figure, JavascriptLink

from layers.base import Layer
from web import assets
from web.elements import JsCall
from web.maps import DEFAULT_CENTER

CRS_CHOICES = [
    ("", "按文件声明，默认 CGCS2000 (file's crs, else CGCS2000)"),
    ("CGCS2000", "CGCS2000 经纬度 (EPSG:4490)"),
    ("WGS84", "WGS84 经纬度 (GPS)"),
    ("GCJ-02", "GCJ-02 火星坐标（高德、腾讯）"),
    ("BD-09", "BD-09 百度坐标"),
    ("EPSG:4549", "CGCS2000 高斯-克吕格 3° 中央经线 120°E (EPSG:4549)"),
    ("EPSG:4528", "CGCS2000 高斯-克吕格 3° 第40带 带带号 (EPSG:4528)"),
]


def page_shell(title: str, script: str) -> tuple[folium.Figure, folium.Map]:
    """Return a full-page map with the app's own Leaflet, guatu's CSS, the favicon and SCRIPT."""
    fig = folium.Figure(title=html.escape(title))
    fmap = folium.Map(location=DEFAULT_CENTER, zoom_start=13, tiles=None, control_scale=True)
    fmap.default_js = [("leaflet", assets.LEAFLET_JS)]
    fmap.default_css = [("leaflet_css", assets.LEAFLET_CSS)]
    fig.add_child(fmap)
    root = fmap.get_root()
    assert isinstance(root, Figure)
    root.header.add_child(Element(f'<link rel="icon" href="{assets.FAVICON}" type="image/svg+xml">'))
    root.header.add_child(CssLink(assets.GUATU_CSS))
    root.header.add_child(JavascriptLink(assets.DOM_JS))
    root.header.add_child(JavascriptLink(script))
    return fig, fmap


def build_upload_page(layers: Sequence[Layer], *, title: str, api_base: str = "/api") -> str:
    """Return the HTML of the upload page."""
    fig, fmap = page_shell(f"上传数据 Upload · {title} · guatu 挂图", assets.UPLOAD_JS)
    options = {
        "api": api_base,
        "title": title,
        "layers": [{"id": layer.id, "zh": layer.zh, "en": layer.en} for layer in layers],
        "crs": [{"value": value, "label": label} for value, label in CRS_CHOICES],
    }
    fmap.add_child(JsCall("guatuUpload.start", options))
    page: str = fig.render()
    return page
