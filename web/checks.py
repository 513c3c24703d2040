"""The checks page: a grid manager picks a scope, sees the boundary findings listed and drawn among their units."""

from __future__ import annotations

from collections.abc import Sequence

from branca.element import CssLink, Figure

from layers import hierarchy
from web import assets
from web.elements import JsCall
from web.uploads import page_shell

CHECKS_CSS = f"{assets.STATIC_URL}/guatu/checks.css"


def scope_options(units: Sequence[tuple[str, str, str]]) -> list[dict[str, str]]:
    """Return the scope picker's options: everything, then each unit (code, name, level name) indented by level."""
    depth = {lv.digits: n for n, lv in enumerate(hierarchy.levels())}
    options = [{"code": "", "label": "全部 Everything"}]
    for code, name, level in units:
        indent = "　" * depth.get(len(code), 0)
        options.append({"code": code, "label": f"{indent}{level} {code} {name}"})
    return options


def build_checks_page(units: Sequence[tuple[str, str, str]], *, title: str, api_base: str = "/api") -> str:
    """Return the HTML of the checks page; UNITS are (code, name, level name) of the scopes to pick from."""
    fig, fmap = page_shell(f"边界检查 Boundary checks · {title} · guatu 挂图", assets.CHECKS_JS)
    root = fmap.get_root()
    assert isinstance(root, Figure)
    root.header.add_child(CssLink(CHECKS_CSS))
    options = {"api": api_base, "title": title, "scopes": scope_options(units), "levels": hierarchy.describe()}
    fmap.add_child(JsCall("guatuChecks.start", options))
    page: str = fig.render()
    return page
