"""HTML pages: the map and the offline API docs."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from api.auth import rule
from api.deps import SessionDep
from layers.base import REGISTRY
from layers.features import layer_summary
from layers.scopes import scope_choices
from web import assets
from web.checks import build_checks_page
from web.maps import Basemap, LayerView, build_map_page
from web.uploads import build_upload_page

router = APIRouter(tags=["pages"], include_in_schema=False)


def _map(request: Request, session: SessionDep, *, cockpit: bool) -> HTMLResponse:
    views = []
    for layer in REGISTRY.values():
        summary = layer_summary(session, layer)
        views.append(LayerView(layer, summary["count"], summary["extent"]))
    settings = request.app.state.settings
    basemap = Basemap(settings.basemap, settings.tianditu_key, settings.basemap_url, settings.basemap_attribution)
    return HTMLResponse(build_map_page(views, title=settings.site_title, basemap=basemap, cockpit=cockpit))


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
    return HTMLResponse(build_upload_page(layers, title=request.app.state.settings.site_title))


@router.get("/checks", response_class=HTMLResponse, **rule("page"))
def checks_page(request: Request, session: SessionDep) -> HTMLResponse:
    """Return the checks page: pick a street, community or grid; findings listed and drawn."""
    title = request.app.state.settings.site_title
    return HTMLResponse(build_checks_page(scope_choices(session), title=title))


@router.get("/docs", response_class=HTMLResponse, **rule("public"))
def docs() -> HTMLResponse:
    """Return Swagger UI from the app's own assets (works offline)."""
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="guatu API 接口文档",
        swagger_js_url=assets.SWAGGER_JS,
        swagger_css_url=assets.SWAGGER_CSS,
        swagger_favicon_url=assets.FAVICON,
        swagger_ui_parameters={"validatorUrl": None, "defaultModelsExpandDepth": -1},
    )
