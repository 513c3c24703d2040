"""Guards in front of every route: text that cannot be text is refused before any route sees it."""

from __future__ import annotations

from urllib.parse import parse_qsl

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import error_body


def _nul_in_request(scope: Scope) -> str | None:
    """Return where the request carries a NUL character (a query parameter's name, or the path), else None."""
    raw: bytes = scope.get("query_string", b"")
    if b"%00" in raw or b"\x00" in raw:
        for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                return name.replace("\x00", "\\u0000")[:60] or "query"
        return "query"
    if "\x00" in scope.get("path", ""):  # decoded once by the server: %2500 is the text %00, no NUL
        return "path"
    return None


class RefuseNul:
    """Answer 422 `invalid_text` to any request with a NUL in its path or query (PostgreSQL text cannot hold it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse the request or pass it on."""
        where = _nul_in_request(scope) if scope["type"] == "http" else None
        if where is None:
            await self.app(scope, receive, send)
            return
        problem = {
            "code": "invalid_text",
            "message": f"参数“{where}”含有 NUL 空字符，无法作为文本 (parameter {where!r} holds a NUL character)",
            "where": {"field": where},
        }
        body = orjson.dumps(error_body([problem]))
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 422, "headers": headers})
        await send({"type": "http.response.body", "body": body})
