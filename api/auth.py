"""Who is asking: web sessions (cookie + CSRF token), API tokens (Bearer), and each route's rule.

Every route states its rule with :func:`rule` (shown in /openapi.json as ``x-guatu-access``);
tests/test_access_matrix.py fails for a route without one. The rule is checked here; the
area is enforced by PostgreSQL's row-level security, stated per transaction from the actor
(:func:`layers.access.Actor.settings`), so a route that forgets a check still cannot reach
outside the user's area.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from threading import Lock
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from api.settings import ApiSettings
from layers import accounts
from layers.access import ROLES, Actor
from layers.features import layer_or_404
from spatial.errors import Forbidden, Unauthorized

SESSION_COOKIE = "guatu_session"
CSRF_COOKIE = "guatu_csrf"
CSRF_HEADER = "x-csrf-token"
ACCESS_KEY = "x-guatu-access"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CACHE_S = 15.0
"""How long a resolved session or token is trusted without asking the database again, with one worker
(a logout ends it at once in the process that served it; with several workers nothing is cached)."""

RULES = {
    "public": "公开 anyone, signed in or not",
    "page": "页面：已登录用户，未登录转到登录页 a page: signed-in users; others are sent to sign in",
    "user": "已登录用户 any signed-in user (reads are kept to the user's area by the database)",
    "edit": "可编辑该图层的角色 roles that edit the layer in the path, inside their area",
    "upload": "可上传该图层的角色 roles that upload into the layer in the path",
    "checks": "可做边界检查的角色 roles that run boundary checks",
    "print": "可打印挂图的角色 roles that print wall maps",
    "admin": "管理员 administrators",
    "contracts": "管理经济合同的角色 roles that keep lease contracts (planners), inside their area",
}


class _Resolved:
    """A TTL cache of token digest → (actor, CSRF token or None), shared by the app's threads."""

    def __init__(self, size: int = 4096, ttl_s: float = CACHE_S) -> None:
        self._items: OrderedDict[str, tuple[float, Actor, str | None]] = OrderedDict()
        self._lock = Lock()
        self._size = size
        self._ttl_s = ttl_s

    def get(self, key: str) -> tuple[Actor, str | None] | None:
        with self._lock:
            found = self._items.get(key)
            if found is None or found[0] < time.monotonic():
                self._items.pop(key, None)
                return None
            return found[1], found[2]

    def put(self, key: str, actor: Actor, csrf: str | None) -> None:
        if self._ttl_s <= 0:
            return
        with self._lock:
            self._items[key] = (time.monotonic() + self._ttl_s, actor, csrf)
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def drop(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def resolved(request: Request) -> _Resolved:
    """Return the app's cache of resolved sessions and tokens."""
    cache: _Resolved | None = getattr(request.app.state, "resolved", None)
    if cache is None:
        cache = request.app.state.resolved = _Resolved(ttl_s=session_cache_s(request.app.state.settings))
    return cache


def session_cache_s(settings: ApiSettings) -> float:
    """Return how long a resolved sign-in is trusted: as set, else CACHE_S with one worker and 0 with several.

    Another worker's cache cannot be told of a sign-out or a disabled account: with several
    workers every request asks the database (one primary-key lookup).

    >>> session_cache_s(ApiSettings(workers=1)), session_cache_s(ApiSettings(workers=2))
    (15.0, 0.0)
    """
    if settings.session_cache_s is not None:
        return settings.session_cache_s
    return CACHE_S if settings.workers == 1 else 0.0


def _lookup(factory: sessionmaker[Session], kind: str, token: str) -> tuple[Actor, str | None] | None:
    with factory() as session:
        if kind == "session":
            found = accounts.user_of_session(session, token)
            if found is None:
                return None
            return accounts.actor_of(found[0]), found[1]
        user = accounts.user_of_token(session, token)
        session.commit()  # last_used
        return None if user is None else (accounts.actor_of(user), None)


def actor_of_request(request: Request) -> Actor | None:
    """Return who is asking (a session cookie or a Bearer token), or None; refuse a forged write.

    Runs in a worker thread (it may ask the database). A cookie-authenticated write must carry
    the session's CSRF token in ``X-CSRF-Token``; a Bearer token needs none (no browser sends it
    on its own).
    """
    if hasattr(request.state, "actor"):
        found: Actor | None = request.state.actor
        return found
    header = request.headers.get("authorization", "")
    kind, token = "", ""
    if header[:7].lower() == "bearer ":
        kind, token = "token", header[7:].strip()
        if not token:
            raise _bad_token()
    elif request.cookies.get(SESSION_COOKIE):
        kind, token = "session", request.cookies[SESSION_COOKIE]
    actor: Actor | None = None
    if kind:
        key = kind + ":" + accounts.digest(token)
        cache = resolved(request)
        hit = cache.get(key)
        if hit is None:
            hit = _lookup(request.app.state.sessions, kind, token)
            if hit is not None:
                cache.put(key, *hit)
        if hit is None:
            if kind == "token":
                raise _bad_token()
            request.state.actor = None  # an expired cookie: treated as signed out
            return None
        actor, csrf = hit
        if kind == "session" and request.method not in SAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "")
            if not csrf or not sent or not accounts.same(sent, csrf):
                raise Forbidden.one(
                    "csrf_failed",
                    "请求缺少有效的 CSRF 令牌：请从 guatu 页面操作，或刷新页面后重试",
                    "missing or wrong CSRF token: act from a guatu page, or reload it and try again",
                )
    request.state.actor = actor
    return actor


def _bad_token() -> Unauthorized:
    return Unauthorized.one("token_invalid", "接口令牌无效或已吊销", "API token is invalid or revoked")


def login_required() -> Unauthorized:
    """Return the error of a request that needs a signed-in user."""
    return Unauthorized.one("login_required", "请先登录", "sign in first")


def forbidden(zh: str, en: str, code: str = "forbidden") -> Forbidden:
    """Return a 403 with CODE."""
    return Forbidden.one(code, zh, en)


class LoginRedirect(Exception):
    """A page asked for by nobody signed in: answered with a redirect to the sign-in page."""


def _check(kind: str, request: Request, actor: Actor | None) -> None:
    if kind == "public":
        return
    if actor is None and kind == "page":
        raise LoginRedirect
    if actor is None:
        raise login_required()
    role = ROLES[actor.role]
    if kind in ("user", "page"):
        return
    if kind == "admin":
        if not actor.is_admin:
            raise forbidden("仅管理员可用", "administrators only")
        return
    if kind in ("edit", "upload"):
        layer = layer_or_404(str(request.path_params.get("layer_id", "")))
        allowed = actor.may_edit(layer) if kind == "edit" else actor.may_upload(layer)
        if not allowed:
            verb = ("编辑", "edit") if kind == "edit" else ("上传", "upload into")
            raise forbidden(
                f"角色“{role.zh}”不能{verb[0]}{layer.zh}", f"role {role.en} may not {verb[1]} {layer.en.lower()}"
            )
        return
    if kind == "contracts" and not role.contracts:
        raise forbidden(f"角色“{role.zh}”不能管理经济合同", f"role {role.en} may not keep lease contracts")
    if kind == "checks" and not role.checks:
        raise forbidden(f"角色“{role.zh}”不能做边界检查", f"role {role.en} may not run boundary checks")
    if kind == "print" and not role.prints:
        raise forbidden(f"角色“{role.zh}”不能打印挂图", f"role {role.en} may not print wall maps")


def rule(kind: str, **openapi_extra: Any) -> dict[str, Any]:
    """Return the route decorator arguments stating KIND (see :data:`RULES`): checked, and shown in the schema."""
    if kind not in RULES:
        raise ValueError(f"unknown access rule {kind!r}")

    async def check(request: Request) -> None:
        if kind == "public":
            return  # asks nothing of anyone: no lookup (healthz stays free of the database)
        actor = getattr(request.state, "actor", None) if hasattr(request.state, "actor") else await _resolve(request)
        _check(kind, request, actor)

    extra = dict(openapi_extra)
    extra[ACCESS_KEY] = kind
    return {"dependencies": [Depends(check)], "openapi_extra": extra}


async def _resolve(request: Request) -> Actor | None:
    from starlette.concurrency import run_in_threadpool

    if not (request.headers.get("authorization") or request.cookies.get(SESSION_COOKIE)):
        request.state.actor = None
        return None
    return await run_in_threadpool(actor_of_request, request)


async def current_actor(request: Request) -> Actor | None:
    """Return who is asking, or None (a dependency)."""
    if hasattr(request.state, "actor"):
        found: Actor | None = request.state.actor
        return found
    return await _resolve(request)


async def signed_in(request: Request) -> Actor:
    """Return who is asking, or answer 401."""
    actor = await current_actor(request)
    if actor is None:
        raise login_required()
    return actor


ActorDep = Annotated[Actor | None, Depends(current_actor)]
SignedInDep = Annotated[Actor, Depends(signed_in)]


class LoginLimiter:
    """At most LIMIT login attempts per client address in WINDOW_S seconds (besides the per-user lockout)."""

    def __init__(self, limit: int = 10, window_s: float = 60.0) -> None:
        self.limit, self.window_s = limit, window_s
        self._seen: dict[str, deque[float]] = {}
        self._lock = Lock()

    def allow(self, client: str) -> float | None:
        """Record an attempt from CLIENT; return None, or the seconds to wait when over the limit."""
        now = time.monotonic()
        with self._lock:
            if len(self._seen) > 10_000:  # bounded: forget the quiet ones
                self._seen = {k: v for k, v in self._seen.items() if v and v[-1] > now - self.window_s}
            times = self._seen.setdefault(client, deque())
            while times and times[0] <= now - self.window_s:
                times.popleft()
            if len(times) >= self.limit:
                return times[0] + self.window_s - now
            times.append(now)
            return None


def iter_rules(app: Any) -> Iterator[tuple[str, set[str], str | None]]:
    """Yield (path, methods, rule or None) of every route of APP (pages and mounts included)."""
    for included in app.routes:
        candidates = getattr(included, "effective_candidates", None)
        for route in candidates() if callable(candidates) else [included]:  # FastAPI keeps included routers whole
            methods = set(getattr(route, "methods", None) or ())
            extra = getattr(route, "openapi_extra", None) or {}
            yield getattr(route, "path", ""), methods, extra.get(ACCESS_KEY)
