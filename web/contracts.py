"""The contracts page (/contracts): the ledger of lease contracts on a date, one contract's schedule, the forms."""

from __future__ import annotations

from typing import Any

from layers import contracts, rent
from web import assets
from web.problems import PROBLEMS_CSS, _page

PAGE_JS = f"{assets.STATIC_URL}/guatu/contracts-page.js"
PAGE_CSS = f"{assets.STATIC_URL}/guatu/contracts-page.css"


def options(api_base: str = "/api") -> dict[str, Any]:
    """Return what the page's script needs: the API, the let-able layers, the vocabulary of contracts."""
    return {
        "api": api_base,
        "layers": [{"id": lay.id, "zh": lay.zh, "en": lay.en, "key": lay.key_field} for lay in contracts.let_layers()],
        "statuses": list(rent.STATUSES),
        "warnings": {code: {"zh": zh, "en": en} for code, (zh, en) in rent.WARNINGS.items()},
        "yellow": list(rent.YELLOW_WARNINGS),
        "units": list(rent.UNITS),
        "cycles": list(rent.CYCLES),
        "modes": list(rent.MODES),
        "maxAssets": contracts.MAX_ASSETS,
    }


def build_contracts_page(*, title: str, api_base: str = "/api") -> str:
    """Return the contracts page: figures on a date, the list (Tabulator), a contract's detail and forms."""
    return _page(
        f"合同台账 Contracts · {title}",
        "guatu-problems-page guatu-contracts-page",
        [assets.DOM_JS, assets.TABULATOR_JS],
        [assets.TABULATOR_CSS, PROBLEMS_CSS, PAGE_CSS],
        PAGE_JS,
        options(api_base) | {"title": title},
    )
