"""Security basics on every route: trusted hosts, URLs from settings, security headers and CSP, CSRF, JSON writes."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from api.main import create_app
from api.settings import ApiSettings
from tests.accounts import PASSWORD, bearer, tokens_for
from tests.browser import chromium, live_app, live_server
from tests.conftest import migrated_database, owner_url, share_session
from tests.samples import sample

FORGED = "evil-guatu-forged.example"
PUBLIC = "https://guatu.street.example:8443"
SETTINGS = ApiSettings(public_url=PUBLIC)
HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}
SHOPS = "/api/layers/shops/features"
COOKIES = {"guatu_session": "x", "guatu_csrf": "t0ken"}
SIGNED_IN = {"Cookie": "guatu_session=x; guatu_csrf=t0ken"}
"""A browser's cookies of a signed-in user, sent as it sends them."""


def secured(engine: Engine, session: Session, settings: ApiSettings = SETTINGS) -> FastAPI:
    """Return the app with SETTINGS, its requests in the test's rolled-back session."""
    app = create_app(settings, engine=engine)
    share_session(app, session)
    return app


@pytest.fixture
def admin(tokens: dict[str, str]) -> dict[str, str]:
    """Return the header of an administrator's API token (the routes behind the checks want someone)."""
    return bearer(tokens["admin"])


@pytest.fixture
def web(engine: Engine, session: Session, admin: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(secured(engine, session), raise_server_exceptions=False, headers=admin) as test_client:
        yield test_client


def nonce_of(response: httpx.Response) -> str:
    """Return the script nonce of RESPONSE's CSP, after checking the policy asks what it must."""
    policy = response.headers["content-security-policy"]
    script_src = next(d for d in policy.split(";") if d.strip().startswith("script-src"))
    assert "unsafe-inline" not in script_src and "unsafe-eval" not in script_src, script_src
    for directive in ("default-src 'self'", "object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'"):
        assert directive in policy
    found = re.search(r"'nonce-([A-Za-z0-9_-]{16,})'", script_src)
    assert found, policy
    return found.group(1)


def assert_secured(response: httpx.Response) -> str:
    """Check RESPONSE carries every security header; return its nonce."""
    for name, value in HEADERS.items():
        assert response.headers.get(name) == value, (response.request.url, name, response.headers)
    return nonce_of(response)


def test_a_forged_host_is_refused_everywhere_and_never_echoed(web: TestClient) -> None:
    requests = [
        ("GET", "/"),
        ("GET", "/docs"),
        ("GET", "/api/layers"),
        ("GET", "/tiles/parcels.json"),
        ("GET", "/static/guatu/dom.js"),
        ("GET", "/nowhere/"),
        ("GET", "/api/layers/"),  # Starlette's slash redirect builds its Location from the Host
        ("POST", SHOPS),
    ]
    for host in (FORGED, f"{FORGED}:8000", f"127.0.0.1.{FORGED}", ""):
        for method, path in requests:
            response = web.request(method, path, headers={"Host": host}, json=sample("shops"))
            assert response.status_code == 400, (host, path, response.status_code)
            assert response.json()["code"] == "host_not_allowed" and "主机" in response.json()["message"]
            if host:
                assert FORGED not in response.text
                assert all(FORGED not in value for value in response.headers.values()), response.headers
            assert_secured(response)
    assert web.get("/healthz", headers={"Host": FORGED}).json() == {"status": "ok"}  # probes ask by address


def test_allowed_hosts_ignore_the_port_and_the_case(engine: Engine, session: Session, admin: dict[str, str]) -> None:
    settings = ApiSettings(allowed_hosts="Guatu.Local, 10.0.0.7,::1", public_url=PUBLIC)
    with TestClient(secured(engine, session, settings), headers=admin) as client:
        for host in ("guatu.local", "GUATU.LOCAL:8080", "10.0.0.7:80", "[::1]:8000", "guatu.street.example"):
            assert client.get("/api/layers", headers={"Host": host}).status_code == 200, host
        for host in ("testserver", "localhost", "guatu.local.evil", "10.0.0.70", "[::2]:8000"):
            assert client.get("/api/layers", headers={"Host": host}).status_code == 400, host


def test_the_public_url_must_be_an_http_origin() -> None:
    assert ApiSettings(public_url="http://map.example/").public_url == "http://map.example"
    for bad in ("map.example", "ftp://map.example", "http://map.example/?x=1", "javascript:alert(1)"):
        with pytest.raises(ValidationError):
            ApiSettings(public_url=bad)


def test_tilejson_builds_tile_urls_from_the_public_url_never_the_host(web: TestClient) -> None:
    for host in ("testserver", "localhost:9999", "127.0.0.1:1"):
        doc = web.get("/tiles/parcels.json", headers={"Host": host}).json()
        assert doc["tiles"] == [PUBLIC + "/tiles/parcels/{z}/{x}/{y}.pbf"], (host, doc["tiles"])


def test_every_kind_of_response_carries_the_security_headers(
    engine: Engine, session: Session, admin: dict[str, str]
) -> None:
    app = secured(engine, session)

    def broken() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/_test/broken", broken)
    with TestClient(app, raise_server_exceptions=False, headers=admin) as client:
        answers = {
            "json": client.get("/api/layers"),
            "html": client.get("/upload"),
            "static": client.get("/static/guatu/map.css"),
            "not found": client.get("/api/layers/nothing"),
            "invalid": client.get("/api/layers/parcels/features", params={"limit": 0}),
            "server error": client.get("/_test/broken"),
            "csrf": client.post(SHOPS, json={}, headers=SIGNED_IN),
            "media type": client.post(SHOPS, content=b"{}", headers={"Content-Type": "text/plain"}),
        }
    statuses = {kind: response.status_code for kind, response in answers.items()}
    assert statuses == {
        "json": 200,
        "html": 200,
        "static": 200,
        "not found": 404,
        "invalid": 422,
        "server error": 500,
        "csrf": 403,
        "media type": 415,
    }
    nonces = [assert_secured(response) for response in answers.values()]
    assert len(set(nonces)) == len(nonces)  # one nonce per response


PAGES = ["/", "/cockpit", "/upload", "/checks", "/report", "/problems", "/contracts", "/ledger/parcels", "/docs"]


@pytest.mark.parametrize("path", PAGES)
def test_every_script_of_a_page_carries_its_response_s_nonce(web: TestClient, path: str) -> None:
    response = web.get(path)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    nonce = assert_secured(response)
    tags = re.findall(r"<script\b[^>]*>", response.text, flags=re.IGNORECASE)
    assert len(tags) >= 2 and all(f'nonce="{nonce}"' in tag for tag in tags), tags
    assert not re.search(r"\son[a-z]+\s*=", response.text, flags=re.IGNORECASE)  # no inline event handlers
    assert nonce not in web.get(path).text  # the next response has another


def test_a_cookie_session_write_needs_the_csrf_token(web: TestClient) -> None:
    shop = sample("shops")
    refused = [
        web.post(SHOPS, json=shop, headers=SIGNED_IN),
        web.post(SHOPS, json=shop, headers=SIGNED_IN | {"X-CSRF-Token": "wrong"}),
        web.post(SHOPS, json=shop, headers=SIGNED_IN | {"X-CSRF-Token": ""}),
        web.post(SHOPS, json=shop, headers={"Cookie": "guatu_session=x", "X-CSRF-Token": ""}),
        web.put(SHOPS + "/1", json=shop, headers=SIGNED_IN | {"X-CSRF-Token": "t0ke"}),
        web.delete(SHOPS + "/1", headers=SIGNED_IN),
        web.post("/api/layers/shops/uploads", files={"file": ("a.geojson", b"{}")}, headers=SIGNED_IN),
    ]
    for response in refused:
        assert response.status_code == 403, (response.request.method, response.status_code, response.text)
        assert response.json()["code"] == "csrf_failed" and response.json()["where"] == {"field": "X-CSRF-Token"}
        assert "跨站" in response.json()["message"]
    assert web.get(SHOPS, headers=SIGNED_IN).status_code == 200  # reading is not checked

    created = web.post(SHOPS, json=shop, headers=SIGNED_IN | {"X-CSRF-Token": "t0ken"})
    assert created.status_code == 201, created.text
    shop["properties"]["code"] = shop["properties"]["code"][:-1] + "9"
    assert web.post(SHOPS, json=shop).status_code == 201  # no session cookie: Bearer clients are not checked here


def test_a_cookie_session_write_from_another_origin_is_refused(web: TestClient) -> None:
    headers = {"X-CSRF-Token": "t0ken"}
    for origin in ("http://127.0.0.1:9999", "http://evil.example", "null", "https://testserver", PUBLIC + "1"):
        response = web.delete(SHOPS + "/1", headers=SIGNED_IN | headers | {"Origin": origin})
        assert response.status_code == 403, origin
        assert response.json()["code"] == "csrf_failed" and response.json()["where"] == {"field": "Origin"}
        assert origin not in response.text
    for origin in (PUBLIC, "http://testserver", "HTTP://TESTSERVER:80"):  # the public origin, or the request's own
        response = web.delete(SHOPS + "/1", headers=SIGNED_IN | headers | {"Origin": origin, "If-Match": "*"})
        assert response.status_code == 404, origin  # through the CSRF check: there is no shop 1


def test_feature_writes_must_be_sent_as_json(web: TestClient) -> None:
    body = b'{"type": "Feature", "properties": {}, "geometry": null}'
    for media in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
        headers = {"Content-Type": media} if media else {}
        for response in (
            web.post(SHOPS, content=body, headers=headers),
            web.put(SHOPS + "/1", content=body, headers=headers | {"If-Match": "*"}),
        ):
            assert response.status_code == 415, (media, response.text)
            assert (
                response.json()["code"] == "unsupported_media_type" and "application/json" in response.json()["message"]
            )
    for media in ("application/json", "application/geo+json; charset=utf-8", "Application/JSON"):
        response = web.post(SHOPS, content=body, headers={"Content-Type": media})
        assert response.status_code == 422, (media, response.text)  # past the media type, refused as a feature


@pytest.fixture(scope="module")
def web_engine() -> Iterator[Engine]:
    with migrated_database("guatu_test_security") as engine:
        yield engine


@pytest.mark.browser
def test_the_csp_watch_sees_a_script_without_the_nonce_and_an_inline_handler(web_engine: Engine) -> None:
    """The watch every browser test runs under (tests/browser.py) catches what the policy blocks."""
    app = create_app(ApiSettings(), engine=web_engine)

    def bad_page() -> HTMLResponse:
        return HTMLResponse(
            '<html><body><button id="b" onclick="document.title=\'clicked\'">b</button>'
            "<script>document.title = 'ran';</script></body></html>"
        )

    app.add_api_route("/_test/bad", bad_page)
    with live_app(app) as base, chromium(csp_violations_allowed=True) as browser:
        page = browser.new_page()
        page.goto(base + "/_test/bad")
        page.click("#b")
        page.wait_for_timeout(300)
        assert page.title() == ""  # neither the inline script nor the handler ran
        directives = " ".join(browser.violations)
        assert "script-src-elem" in directives and "script-src-attr" in directives, browser.violations


@pytest.mark.browser
def test_pages_write_with_a_cookie_session_under_the_csp(web_engine: Engine) -> None:
    """With a session cookie the upload page's POST and Swagger UI's DELETE carry X-CSRF-Token; no CSP violation."""
    tokens_for(owner_url("guatu_test_security"), "guatu_test_security")  # the test users, with PASSWORD
    with live_server(web_engine) as base, chromium() as browser:
        page = browser.new_page(signed_in=False)  # a cookie session only, as a browser has it
        page.goto(base + "/login?next=/upload")
        page.fill("#guatu-username", "admin")
        page.fill("#guatu-password", PASSWORD)
        page.click("#guatu-login-submit")
        page.wait_for_url(base + "/upload")
        csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "guatu_csrf")
        sent: list[dict[str, str]] = []
        page.on("request", lambda request: sent.append(request.headers) if request.method != "GET" else None)
        page.goto(base + "/upload")
        page.select_option("select[name=layer]", "shops")
        body = httpx.Response(200, json={"type": "FeatureCollection", "features": [sample("shops")]}).content
        page.set_input_files(
            "input[name=file]", files=[{"name": "s.geojson", "mimeType": "application/geo+json", "buffer": body}]
        )
        page.click("button[name=check]")
        page.wait_for_selector(".guatu-report-table", timeout=15_000)
        status = page.locator(".guatu-upload-status").inner_text()
        assert "新增 1" in status, status  # the dry run passed the CSRF check
        posted = [headers.get("x-csrf-token") for headers in sent if "/uploads" in headers.get(":path", "/uploads")]
        assert posted == [csrf, csrf]  # reading the file's fields (inspect), then the dry run

        page.goto(base + "/docs")
        page.wait_for_selector(".opblock-tag", timeout=15_000)  # Swagger UI ran: its scripts had the nonce
        assert page.locator(".opblock").count() > 10
        delete = page.locator(".opblock-delete").first  # "Try it out" on DELETE /api/layers/{id}/features/{fid}
        delete.locator(".opblock-summary").click()
        delete.locator("button.try-out__btn").click()
        delete.locator("input[placeholder=layer_id]").fill("shops")
        delete.locator("input[placeholder=fid]").fill("1")
        delete.locator("button.execute").click()
        answered = delete.locator(".live-responses-table tr.response .response-col_status").first
        answered.wait_for(timeout=15_000)
        assert answered.inner_text().split()[0] == "412"  # through the CSRF check, to the If-Match the form left empty
        assert sent[-1].get("x-csrf-token") == csrf
