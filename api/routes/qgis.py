"""A QGIS project of this deployment: ``GET /api/qgis/project.qgz`` (layers.qgis).

Rule ``user``: the project holds no feature, but its initial view is the extent of what the user
sees, and every URL in it answers only with the user's token.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from api.auth import ActorDep, rule
from api.deps import SessionDep
from api.routes.exports import attachment
from api.routes.tiles import GenerationsDep, extent_of, tile_cache
from layers import qgis
from layers.base import REGISTRY

router = APIRouter(tags=["qgis"])
QGZ = "application/vnd.qgis.qgz"


@router.get(
    "/api/qgis/project.qgz",
    summary="QGIS 工程 QGIS project",
    response_class=Response,
    **rule("user"),
)
async def qgis_project(
    request: Request,
    session: SessionDep,
    read: GenerationsDep,
    actor: ActorDep,
    authcfg: Annotated[
        str | None,
        Query(max_length=7, description="the id of the QGIS authentication configuration holding your API token"),
    ] = None,
) -> Response:
    """Return a QGIS project (.qgz): every layer through OGC API – Features, the tiled ones as vector tiles too."""
    chosen = qgis.check_authcfg(authcfg)
    settings = request.app.state.settings
    units = [layer for layer in REGISTRY.values() if layer.units is not None]

    def build() -> bytes:
        cache = tile_cache(request)  # the extents the map and the OGC collections show: cached per generation and area
        extent = qgis.deployment_extent([extent_of(cache, session, layer, read, actor) for layer in units])
        return qgis.project_qgz(settings.public_url.rstrip("/"), settings.site_title, extent, chosen)

    body = await run_in_threadpool(build)
    return Response(body, media_type=QGZ, headers=attachment(f"{settings.site_title}.qgz", "guatu.qgz"))
