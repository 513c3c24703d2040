"""The ledger page (台账): a layer's rows in a Tabulator grid, paged and sorted on the server, beside a small map.

The grid's columns come from the declaration (Chinese label with English, codes as text, 亩
to two decimals); the rows from ``/api/layers/{id}/rows``. The same script docks a grid under
the map page (``guatuLedger.dock``), following the map's layer, filter and view.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from branca.element import CssLink, Figure, JavascriptLink

from layers.base import Layer
from layers.stats import filter_description
from web import assets
from web.elements import JsCall
from web.maps import DECIMALS
from web.uploads import page_shell

AREA_COLUMNS = (("area_mu", "面积(亩)", "Area mu"), ("area_m2", "面积(m²)", "Area m²"))


def ledger_columns(layer: Layer) -> list[dict[str, Any]]:
    """Return LAYER's ledger columns: every declared field (kind, choices, personal), its area, when changed."""
    out: list[dict[str, Any]] = []
    for f in layer.fields:
        labels = dict(f.labels()) if f.labels else None
        out.append(
            {
                "name": f.name,
                "zh": f.zh,
                "en": f.en,
                "kind": f.kind,
                "choices": list(f.choices) or None,
                "required": f.required,
                "personal": f.personal,
                "labels": labels,
                "key": f.name in layer.key,
                "decimals": None,
            }
        )
    if layer.has_area:
        out.extend(
            {"name": name, "zh": zh, "en": en, "kind": "area", "read_only": True, "decimals": DECIMALS[name]}
            for name, zh, en in AREA_COLUMNS
        )
    out.append({"name": "updated_at", "zh": "更新时间", "en": "Updated", "kind": "stamp", "read_only": True})
    return out


def ledger_layer(layer: Layer) -> dict[str, Any]:
    """Return what the grid needs of one layer: titles, columns, filters."""
    return {
        "id": layer.id,
        "title": {"zh": layer.zh, "en": layer.en},
        "columns": ledger_columns(layer),
        "filter": filter_description(layer) if layer.filter_fields else None,
        "counter": layer.counter_zh,
    }


def build_ledger_page(layers: Sequence[Layer], current: Layer, *, title: str, api_base: str = "/api") -> str:
    """Return the HTML of the ledger page of CURRENT (a switcher offers every layer in LAYERS)."""
    fig, fmap = page_shell(f"台账 Ledger · {current.zh} · {title} · guatu 挂图", assets.LEDGER_JS)
    root = fmap.get_root()
    assert isinstance(root, Figure)
    root.header.add_child(CssLink(assets.TABULATOR_CSS))
    root.header.add_child(CssLink(assets.LEDGER_CSS))
    root.header.add_child(JavascriptLink(assets.TABULATOR_JS))
    options = {
        "api": api_base,
        "title": title,
        "layer": current.id,
        "layers": [ledger_layer(layer) for layer in sorted(layers, key=lambda x: x.order)],
    }
    fmap.add_child(JsCall("guatuLedger.page", options))
    page: str = fig.render()
    return page


def dock_options(layers: Sequence[Layer], api_base: str) -> dict[str, Any]:
    """Return the options of the grid docked under the map page."""
    return {"api": api_base, "layers": [ledger_layer(layer) for layer in sorted(layers, key=lambda x: x.order)]}
