"""The checks page: a grid manager picks a community or grid, sees the boundary findings listed and drawn."""

from __future__ import annotations

from typing import Any

from web import assets
from web.elements import JsCall
from web.uploads import page_shell


def build_checks_page(scopes: list[dict[str, Any]], *, title: str, api_base: str = "/api") -> str:
    """Return the HTML of the checks page; SCOPES are the counties, streets, communities and grids to pick from."""
    fig, fmap = page_shell(f"边界检查 Boundary checks · {title} · guatu 挂图", assets.CHECKS_JS)
    fmap.add_child(JsCall("guatuChecks.start", {"api": api_base, "title": title, "scopes": scopes}))
    page: str = fig.render()
    return page
