"""A page from another origin cannot write with a signed-in user's cookie (headless Chromium)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from sqlalchemy.engine import Engine

from tests.accounts import PASSWORD, bearer, tokens_for
from tests.browser import chromium, free_port, live_server
from tests.conftest import demo_database, owner_url
from tests.samples import sample

DB = "guatu_test_csrf_page"


@contextmanager
def other_site(html: str) -> Iterator[str]:
    """Serve HTML at / of another origin on 127.0.0.1 (another port); yield its URL."""
    body = html.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the standard library's name
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()


def _shops(base: str, token: str) -> int:
    found = httpx.get(f"{base}/api/layers/shops/features", params={"limit": 10_000}, headers=bearer(token)).json()
    return int(found["numberMatched"])


def test_a_page_of_another_origin_cannot_write_with_the_users_cookie() -> None:
    with demo_database(DB) as eng, live_server(eng) as base, chromium() as browser:
        _check(eng, base, browser)


def _check(eng: Engine, base: str, browser: object) -> None:
    tokens = tokens_for(owner_url(DB), DB)
    before = _shops(base, tokens["admin"])
    shop = sample("shops")
    shop["properties"]["code"] = "370214001006" + "2100077"
    shop["properties"].pop("community_code")
    shop["properties"].pop("grid_code")
    shop["geometry"]["coordinates"] = [120.378, 36.311]
    target = f"{base}/api/layers/shops/features"
    uploads = f"{base}/api/layers/shops/uploads"
    collection = json.dumps({"type": "FeatureCollection", "features": [shop]})
    # Four forged writes: a form post and a no-cors fetch to the features (refused as not JSON) and,
    # with a file made in the page, a form post and a no-cors multipart fetch to the uploads, which
    # take a file: only the CSRF check stands between those and the database.
    attack = f"""<!DOCTYPE html><html><body>
<iframe name="sink1" style="display:none"></iframe><iframe name="sink2" style="display:none"></iframe>
<form id="f" action="{target}" method="post" enctype="multipart/form-data" target="sink1">
  <textarea name="file">{json.dumps(shop).replace("<", "&lt;")}</textarea>
</form>
<form id="u" action="{uploads}" method="post" enctype="multipart/form-data" target="sink2">
  <input type="file" name="file" id="file">
</form>
<p id="done">…</p>
<script>
var made = new File([{json.dumps(collection)}], "shops.geojson", {{type: "application/geo+json"}});
var box = new DataTransfer(); box.items.add(made);
document.getElementById("file").files = box.files;
document.getElementById("f").submit();
document.getElementById("u").submit();
var form = new FormData(); form.append("file", made);
Promise.allSettled([
  fetch("{target}", {{method: "POST", mode: "no-cors", credentials: "include",
                      body: JSON.stringify({json.dumps(shop)})}}),
  fetch("{uploads}", {{method: "POST", mode: "no-cors", credentials: "include", body: form}})
]).then(function () {{ document.getElementById("done").textContent = "sent"; }});
</script></body></html>"""
    context = browser.new_context(signed_in=False)  # type: ignore[attr-defined]
    page = context.new_page()
    page.goto(f"{base}/login?next=/")
    page.fill("#guatu-username", "planner")
    page.fill("#guatu-password", PASSWORD)
    page.click("#guatu-login-submit")
    page.wait_for_url(f"{base}/")
    names = {c["name"] for c in context.cookies()}
    assert {"guatu_session", "guatu_csrf"} <= names
    # the same cookie, sent by a page of the app, writes (so the refusal below is not a broken session)
    made = page.evaluate(
        """async ([url, body]) => {
             const token = document.cookie.match(/guatu_csrf=([^;]*)/)[1];
             const r = await fetch(url, {method: "POST", headers: {"Content-Type": "application/json",
               "X-CSRF-Token": decodeURIComponent(token)}, body: JSON.stringify(body)});
             return [r.status, await r.text()];
           }""",
        [target, {**shop, "properties": {**shop["properties"], "code": "370214001006" + "2100078"}}],
    )
    assert made[0] == 201, made[1]
    with other_site(attack) as evil:
        page.goto(evil)
        page.wait_for_function("document.getElementById('done').textContent === 'sent'", timeout=20_000)
        page.wait_for_timeout(1500)  # the form's post lands in the hidden frame
    after = _shops(base, tokens["admin"])
    assert after == before + 1  # only the app's own write: neither the form post nor the no-cors fetch
    codes = {
        f["properties"]["code"]
        for f in httpx.get(target, params={"limit": 10_000}, headers=bearer(tokens["admin"])).json()["features"]
    }
    assert shop["properties"]["code"] not in codes
    context.close()


def test_the_sign_in_page_says_what_went_wrong_and_fits_a_phone() -> None:
    import os
    from pathlib import Path

    shots = Path(os.environ.get("GUATU_SCREENSHOTS", Path(__file__).resolve().parent.parent / "out" / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    sizes = (("login", {"width": 1440, "height": 900}), ("login-phone", {"width": 390, "height": 844}))
    with demo_database(DB + "_login") as eng, live_server(eng) as base, chromium() as browser:
        tokens_for(owner_url(DB + "_login"), DB + "_login")
        for name, viewport in sizes:
            page = browser.new_page(viewport=viewport, signed_in=False)
            page.goto(f"{base}/upload")  # a page: sent to sign in first, and back after
            assert "/login?next=%2Fupload" in page.url
            page.fill("#guatu-username", "surveyor")
            page.fill("#guatu-password", "not-the-password")
            page.click("#guatu-login-submit")
            status = page.locator("#guatu-login-status")
            status.filter(has_text="用户名或密码错误").wait_for(timeout=10_000)
            assert "wrong username or password" in status.inner_text()
            page.screenshot(path=str(shots / f"{name}.png"))
            box = page.locator(".guatu-login").bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"]
            page.fill("#guatu-password", PASSWORD)
            page.click("#guatu-login-submit")
            page.wait_for_url(f"{base}/upload")
            page.close()
