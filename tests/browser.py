"""A live guatu server on a free port and headless Debian Chromium, for page tests."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn
from sqlalchemy.engine import Engine

from api.main import create_app
from api.server import server_config
from api.settings import ApiSettings
from tests.accounts import tokens_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def free_port() -> int:
    """Return a port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running(app: Any, settings: ApiSettings | None = None) -> Iterator[uvicorn.Server]:
    """Serve APP on a free port of 127.0.0.1 in a thread, configured as `guatu serve` does; yield the server.

    Requests to it are signed in as the administrator of APP's database (see :func:`sign_in_as`).
    """
    settings = settings or ApiSettings()
    engine = getattr(app.state, "engine", None)
    if engine is not None:
        sign_in_as(engine)
    config = server_config(app, settings, host="127.0.0.1", port=free_port(), log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.05)
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(10)


def url_of(server: uvicorn.Server) -> str:
    """Return the base URL of a server started by `running`."""
    return f"http://{server.config.host}:{server.config.port}"


SIGNED_IN: dict[str, str] = {}
"""The token pages are opened with (an administrator of the database last served): see :func:`chromium`."""


def sign_in_as(engine: Engine, username: str = "admin") -> str:
    """Return USERNAME's API token in ENGINE's database (tests/accounts.py), and open pages as that user from now on."""
    from tests.conftest import owner_url

    name = engine.url.database or ""
    token = tokens_for(owner_url(name), name)[username]
    SIGNED_IN["token"] = token
    return token


@contextmanager
def live_server(engine: Engine, settings: ApiSettings | None = None) -> Iterator[str]:
    """Serve the app on 127.0.0.1 in a thread, as `guatu serve` does; yield its base URL.

    Pages opened by :func:`chromium` browsers are signed in as the database's administrator.
    """
    settings = settings or ApiSettings()
    with running(create_app(settings, engine=engine), settings) as server:
        yield url_of(server)


@contextmanager
def live_app(app: Any) -> Iterator[str]:
    """Serve APP (built by the test, with its own settings) on 127.0.0.1 in a thread; yield its base URL."""
    with running(app, app.state.settings) as server:
        yield url_of(server)


CSP_WATCH = """
document.addEventListener("securitypolicyviolation", function (e) {
  window.__guatuCspViolation([e.violatedDirective, e.blockedURI, e.sourceFile + ":" + e.lineNumber].join(" "));
});
"""
"""Runs before any script of each page: every CSP violation is told to the test."""


class WatchedPage:
    """A Playwright page whose `wait_for_function` works under the app's CSP.

    Playwright's own polls its expression with `eval` inside the page, which a policy without
    'unsafe-eval' refuses (an EvalError, and a violation). This one asks the page from outside
    (`page.evaluate`, which the policy does not govern) until the expression is truthy.
    """

    def __init__(self, page: Any) -> None:
        self.page = page

    def wait_for_function(self, expression: str, *, timeout: float = 30_000, polling: float = 100) -> Any:
        """Return EXPRESSION's value once truthy; raise TimeoutError after TIMEOUT ms (as Page.wait_for_function)."""
        deadline = time.monotonic() + timeout / 1000
        while True:
            value = self.page.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression!r} still false after {timeout:g} ms")
            self.page.wait_for_timeout(polling)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.page, name)


class WatchedBrowser:
    """A Playwright browser whose pages report each Content-Security-Policy violation into `violations`."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser
        self.violations: list[str] = []

    def _headers(self, options: dict[str, Any]) -> dict[str, Any]:
        headers = dict(options.pop("extra_http_headers", None) or {})
        if options.pop("signed_in", True) and SIGNED_IN.get("token"):
            headers.setdefault("Authorization", f"Bearer {SIGNED_IN['token']}")
        return options | ({"extra_http_headers": headers} if headers else {})

    def new_page(self, **options: Any) -> Any:
        """Return a new page (as Browser.new_page) watched for CSP violations, signed in unless ``signed_in=False``.

        Signed in as the test user of the database last served (:func:`sign_in_as`), by its API token.
        """
        page = self.browser.new_page(**self._headers(options))
        page.expose_function("__guatuCspViolation", lambda what: self.violations.append(f"{page.url}: {what}"))
        page.add_init_script(CSP_WATCH)
        return WatchedPage(page)

    def new_context(self, **options: Any) -> Any:
        """Return a new context, signed in unless ``signed_in=False`` (its pages are not watched)."""
        return self.browser.new_context(**self._headers(options))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.browser, name)


@contextmanager
def chromium(*, csp_violations_allowed: bool = False) -> Iterator[Any]:
    """Yield a headless Chromium browser (Debian's, never a downloaded one).

    Its pages are watched: unless CSP_VIOLATIONS_ALLOWED, a test that ends with any page having
    broken the Content-Security-Policy (a script without the nonce, an inline handler) fails.
    """
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            raise RuntimeError("chromium is not installed: `make test` installs it")
        pytest.skip("chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as play:
        browser = WatchedBrowser(play.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True))
        try:
            yield browser
            assert csp_violations_allowed or browser.violations == [], browser.violations
        finally:
            browser.close()


def auth_line() -> str:
    """Return the request header line that signs a raw socket request in as the current test user."""
    return f"Authorization: Bearer {SIGNED_IN['token']}\r\n"


def click_feature(page: Any, layer: str, fid: int | None = None, timeout_ms: int = 15_000) -> None:
    """Click feature FID of LAYER (any drawn one if None) where it is drawn, as a user would.

    A GeoJSON layer's feature is an SVG path (dispatched a click); a tiled layer's is painted on
    its tiles' canvases (map.js), so the mouse clicks a point inside it that nothing covers.
    """
    find = (
        """(([layer, fid]) => {
      const path = document.querySelector(fid === null ? `path.guatu-${layer}` : `path.guatu-${layer}-${fid}`);
      if (path) return {path: true};
      const ids = fid === null ? guatu.drawn(layer).map(p => p.id) : [fid];
      for (const id of ids) { const at = guatu.pointOf(layer, id); if (at) return at; }
      return null;
    })("""
        + json.dumps([layer, fid])
        + ")"
    )
    deadline = time.monotonic() + timeout_ms / 1000
    at = None
    while True:  # the same point twice in a row: the map is not panning (a popup's auto-pan)
        seen = page.wait_for_function(find, timeout=timeout_ms)
        if hasattr(seen, "json_value"):  # a plain Playwright page answers with a handle
            seen = seen.json_value()
        if seen == at or time.monotonic() > deadline:
            at = seen
            break
        at = seen
        page.wait_for_timeout(300)
    if at.get("path"):
        selector = f"path.guatu-{layer}" if fid is None else f"path.guatu-{layer}-{fid}"
        page.locator(selector).first.dispatch_event("click")
    else:
        page.mouse.click(at["x"], at["y"])
