"""The problem ledger's pages: the phone report form (/report) and the list per unit (/problems); map pins."""

from __future__ import annotations

import html
import json
from typing import Any

from layers import hierarchy, problems
from web import assets

PINS_JS = f"{assets.STATIC_URL}/guatu/problems.js"
PAGE_JS = f"{assets.STATIC_URL}/guatu/problems-page.js"
REPORT_JS = f"{assets.STATIC_URL}/guatu/report.js"
PROBLEMS_CSS = f"{assets.STATIC_URL}/guatu/problems.css"


def options(api_base: str = "/api") -> dict[str, Any]:
    """Return what the ledger's scripts need: the API, the vocabulary, the lights, the actions."""
    return {
        "api": api_base,
        "types": list(problems.TYPES),
        "sources": list(problems.SOURCES),
        "states": [{"zh": s, "en": problems.STATES_EN[s]} for s in problems.STATES],
        "actions": [{"zh": a, "en": e} for a, e in problems.ACTIONS_EN.items()],
        "lights": dict(problems.LIGHTS_ZH),
        "warnDays": problems.warn_days(),
        "communityDigits": hierarchy.COMMUNITY_DIGITS,
    }


def _json(value: Any) -> str:
    """Return VALUE as JSON safe inside a <script> element (no '<' at all)."""
    return json.dumps(value, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _page(title: str, body_class: str, scripts: list[str], css: list[str], start: str, opts: dict[str, Any]) -> str:
    links = "".join(f'<link rel="stylesheet" href="{href}">' for href in css)
    tags = "".join(f'<script src="{src}"></script>' for src in scripts)
    return (
        '<!DOCTYPE html>\n<html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex">'
        f'<link rel="icon" href="{assets.FAVICON}" type="image/svg+xml">'
        f"<title>{html.escape(title)}</title>{links}{tags}</head>"
        f'<body class="{body_class}"><div id="guatu-root"></div>'
        f'<script type="application/json" id="guatu-options">{_json(opts)}</script>'
        f'<script src="{start}"></script></body></html>'
    )


def build_report_page(*, title: str, api_base: str = "/api") -> str:
    """Return the phone page where grid workers report a problem with a photo and their location."""
    return _page(
        f"上报问题 Report a problem · {title}",
        "guatu-report-page",
        [assets.DOM_JS],
        [PROBLEMS_CSS],
        REPORT_JS,
        options(api_base) | {"title": title},
    )


def build_problems_page(*, title: str, api_base: str = "/api") -> str:
    """Return the ledger page: counts per community, the list (Tabulator), one problem with its log and actions."""
    return _page(
        f"问题台账 Problem ledger · {title}",
        "guatu-problems-page",
        [assets.DOM_JS, assets.TABULATOR_JS],
        [assets.TABULATOR_CSS, PROBLEMS_CSS],
        PAGE_JS,
        options(api_base) | {"title": title},
    )
