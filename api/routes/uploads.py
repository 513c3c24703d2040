"""Uploads of vector files (GeoJSON, GeoPackage, Shapefile, KML, CSV …) and ledgers: check, diff, commit, replay."""

from __future__ import annotations

import functools
import time
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.types import Message

from api.auth import SignedInDep, rule
from api.deps import LayerDep, SessionDep, SessionsDep
from api.work import client_of, lane, watched
from layers import preferences
from layers.access import Actor
from layers.archive import load_report, spool_file
from layers.base import Layer
from layers.mapping import Unmapped, check_mapping, describe_file, propose, remembered_key, targets, to_remember
from layers.uploads import Upload, UploadOptions, commit_upload, get_upload, upload_json
from spatial.crs import Axis
from spatial.errors import InvalidInput, NotFound, TooLarge, TooSlow

router = APIRouter(tags=["uploads"])

UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "GeoJSON 文件：FeatureCollection、单个 Feature 或几何对象；Excel 台账 .xlsx；"
        "GeoPackage、Shapefile（.zip：.shp/.shx/.dbf，可含 .prj/.cpg）、KML/KMZ、CSV（经度/纬度列或 WKT 列）、"
        "GML、GPX、FlatGeobuf、DXF（请求体或 multipart 的 file；格式按文件内容识别，其次按文件名后缀）",
        "content": {
            "application/geo+json": {"schema": {"type": "object"}},
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {
                "schema": {"type": "string", "format": "binary"}
            },
            **{
                media: {"schema": {"type": "string", "format": "binary"}}
                for media in (
                    "application/geopackage+sqlite3",
                    "application/zip",
                    "application/vnd.google-earth.kml+xml",
                    "application/vnd.google-earth.kmz",
                    "text/csv",
                    "application/gml+xml",
                    "application/gpx+xml",
                    "application/flatgeobuf",
                    "image/vnd.dxf",
                )
            },
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
            },
        },
    }
}


SourceLayerQuery = Annotated[
    str | None,
    Query(
        alias="layer",
        max_length=200,
        description="文件中有多个图层时选择其一（GeoPackage 的表、压缩包中的 Shapefile、KML 文件夹） "
        "the layer of a file holding several",
    ),
]
EncodingQuery = Annotated[
    str | None,
    Query(
        max_length=40,
        pattern=r"^[A-Za-z0-9_ -]+$",
        description="Shapefile / CSV 的文字编码（如 GBK、UTF-8），优先于 .cpg 和自动判断 "
        "the text encoding, overriding the .cpg and the detection",
    ),
]


SPOOL_CHUNK = 1 << 20
"""Bytes gathered before they are written to the spool file (in a worker thread)."""
MULTIPART_SLACK = 64 * 1024
"""What a multipart body may carry beyond the file itself (boundaries, headers, small fields)."""
RATE_GRACE_S = 30.0
"""A body is held to the minimum rate from this many seconds on (a slow start is fine)."""


MAPPING_CHARS = 16_000
"""Characters of a mapping (JSON) accepted at most."""
MAPPING_HELP = (
    'JSON 对象：{"文件字段": "图层字段"}，null 表示不导入，"@extra" 表示保留为其他属性；'
    "也可作为 multipart 字段 mapping。"
    "默认按字段名、中文名、别名（含三调 DKBM/DLBM/QSXZ 等）及上次确认的映射自动匹配 "
    "(file field → layer field; null drops it, @extra keeps it as an other attribute; default: proposed)"
)


def _bounded(request: Request, limit: int, min_rate: float, too_large: TooLarge) -> Request:
    """Return REQUEST reading its body through a guard: past LIMIT bytes, or slower than MIN_RATE, it is refused.

    The guard sits under any parsing, so a multipart body sent without Content-Length is cut
    at the limit too (the form parser would otherwise spool the whole part to disk first), and
    a body trickled a byte at a time cannot hold an upload place for hours.
    """
    receive = request.receive
    started = time.monotonic()
    seen = 0

    async def guarded() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise too_large
            elapsed = time.monotonic() - started
            if message.get("more_body") and elapsed > RATE_GRACE_S and seen < min_rate * elapsed:
                raise TooSlow.one(
                    "upload_too_slow",
                    f"上传速度低于每秒 {min_rate / 1000:g} KB，已中止：请换个网络再试",
                    f"the upload came slower than {min_rate / 1000:g} kB/s and was stopped",
                )
        return message

    return Request(request.scope, guarded)


async def _spool(request: Request, path: FilePath, fields: dict[str, str] | None = None) -> str | None:
    """Write the uploaded file (raw body or multipart `file`) to PATH, refusing it past the limit.

    The body goes to disk as it arrives: memory holds one chunk, never the file. Returns
    the file's name as the client gave it (multipart), else None. FIELDS, if given, receives
    the multipart form's other text fields named in it (``mapping``, ``unmapped``).
    """
    settings = request.app.state.settings
    limit = settings.max_upload_bytes
    too_large = TooLarge.one(
        "payload_too_large", f"文件超过上限 {limit // 1_000_000} MB", f"file larger than {limit} bytes"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + MULTIPART_SLACK:
        raise too_large
    request = _bounded(request, limit + MULTIPART_SLACK, settings.upload_min_rate_kbs * 1000, too_large)
    written = 0
    filename = None
    with path.open("wb") as out:
        pending = bytearray()

        async def write(chunk: bytes) -> None:
            nonlocal written
            written += len(chunk)
            if written > limit:
                raise too_large
            if not pending and len(chunk) >= SPOOL_CHUNK:
                await run_in_threadpool(out.write, chunk)  # a big chunk goes straight to disk, uncopied
                return
            pending.extend(chunk)
            if len(pending) >= SPOOL_CHUNK:
                await run_in_threadpool(out.write, pending)
                pending.clear()

        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form(max_files=1, max_fields=20, max_part_size=64 * 1024)
            try:
                item = form.get("file")
                if item is None or isinstance(item, str):
                    await write((item or "").encode())
                else:
                    while chunk := await item.read(SPOOL_CHUNK):
                        await write(chunk)
                    filename = item.filename
                for name in list(fields or ()):
                    value = form.get(name)
                    if isinstance(value, str) and fields is not None:
                        fields[name] = value
            finally:
                await form.close()
        else:
            async for chunk in request.stream():
                await write(chunk)
        await run_in_threadpool(out.write, pending)
    return filename


def _text(value: str | None, limit: int) -> str | None:
    """Return VALUE (a file name the client gave) without control characters, cut to LIMIT."""
    if value is None:
        return None
    cleaned = "".join(ch for ch in value if ch.isprintable())
    return cleaned[:limit] or None


@router.post(
    "/api/layers/{layer_id}/uploads",
    summary="上传 GeoJSON、GeoPackage、Shapefile、KML、CSV 等文件或 Excel 台账 Upload a vector file or an Excel ledger",
    status_code=201,
    **rule("upload", **UPLOAD_BODY),
)
async def create_upload(
    layer: LayerDep,
    session: SessionDep,
    sessions: SessionsDep,
    actor: SignedInDep,
    request: Request,
    crs: str | None = Query(
        None, description="WGS84, CGCS2000, GCJ-02, BD-09 or EPSG:<code>; default: the file's crs member, else CGCS2000"
    ),
    axis: Annotated[Axis, Query(description="xy: easting/lon first; yx: northing/lat first (X = 北)")] = "xy",
    mode: str = Query("all-or-nothing", pattern="^(all-or-nothing|valid-only)$"),
    dry_run: bool = Query(False, description="check and diff only; write nothing"),
    repair: bool = Query(False, description="make invalid polygons valid, reporting the area change"),
    import_mode: Annotated[
        Literal["add", "update"] | None,
        Query(
            description="Excel 台账：add 新增导入（编码已存在则报错）/ update 更新导入（按编码只改不同的单元格）；"
            "默认：有图形列为 add，否则 update. Ignored for GeoJSON."
        ),
    ] = None,
    source_layer: SourceLayerQuery = None,
    encoding: EncodingQuery = None,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    mapping: Annotated[str | None, Query(max_length=MAPPING_CHARS, description=MAPPING_HELP)] = None,
    unmapped: Annotated[
        Literal["keep", "drop"] | None,
        Query(description="未映射的字段：keep 保留为其他属性（默认）/ drop 不导入 (fields no layer field takes)"),
    ] = None,
) -> JSONResponse:
    """Check every feature, diff against the database, and commit in one transaction.

    The file's fields are mapped to the layer's first (`mapping`, else proposed by name,
    label and alias, the uploader's remembered choices first); the fields no layer field
    takes are kept as other attributes (其他属性) or dropped, never a refusal.

    A few uploads are checked at once (`GUATU_UPLOAD_WORKERS`), a few more wait with their
    file on disk (`GUATU_UPLOAD_QUEUE`); beyond that the answer is 503 with Retry-After. An
    upload whose client leaves stops at its next chunk and writes nothing.
    """
    uploads = lane(request, "uploads")
    async with uploads.place(client_of(request)):
        path = spool_file()
        try:
            form = {"mapping": "", "unmapped": ""}
            filename = await _spool(request, path, form)
            chosen = _mapping(layer, mapping if mapping is not None else form["mapping"] or None)
            how = unmapped or _unmapped(form["unmapped"])
            remembered = None if chosen is not None else _remembered(session, actor, layer)
            options = UploadOptions(
                crs=crs,
                axis=axis,
                mode=mode,  # type: ignore[arg-type]  # checked by the pattern above
                dry_run=dry_run,
                repair=repair,
                uploader=actor.username,  # who signed in: never what the client says
                filename=_text(filename, 300),
                idempotency_key=idempotency_key,
                import_mode=import_mode,
                source_layer=source_layer,
                encoding=encoding,
                mapping=chosen,
                unmapped=how,
                remembered=remembered,
                remember=functools.partial(_remember, actor=actor, layer=layer),
            )
            async with watched(request) as token, uploads.turn():

                def progress(done: int, total: int) -> None:
                    token.check()  # the client left: stop here, write nothing

                fresh = sessions  # a failure is recorded in a session of its own, as the same user
                check = functools.partial(commit_upload, workers=request.app.state.settings.upload_workers)
                result = await uploads.run(check, session, fresh, layer, path, options, progress)
        finally:
            path.unlink(missing_ok=True)
    status = {"committed": 201, "dry_run": 200, "rejected": 422}.get(result["status"], 200)
    return JSONResponse(result, status_code=status)


def _mapping(layer: Layer, raw: str | None) -> dict[str, str | None] | None:
    """Return the mapping the client sent (JSON), checked against LAYER, or None when it sent none."""
    if raw is None:
        return None
    if len(raw) > MAPPING_CHARS:
        raise InvalidInput.one(
            "mapping_invalid",
            f"mapping 过长（上限 {MAPPING_CHARS} 个字符）",
            f"mapping longer than {MAPPING_CHARS} characters",
            field="mapping",
        )
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidInput.one(
            "mapping_invalid", "mapping 不是有效的 JSON", "mapping is not valid JSON", field="mapping"
        ) from None
    return check_mapping(layer, decoded)


def _unmapped(raw: str) -> Unmapped:
    if raw in ("", "keep"):
        return "keep"
    if raw == "drop":
        return "drop"
    raise InvalidInput.one(
        "unmapped_invalid", "unmapped 应为 keep 或 drop", "unmapped must be keep or drop", field="unmapped"
    )


def _remembered(session: Session, actor: Actor, layer: Layer) -> dict[str, str | None] | None:
    """Return ACTOR's remembered mapping for LAYER, if any (their own: row-level security)."""
    try:
        found = preferences.read(session, actor, remembered_key(layer))
    except NotFound:
        return None
    return found if isinstance(found, dict) else None


def _remember(session: Session, mapping: dict[str, str | None], *, actor: Actor, layer: Layer) -> None:
    """Keep MAPPING as ACTOR's choice for LAYER (the next upload proposes it again)."""
    if actor.user_id is not None:
        preferences.write(session, actor, remembered_key(layer), to_remember(mapping))


@router.post(
    "/api/layers/{layer_id}/uploads/inspect",
    summary="查看文件字段 List a file's fields and the proposed mapping",
    **rule("upload", **UPLOAD_BODY),
)
async def inspect_upload(
    layer: LayerDep,
    session: SessionDep,
    actor: SignedInDep,
    request: Request,
    source_layer: SourceLayerQuery = None,
    encoding: EncodingQuery = None,
) -> dict[str, Any]:
    """Return the file's format, fields (with sample values), feature count, the proposed mapping and the targets.

    Spooled and bounded as an upload is, read in the uploads lane; nothing is stored.
    """
    uploads = lane(request, "uploads")
    async with uploads.place(client_of(request)):
        path = spool_file()
        try:
            filename = await _spool(request, path)
            async with uploads.turn():
                described = await uploads.run(
                    functools.partial(describe_file, layer=source_layer, encoding=encoding), path, _text(filename, 300)
                )
        finally:
            path.unlink(missing_ok=True)
    remembered = _remembered(session, actor, layer)
    names = [f["name"] for f in described["fields"]]
    return {
        **described,
        "proposed": propose(layer, names, remembered),
        "targets": targets(layer),
        "remembered": remembered is not None and any(n in remembered for n in names),
    }


@router.get("/api/uploads", summary="上传记录 List uploads", **rule("user"))
def list_uploads(session: SessionDep, limit: int = Query(50, ge=1, le=500)) -> list[dict[str, Any]]:
    """Return the latest uploads, newest first, without their per-feature reports."""
    uploads = session.execute(select(Upload).order_by(Upload.id.desc()).limit(limit)).scalars()
    return [
        {k: v for k, v in upload_json(u).items() if k != "report"} | {"summary": u.report.get("summary")}
        for u in uploads
    ]


@router.get("/api/uploads/{uid}", summary="上传结果 Upload status and report", **rule("user"))
def read_upload(session: SessionDep, uid: Annotated[int, Path(ge=1, le=2**31 - 1)]) -> dict[str, Any]:
    """Return one upload with its report as stored (capped: `full_report` links to the whole of it)."""
    return upload_json(get_upload(session, uid))


@router.get("/api/uploads/{uid}/report", summary="完整报告 Full upload report", **rule("user"))
def read_full_report(session: SessionDep, uid: Annotated[int, Path(ge=1, le=2**31 - 1)]) -> Response:
    """Return the whole per-feature report of one upload (kept as a file while the archive keeps it)."""
    upload = get_upload(session, uid)
    if not upload.report.get("full_report"):
        return JSONResponse(upload.report)
    kept = load_report(uid)
    if kept is None:
        raise NotFound.one(
            "report_pruned",
            f"上传 #{uid} 的完整报告已按保留期限清理，记录中仍有前 {len(upload.report['features'])} 条",
            f"the full report of upload #{uid} was pruned; the record keeps its first entries",
            id=uid,
        )
    return Response(kept, media_type="application/json")
