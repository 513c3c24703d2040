"""One table from domain errors to HTTP status codes, and the handlers that use it."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from api.auth import LoginRedirect
from spatial.errors import Busy, GuatuError, PreconditionFailed, Unauthorized
from spatial.work import Cancelled

log = logging.getLogger("guatu.api")

STATUS = {
    "invalid": 422,
    "malformed": 400,
    "too_large": 413,
    "too_slow": 408,
    "not_found": 404,
    "conflict": 409,
    "unavailable": 503,
    "busy": 503,
    "too_many": 429,
    "unauthorized": 401,
    "forbidden": 403,
    "precondition_failed": 412,
}

_HTTP_CODES = {
    400: ("bad_request", "请求格式不正确（如 multipart 表单残缺）", "bad request"),
    404: ("not_found", "找不到该地址", "not found"),
    405: ("method_not_allowed", "不支持该请求方法", "method not allowed"),
    413: ("payload_too_large", "请求体过大", "payload too large"),
    415: (
        "unsupported_media_type",
        "请求体类型不受支持，应为 Content-Type: application/json 或 application/geo+json",
        "unsupported media type: send application/json or application/geo+json",
    ),
}


def error_body(problems: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the body of an error: the first problem at the top, all of them listed."""
    first = problems[0]
    return {**first, "errors": problems}


def _guatu(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GuatuError)
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Busy) else None
    body = error_body([p.as_dict() for p in exc.problems])
    if isinstance(exc, PreconditionFailed) and exc.current is not None:
        body["current"] = exc.current  # what is stored now: the page shows it beside the user's version
        headers = {"ETag": f'"{exc.current.get("version")}"'}
    if isinstance(exc, Unauthorized):
        headers = {"WWW-Authenticate": 'Bearer realm="guatu"'}
    return JSONResponse(body, status_code=STATUS[exc.kind], headers=headers)


def _refused_by_policy(request: Request, exc: Exception) -> JSONResponse:
    """Answer 403 for a write PostgreSQL's row-level security refused (outside the user's area); else 500."""
    assert isinstance(exc, ProgrammingError)
    if getattr(exc.orig, "sqlstate", None) == "42501" and "row-level security" in str(exc.orig):
        log.warning("refused by the database: %s", str(exc.orig).splitlines()[0])
        return _answer(
            "outside_area",
            "超出您的辖区或权限，数据库拒绝了该写入，没有任何数据被修改"
            " (outside your area: the database refused the write)",
            403,
        )
    return _unexpected(request, exc)


def _answer(code: str, message: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    """Return the error body of one problem that belongs to no field."""
    return JSONResponse(error_body([{"code": code, "message": message, "where": {}}]), status, headers=headers)


def _pool_exhausted(_: Request, exc: Exception) -> JSONResponse:
    log.warning("database connection pool exhausted: %s", exc)
    message = "服务器繁忙，数据库连接已用尽，请稍后重试 (server busy: no database connection free, retry shortly)"
    return _answer("busy", message, 503, {"Retry-After": "5"})


def _request_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ())]
        where = {"field": ".".join(loc[1:]) or loc[0]} if loc else {}
        problems.append(
            {
                "code": "parameter_invalid",
                "message": f"参数“{where.get('field', '')}”无效 (invalid parameter: {err.get('msg')})",
                "where": where,
            }
        )
    return JSONResponse(error_body(problems), status_code=422)


def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code, zh, en = _HTTP_CODES.get(exc.status_code, ("http_error", "请求错误", str(exc.detail)))
    if exc.status_code == 400 and exc.detail:
        en = f"{en}: {str(exc.detail)[:200]}"  # what the parser found, e.g. a multipart part without a name
    body = {"code": code, "message": f"{zh} ({en})", "where": {}}
    return JSONResponse(error_body([body]), status_code=exc.status_code, headers=exc.headers)


def _database(_: Request, exc: Exception) -> JSONResponse:
    log.error("database unavailable: %s", exc)
    return _answer("database_unavailable", "数据库暂时不可用，请稍后重试 (database unavailable)", 503)


def _client_gone(_: Request, exc: Exception) -> Response:
    """Answer nobody: the client left (or was cut) before its body was in, or while its heavy job ran."""
    assert isinstance(exc, ClientDisconnect | Cancelled)
    return Response(status_code=499)  # nginx's "client closed request"; the server drops it unsent


def _to_login(request: Request, exc: Exception) -> Response:
    """Send a browser asking for a page while signed out to the sign-in page, and back after."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)


def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error", exc_info=exc)
    return _answer("internal_error", "服务器内部错误，已记录 (internal error, logged)", 500)


def install(app: FastAPI) -> None:
    """Register every error handler on APP."""
    app.add_exception_handler(GuatuError, _guatu)
    app.add_exception_handler(LoginRedirect, _to_login)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(OperationalError, _database)
    app.add_exception_handler(ProgrammingError, _refused_by_policy)
    app.add_exception_handler(PoolTimeout, _pool_exhausted)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Cancelled, _client_gone)
    app.add_exception_handler(Exception, _unexpected)
