"""The problem ledger (问题台账): report, list, assign, rectify, verify and close (销号); photos; pins; counts."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.auth import ActorDep, SignedInDep, rule
from api.deps import SessionDep, SessionsDep
from api.routes.workbooks import Built, send_tables
from layers import hierarchy, problems
from layers.features import parse_bbox
from spatial.errors import InvalidInput, TooLarge

router = APIRouter(tags=["problems"])
SCOPE_PATTERN = hierarchy.scope_pattern()
SHA = r"^[0-9a-f]{64}$"


class LinkedFeature(BaseModel):
    """A feature the problem is about: its layer and its code."""

    layer: str = Field(max_length=40)
    code: str = Field(max_length=60)


class ProblemIn(BaseModel):
    """A new problem: what (type, description) and where (lon/lat in WGS84, features, or a finding)."""

    type: str = Field(max_length=10, description="、".join(problems.TYPES))
    description: str = Field(min_length=1, max_length=problems.DESCRIPTION_CHARS)
    source: str = Field("巡查", max_length=10, description="、".join(problems.SOURCES))
    lon: float | None = Field(None, ge=-180, le=180, description="WGS84 经度 longitude")
    lat: float | None = Field(None, ge=-90, le=90, description="WGS84 纬度 latitude")
    features: list[LinkedFeature] = Field(default_factory=list, max_length=50)
    finding_id: str | None = Field(None, pattern=r"^[0-9a-f]{16}$", description="边界检查发现的编号 finding id")
    finding_geometry: dict[str, Any] | None = Field(None, description="the finding's GeoJSON geometry")
    photos: list[Annotated[str, Field(pattern=SHA)]] = Field(default_factory=list, max_length=9)


class EventIn(BaseModel):
    """A transition: the action, and what it needs (交办: assignee, deadline; 提交验收: an after photo)."""

    action: str = Field(max_length=8, description="交办、整改、提交验收、销号、退回")
    note: str | None = Field(None, max_length=problems.NOTE_CHARS)
    assignee: str | None = Field(None, max_length=60, description="交办: the responsible person's username")
    unit: str | None = Field(None, max_length=100, description="交办: the responsible unit")
    deadline: dt.date | None = Field(None, description="交办: the deadline")
    photos: list[Annotated[str, Field(pattern=SHA)]] = Field(default_factory=list, max_length=9)


@router.post("/api/problems", summary="登记问题 Register a problem", status_code=201, **rule("user"))
def create_problem(
    body: ProblemIn,
    session: SessionDep,
    actor: SignedInDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JSONResponse:
    """Register a problem at a place (WGS84 lon/lat), on features (layer + code) or from a boundary-check finding.

    With an ``Idempotency-Key`` a retried report (a phone on a flaky connection) is stored once:
    the repeat answers 200 with the problem first stored.
    """
    new = problems.NewProblem(
        type=body.type,
        description=body.description,
        source=body.source,
        lon=body.lon,
        lat=body.lat,
        features=[f.model_dump() for f in body.features],
        finding_id=body.finding_id,
        finding_geometry=body.finding_geometry,
        photos=body.photos,
        idempotency_key=idempotency_key,
    )
    if (body.lon is None) != (body.lat is None):
        raise InvalidInput.one("location_incomplete", "经度和纬度须同时给出", "give both lon and lat", field="lat")
    found, fresh = problems.create(session, actor, new)
    session.commit()
    return JSONResponse(found, status_code=201 if fresh else 200)


@router.get("/api/problems", summary="问题列表 List problems", **rule("user"))
def list_problems(
    session: SessionDep,
    actor: SignedInDep,
    status: Annotated[
        str | None, Query(max_length=8, description="open, or one of " + "、".join(problems.STATES))
    ] = None,
    overdue: bool | None = None,
    unit: Annotated[str | None, Query(max_length=100, description="responsible unit, or an area code")] = None,
    scope: Annotated[str | None, Query(pattern=SCOPE_PATTERN)] = None,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
    size: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """Return one page of the problems in the user's area, newest first, each with its light and allowed actions."""
    if status and status != "open" and status not in problems.STATES:
        raise InvalidInput.one("status_invalid", "状态不在列表中", "unknown status", field="status")
    return problems.list_problems(
        session, actor, status=status, overdue=overdue, unit=unit, scope=scope, page=page, size=size
    )


@router.get("/api/problems.geojson", summary="问题点位 Problem pins", **rule("user"))
def problem_pins(
    session: SessionDep,
    actor: SignedInDep,
    bbox: Annotated[str | None, Query(description="minlon,minlat,maxlon,maxlat")] = None,
) -> Response:
    """Return the problems with a place inside BBOX (open, or closed in the last 30 days) as GeoJSON pins."""
    found = problems.pins(session, actor, parse_bbox(bbox))
    return Response(orjson.dumps(found), media_type="application/geo+json")


@router.get("/api/problems/summary", summary="问题统计 Counts per community or unit", **rule("user"))
def problem_summary(
    session: SessionDep, by: Annotated[Literal["community", "unit"], Query()] = "community"
) -> dict[str, Any]:
    """Return open, overdue and closed-this-month counts: in all, and per community (or responsible unit)."""
    today = dt.date.today()
    return {"by": by, "total": problems.counts(session, today), "rows": problems.by_unit(session, today, by)}


@router.post(
    "/api/problems/photos",
    summary="上传问题照片 Upload a problem photo",
    status_code=201,
    **rule(
        "user",
        requestBody={
            "required": True,
            "description": "JPEG、PNG 或 WebP 照片：请求体或 multipart 的 file",
            "content": {
                "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
                },
            },
        },
    ),
)
async def upload_photo(
    request: Request,
    session: SessionDep,
    actor: SignedInDep,
    phase: Annotated[str, Query(max_length=4, description="整改前 or 整改后")] = problems.BEFORE,
) -> JSONResponse:
    """Keep a photo by its SHA-256 (the same photo twice is kept once); answer its id to name in a report or event."""
    body = await _body(request)
    kept = await run_in_threadpool(problems.add_photo, session, actor, body, phase)
    await run_in_threadpool(session.commit)
    return JSONResponse(kept, status_code=201)


async def _body(request: Request) -> bytes:
    """Return the photo sent as the raw body or as a multipart ``file``, refusing more than the limit."""
    limit = problems.MAX_PHOTO_BYTES + 64 * 1024
    chunks, seen = [], 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise TooLarge.one(
                "photo_too_large",
                f"照片超过 {problems.MAX_PHOTO_BYTES // 1_000_000} MB",
                f"the photo is larger than {problems.MAX_PHOTO_BYTES // 1_000_000} MB",
                field="file",
            )
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return raw
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": raw, "more_body": False}

    form = await Request(request.scope, replay).form()
    part = form.get("file")
    if part is None or isinstance(part, str):
        raise InvalidInput.one("photo_missing", "缺少照片文件 file", "no photo file in the form", field="file")
    return await part.read()


@router.get("/api/problems/photos/{sha}", summary="问题照片 A problem photo", **rule("user"))
def read_photo(session: SessionDep, sha: Annotated[str, Path(pattern=SHA)]) -> Response:
    """Return a photo to whoever may see a problem it belongs to (or who sent it)."""
    body, kind = problems.photo(session, sha)
    return Response(body, media_type=kind, headers={"Cache-Control": "private, max-age=86400"})


@router.get(
    "/api/problems/export.xlsx",
    summary="导出问题台账 Export the problem ledger as XLSX",
    response_class=Response,
    **rule("user"),
)
async def export_problems(
    sessions: SessionsDep,
    actor: ActorDep,
    request: Request,
    status: Annotated[
        str | None, Query(max_length=8, description="open, or one of " + "、".join(problems.STATES))
    ] = None,
    overdue: bool | None = None,
    scope: Annotated[str | None, Query(pattern=SCOPE_PATTERN)] = None,
) -> Response:
    """Return the problems in the user's area kept by the filter: sheets 说明, 问题台账 (lights) and 流转记录 (log)."""
    if status and status != "open" and status not in problems.STATES:
        raise InvalidInput.one("status_invalid", "状态不在列表中", "unknown status", field="status")

    def build(session: Session) -> Built:
        return problems.export(session, status=status, overdue=overdue, scope=scope)

    return await send_tables(request, sessions, actor, "问题台账", build)


@router.get("/api/problems/{pid}", summary="问题详情 A problem and its log", **rule("user"))
def read_problem(session: SessionDep, actor: SignedInDep, pid: Annotated[int, Path(ge=1, le=2**31 - 1)]) -> Any:
    """Return one problem with every transition (who, when, note, photos) and the actions the user may take."""
    return problems.read(session, actor, pid)


@router.post("/api/problems/{pid}/events", summary="流转 Move a problem on", status_code=201, **rule("user"))
def add_event(
    body: EventIn, session: SessionDep, actor: SignedInDep, pid: Annotated[int, Path(ge=1, le=2**31 - 1)]
) -> Any:
    """交办 (planners: assignee, deadline), 整改 and 提交验收 (the assignee or the grid manager: an after photo),
    销号 or 退回 (planners; never the one who submitted the rectification). The database checks every move."""
    found = problems.transition(
        session,
        actor,
        pid,
        body.action,
        note=body.note,
        assignee=body.assignee,
        unit=body.unit,
        deadline=body.deadline,
        photos=body.photos,
    )
    session.commit()
    return found
