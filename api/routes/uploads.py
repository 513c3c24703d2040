"""Uploads of GeoJSON files: check, diff, commit atomically, replay idempotently."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from api.deps import LayerDep, SessionDep
from api.routes.tiles import tile_cache
from layers.uploads import Upload, UploadOptions, commit_upload, get_upload, upload_json
from spatial.crs import Axis
from spatial.errors import TooLarge

router = APIRouter(tags=["uploads"])

UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "GeoJSON 文件：FeatureCollection、单个 Feature 或几何对象（请求体或 multipart 的 file）",
        "content": {
            "application/geo+json": {"schema": {"type": "object"}},
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
            },
        },
    }
}


async def _read_file(request: Request) -> tuple[bytes, str | None]:
    """Return the uploaded bytes (raw body or the multipart `file`), refusing them past the limit."""
    limit = request.app.state.settings.max_upload_bytes
    too_large = TooLarge.one(
        "payload_too_large", f"文件超过上限 {limit // 1_000_000} MB", f"file larger than {limit} bytes"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise too_large
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form(max_part_size=limit + 1)
        item = form.get("file")
        if item is None or isinstance(item, str):
            return (item or "").encode(), None
        data = await item.read()
        if len(data) > limit:
            raise too_large
        return data, item.filename
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise too_large
    return bytes(body), None


@router.post(
    "/api/layers/{layer_id}/uploads",
    summary="上传 GeoJSON 文件 Upload a GeoJSON file",
    status_code=201,
    openapi_extra=UPLOAD_BODY,
)
async def create_upload(
    layer: LayerDep,
    session: SessionDep,
    request: Request,
    crs: str | None = Query(
        None, description="WGS84, CGCS2000, GCJ-02, BD-09 or EPSG:<code>; default: the file's crs member, else CGCS2000"
    ),
    axis: Annotated[Axis, Query(description="xy: easting/lon first; yx: northing/lat first (X = 北)")] = "xy",
    mode: str = Query("all-or-nothing", pattern="^(all-or-nothing|valid-only)$"),
    dry_run: bool = Query(False, description="check and diff only; write nothing"),
    repair: bool = Query(False, description="make invalid polygons valid, reporting the area change"),
    uploader: str | None = Query(None, max_length=100),
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JSONResponse:
    """Check every feature, diff against the database, and commit in one transaction."""
    raw, filename = await _read_file(request)
    options = UploadOptions(
        crs=crs,
        axis=axis,
        mode=mode,  # type: ignore[arg-type]  # checked by the pattern above
        dry_run=dry_run,
        repair=repair,
        uploader=uploader,
        filename=filename,
        idempotency_key=idempotency_key,
    )
    result = await run_in_threadpool(commit_upload, session, request.app.state.sessions, layer, raw, options)
    if result["status"] == "committed":
        tile_cache(request).bump(layer.id)
    status = {"committed": 201, "dry_run": 200, "rejected": 422}.get(result["status"], 200)
    return JSONResponse(result, status_code=status)


@router.get("/api/uploads", summary="上传记录 List uploads")
def list_uploads(session: SessionDep, limit: int = Query(50, ge=1, le=500)) -> list[dict[str, Any]]:
    """Return the latest uploads, newest first, without their per-feature reports."""
    uploads = session.execute(select(Upload).order_by(Upload.id.desc()).limit(limit)).scalars()
    return [
        {k: v for k, v in upload_json(u).items() if k != "report"} | {"summary": u.report.get("summary")}
        for u in uploads
    ]


@router.get("/api/uploads/{uid}", summary="上传结果 Upload status and report")
def read_upload(session: SessionDep, uid: Annotated[int, Path(ge=1, le=2**31 - 1)]) -> dict[str, Any]:
    """Return one upload with its per-feature report."""
    return upload_json(get_upload(session, uid))
