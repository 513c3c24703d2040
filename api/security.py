"""Security at the door of every request: trusted hosts, CSRF for cookie sessions, security headers with a CSP nonce.

Each is a pure ASGI middleware (like `api.guards.RefuseNul`): a refused request never reaches a
route, and its body is never read. `create_app` stacks them, outermost first: `SecurityHeaders`
(around everything, 500s included), `TrustedHosts`, `RefuseNul`, `CsrfGuard`.
"""

from __future__ import annotations

import hmac
import re
import secrets
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_body

SESSION_COOKIE = "guatu_session"
"""A request carrying it is authenticated by cookie, and so CSRF-checked."""
CSRF_COOKIE = "guatu_csrf"
"""Readable by the page's script, which sends it back in CSRF_HEADER (double submit)."""
CSRF_HEADER = "x-csrf-token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
HOST_EXEMPT = frozenset({"/healthz"})
"""Paths answered whatever the Host: load balancers and probes ask by address."""
NONCE_STATE = "csp_nonce"
"""Where in the request's state the response's CSP nonce is (`request.state.csp_nonce`)."""

CSP = (
    "default-src 'self'; script-src 'self' 'nonce-{nonce}'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; worker-src 'self' blob:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
"""No 'unsafe-inline' for scripts: an inline script runs only with the response's nonce."""
STATIC_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
)
OWN_HEADERS = frozenset(name for name, _ in STATIC_HEADERS) | {b"content-security-policy"}
SCRIPT_TAG = re.compile(r"<script(?=[\s>])", re.IGNORECASE)


def security_headers(nonce: str) -> list[tuple[bytes, bytes]]:
    """Return the security headers of a response whose inline scripts carry NONCE."""
    return [*STATIC_HEADERS, (b"content-security-policy", CSP.format(nonce=nonce).encode())]


def with_nonce(page: str, nonce: str) -> str:
    """Return PAGE with NONCE on every <script> tag.

    Only the app's own pages are given to it: they are rendered from templates where data
    enters as escaped text or `|tojson` (which writes `<` as `\\u003c`), so every `<script`
    in them is the templates' own.

    >>> with_nonce('<script src="/a.js"></script><SCRIPT>go()</SCRIPT><scripts>', "n0")
    '<script nonce="n0" src="/a.js"></script><script nonce="n0">go()</SCRIPT><scripts>'
    """
    return SCRIPT_TAG.sub(f'<script nonce="{nonce}"', page)


def header(scope: Scope, name: bytes) -> str | None:
    """Return the request header NAME (lower case) of SCOPE, decoded as latin-1, or None."""
    for key, value in scope.get("headers") or ():
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def host_name(host: str) -> str:
    """Return the host name of a Host header, port dropped, lower-cased.

    >>> host_name("Example.org:8080"), host_name("[::1]:8000"), host_name("::1"), host_name("127.0.0.1")
    ('example.org', '::1', '::1', '127.0.0.1')
    """
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def origin_of(url: str) -> tuple[str, str, int] | None:
    """Return (scheme, host, port) of an origin or URL, the port filled in for http and https; None if it has none.

    >>> origin_of("http://127.0.0.1"), origin_of("HTTPS://Example.org:8443/x"), origin_of("null")
    (('http', '127.0.0.1', 80), ('https', 'example.org', 8443), None)
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


async def refuse(send: Send, status: int, code: str, message: str, where: dict[str, Any] | None = None) -> None:
    """Answer STATUS with the app's error body of one problem; nothing of the request is echoed."""
    body = orjson.dumps(error_body([{"code": code, "message": message, "where": where or {}}]))
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    """Give every HTTP response the security headers, and its own CSP nonce (in `request.state.csp_nonce`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; add the headers to its response's start."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(16)
        scope.setdefault("state", {})[NONCE_STATE] = nonce
        added = security_headers(nonce)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers") or () if bytes(k).lower() not in OWN_HEADERS]
                message = {**message, "headers": kept + added}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class TrustedHosts:
    """Answer 400 `host_not_allowed` to a request whose Host is not one of HOSTS (port ignored); /healthz excepted.

    Nothing the app builds can then carry a forged Host (a redirect's Location, a link); the
    refusal does not say what the Host was.
    """

    def __init__(self, app: ASGIApp, hosts: frozenset[str]) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse the request or pass it on."""
        if scope["type"] != "http" or scope.get("path") in HOST_EXEMPT:
            await self.app(scope, receive, send)
            return
        host = header(scope, b"host")
        if host is not None and host_name(host) in self.hosts:
            await self.app(scope, receive, send)
            return
        message = (
            "请求的主机名不在允许列表中，请用服务器的正式地址访问 (Host not allowed: use the server's address;"
            " administrators list names in GUATU_ALLOWED_HOSTS)"
        )
        await refuse(send, 400, "host_not_allowed", message, {"field": "Host"})


def _cookies(scope: Scope) -> dict[str, str]:
    """Return the request's cookies by name (a malformed Cookie header gives none)."""
    raw = header(scope, b"cookie")
    if not raw:
        return {}
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except CookieError:
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


class CsrfGuard:
    """Refuse (403 `csrf_failed`) a cookie-authenticated write that another site could have made.

    A POST, PUT, PATCH or DELETE carrying the session cookie must send header X-CSRF-Token
    equal to the `guatu_csrf` cookie (double submit: another site can make the browser send
    cookies, not read them into a header), and an Origin header, when present, must be the
    public URL's origin or the request's own. Requests without the session cookie
    authenticate otherwise (`Authorization: Bearer`) and are not checked here.
    """

    def __init__(self, app: ASGIApp, public_url: str) -> None:
        self.app = app
        self.public_origin = origin_of(public_url)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse the request or pass it on."""
        if scope["type"] != "http" or scope.get("method") not in UNSAFE_METHODS:
            await self.app(scope, receive, send)
            return
        cookies = _cookies(scope)
        if SESSION_COOKIE not in cookies:
            await self.app(scope, receive, send)
            return
        problem = self.problem(scope, cookies)
        if problem is None:
            await self.app(scope, receive, send)
            return
        field, why = problem
        message = f"跨站请求校验失败：{why[0]}，请刷新页面后重试 (CSRF check failed: {why[1]}; reload the page)"
        await refuse(send, 403, "csrf_failed", message, {"field": field})

    def problem(self, scope: Scope, cookies: dict[str, str]) -> tuple[str, tuple[str, str]] | None:
        """Return (header, (why in Chinese, in English)) when the request fails the check, else None."""
        expected = cookies.get(CSRF_COOKIE, "")
        sent = header(scope, CSRF_HEADER.encode()) or ""
        if not expected or not hmac.compare_digest(sent.encode("latin-1"), expected.encode("latin-1")):
            return "X-CSRF-Token", ("缺少令牌或令牌不符", "X-CSRF-Token missing or not the guatu_csrf cookie")
        origin = header(scope, b"origin")
        if origin is not None and origin_of(origin) not in (self.public_origin, self.own_origin(scope)):
            return "Origin", ("请求来自其他网站", "the request comes from another origin")
        return None

    @staticmethod
    def own_origin(scope: Scope) -> tuple[str, str, int] | None:
        """Return the origin the request was made to: its scheme (as the trusted proxy said) and Host."""
        host = header(scope, b"host")
        return origin_of(f"{scope.get('scheme', 'http')}://{host}") if host else None
