"""HTML pages: the map and the offline API docs."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from api.auth import rule
from api.deps import SessionDep
from api.security import NONCE_STATE, with_nonce
from layers.base import REGISTRY
from layers.features import layer_summary
from layers.scopes import scope_choices
from web import assets
from web.checks import build_checks_page
from web.contracts import build_contracts_page
from web.maps import Basemap, LayerView, build_map_page
from web.problems import build_problems_page, build_report_page
from web.uploads import build_upload_page

router = APIRouter(tags=["pages"], include_in_schema=False)


def _page(request: Request, html: str) -> HTMLResponse:
    """Return one of the app's own pages, each <script> carrying this response's CSP nonce."""
    return HTMLResponse(with_nonce(html, getattr(request.state, NONCE_STATE)))


def _map(request: Request, session: SessionDep, *, cockpit: bool) -> HTMLResponse:
    views = []
    for layer in REGISTRY.values():
        summary = layer_summary(session, layer)
        views.append(LayerView(layer, summary["count"], summary["extent"]))
    settings = request.app.state.settings
    basemap = Basemap(settings.basemap, settings.tianditu_key, settings.basemap_url, settings.basemap_attribution)
    return _page(request, build_map_page(views, title=settings.site_title, basemap=basemap, cockpit=cockpit))


@router.get("/", response_class=HTMLResponse, **rule("page"))
def map_page(request: Request, session: SessionDep) -> HTMLResponse:
    """Return the 挂图 map page with every layer."""
    return _map(request, session, cockpit=False)


@router.get("/cockpit", response_class=HTMLResponse, **rule("page"))
def cockpit_page(request: Request, session: SessionDep) -> HTMLResponse:
    """Return the full-screen cockpit (驾驶舱) for big screens: the map and the roll-up per community."""
    return _map(request, session, cockpit=True)


@router.get("/upload", response_class=HTMLResponse, **rule("page"))
def upload_page(request: Request) -> HTMLResponse:
    """Return the upload page (check a file, read the report, commit)."""
    layers = sorted(REGISTRY.values(), key=lambda layer: layer.order)
    return _page(request, build_upload_page(layers, title=request.app.state.settings.site_title))


@router.get("/checks", response_class=HTMLResponse, **rule("page"))
def checks_page(request: Request, session: SessionDep) -> HTMLResponse:
    """Return the checks page: pick a street, community or grid; findings listed and drawn."""
    title = request.app.state.settings.site_title
    return _page(request, build_checks_page(scope_choices(session), title=title))


@router.get("/report", response_class=HTMLResponse, **rule("page"))
def report_page(request: Request) -> HTMLResponse:
    """Return the phone page for reporting a problem (photo, location; kept until sent)."""
    return _page(request, build_report_page(title=request.app.state.settings.site_title))


@router.get("/problems", response_class=HTMLResponse, **rule("page"))
def problems_page(request: Request) -> HTMLResponse:
    """Return the problem ledger: counts per community, the list, one problem's log and actions."""
    return _page(request, build_problems_page(title=request.app.state.settings.site_title))


@router.get("/contracts", response_class=HTMLResponse, **rule("page"))
def contracts_page(request: Request) -> HTMLResponse:
    """Return the contracts ledger: figures on a date, the list, a contract's schedule and payments, the forms."""
    return _page(request, build_contracts_page(title=request.app.state.settings.site_title))


@router.get("/docs", response_class=HTMLResponse, **rule("public"))
def docs(request: Request) -> HTMLResponse:
    """Return Swagger UI from the app's own assets (works offline)."""
    swagger = get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="guatu API 接口文档",
        swagger_js_url=assets.SWAGGER_JS,
        swagger_css_url=assets.SWAGGER_CSS,
        swagger_favicon_url=assets.FAVICON,
        swagger_ui_parameters={"validatorUrl": None, "defaultModelsExpandDepth": -1},
    )
    ours = "".join(f'<script src="{script}"></script>' for script in (assets.DOM_JS, assets.DOCS_JS))
    return _page(request, bytes(swagger.body).decode().replace("</head>", ours + "</head>", 1))
