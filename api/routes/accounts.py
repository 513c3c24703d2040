"""Signing in and out, who am I, API tokens."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from api.auth import CSRF_COOKIE, SESSION_COOKIE, LoginLimiter, SignedInDep, resolved, rule
from api.security import NONCE_STATE, CsrfGuard, origin_of, with_nonce
from api.work import client_of
from layers import accounts, hierarchy
from layers.access import ROLES, Actor
from layers.accounts import SESSION_HOURS
from layers.base import REGISTRY
from spatial.errors import Forbidden, InvalidInput, MalformedInput, TooMany, Unauthorized
from web.login import build_login_page

router = APIRouter(tags=["accounts"])
MAX_LOGIN_BYTES = 4096


def _limiter(request: Request) -> LoginLimiter:
    found: LoginLimiter | None = getattr(request.app.state, "login_limiter", None)
    if found is None:
        found = request.app.state.login_limiter = LoginLimiter()
    return found


def _hashing(request: Request) -> asyncio.Semaphore:
    """Return the app's bound on password checks running at once (two: the other core keeps serving)."""
    found: asyncio.Semaphore | None = getattr(request.app.state, "hashing", None)
    if found is None:
        found = request.app.state.hashing = asyncio.Semaphore(2)
    return found


@router.get("/login", response_class=HTMLResponse, include_in_schema=False, **rule("public"))
def login_page(request: Request, next: str = Query("/", max_length=500)) -> HTMLResponse:  # noqa: A002 - the usual name
    """Return the sign-in page."""
    hint = request.app.state.settings.login_hint
    html = build_login_page(title=request.app.state.settings.site_title, next_url=next, demo_hint=hint)
    return HTMLResponse(with_nonce(html, getattr(request.state, NONCE_STATE)))


async def _credentials(request: Request) -> tuple[str, str]:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":  # no form or text/plain: what another site's page could send on its own
        raise MalformedInput.one("json_required", "请以 JSON 提交用户名和密码", "send username and password as JSON")
    origin = request.headers.get("origin")
    own = (origin_of(request.app.state.settings.public_url), CsrfGuard.own_origin(request.scope))
    if origin is not None and origin_of(origin) not in own:  # another site signing the browser in as its user
        raise Forbidden.one(
            "csrf_failed",
            "登录请求来自其他网站，已拒绝",
            "sign-in from another origin refused",
            field="Origin",
        )
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_LOGIN_BYTES:
            raise MalformedInput.one("body_too_large", "请求体过大", "body too large")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("username"), str)
        or not isinstance(data.get("password"), str)
    ):
        raise InvalidInput.one("credentials_missing", "请填写用户名和密码", "give username and password")
    return data["username"].strip()[:60], data["password"][:200]


def me_json(actor: Actor) -> dict[str, Any]:
    """Return what the pages need to know of the signed-in user: who, role, area, and what they may do per layer."""
    role = ROLES[actor.role]
    area_level = hierarchy.level_of(actor.area) if actor.area else None
    return {
        "user": {
            "username": actor.username,
            "display_name": actor.display_name or actor.username,
            "role": actor.role,
            "role_zh": role.zh,
            "role_en": role.en,
            "area": actor.area,
            "area_level": area_level.label() if area_level else ("全部" if actor.is_admin else None),
        },
        "may": {"upload": role.uploads, "checks": role.checks, "print": role.prints, "contracts": role.contracts},
        "layers": {
            layer.id: {"read": True, "edit": actor.may_edit(layer), "personal": actor.sees_personal()}
            for layer in sorted(REGISTRY.values(), key=lambda x: x.order)
        },
    }


@router.post("/api/login", summary="登录 Sign in", **rule("public"))
async def login(request: Request) -> JSONResponse:
    """Check the credentials and start a session: an HttpOnly session cookie and a CSRF cookie the pages send back."""
    wait = _limiter(request).allow(client_of(request) or "?")
    if wait is not None:
        error = TooMany.one(
            "too_many_logins", "登录尝试过于频繁，请稍后再试", "too many sign-in attempts: wait a little"
        )
        error.retry_after = max(1, math.ceil(wait))
        raise error
    username, password = await _credentials(request)

    def attempt() -> tuple[accounts.LoginResult, tuple[str, str] | None, Actor | None]:
        with request.app.state.sessions() as session:
            result = accounts.authenticate(session, username, password)
            opened = accounts.open_session(session, result.user) if result.user is not None else None
            actor = accounts.actor_of(result.user) if result.user is not None else None
            session.commit()
            return result, opened, actor

    async with _hashing(request):  # argon2id costs ~50 ms of a core: a flood of sign-ins waits its turn
        result, opened, actor = await run_in_threadpool(attempt)
    if result.refusal == "locked":
        until = result.locked_until.strftime("%H:%M") if result.locked_until else ""
        raise Unauthorized.one(
            "account_locked",
            f"连续登录失败次数过多，账户已锁定至 {until}（UTC）",
            f"too many failed sign-ins: the account is locked until {until} UTC",
        )
    if opened is None or actor is None:
        raise Unauthorized.one("bad_credentials", "用户名或密码错误", "wrong username or password")
    token, csrf = opened
    response = JSONResponse(me_json(actor))
    secure = request.app.state.settings.secure_cookies
    age = SESSION_HOURS * 3600
    response.set_cookie(SESSION_COOKIE, token, max_age=age, httponly=True, samesite="lax", secure=secure, path="/")
    response.set_cookie(CSRF_COOKIE, csrf, max_age=age, httponly=False, samesite="strict", secure=secure, path="/")
    return response


@router.post("/api/logout", summary="退出 Sign out", status_code=204, **rule("user"))
async def logout(request: Request) -> Response:
    """End the session (cookie) and forget it."""
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        resolved(request).drop("session:" + accounts.digest(token))

        def close() -> None:
            with request.app.state.sessions() as session:
                accounts.close_session(session, token)
                session.commit()

        await run_in_threadpool(close)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


@router.get("/api/me", summary="当前用户 Who am I", **rule("user"))
async def me(actor: SignedInDep) -> dict[str, Any]:
    """Return the signed-in user: role, area, and per layer whether they may edit it and see personal fields."""
    return me_json(actor)


@router.post("/api/tokens", summary="新建接口令牌 New API token (for scripts, QGIS)", status_code=201, **rule("user"))
async def new_token(request: Request, actor: SignedInDep, name: str = Query("api", max_length=100)) -> dict[str, Any]:
    """Create a token acting as the signed-in user; it is shown once (stored only as its hash)."""

    def create() -> str:
        with request.app.state.sessions() as session:
            user = session.get(accounts.User, actor.user_id)
            assert user is not None
            token = accounts.add_token(session, user, name)
            session.commit()
            return token

    token = await run_in_threadpool(create)
    return {"token": token, "name": name, "use": "Authorization: Bearer <token>"}
