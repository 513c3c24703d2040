"""Editing on the map page in headless Chromium: who sees the controls, a parcel drawn snapped to its
neighbour and refused then saved, its history, and two editors of one parcel meeting a conflict."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine

from shapely.geometry import Point, Polygon, shape

from tests import accounts
from tests.browser import chromium, click_feature, live_server
from tests.conftest import demo_database, owner_url

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(os.environ.get("GUATU_SCREENSHOTS", Path(__file__).resolve().parent.parent / "out" / "screenshots"))
WIDE = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
UNKNOWN_LAND_USE = "0999"
"""Of the form a land-use code takes (the page lets it pass) but in no classification: only the server knows."""


@pytest.fixture(scope="module")
def web_engine() -> Iterator[Engine]:
    """Return an engine on a committed database holding the demo street."""
    with demo_database("guatu_test_web") as engine:
        yield engine


@pytest.fixture(scope="module", autouse=True)
def screenshot_folder() -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="module")
def base_url(web_engine: Engine) -> Iterator[str]:
    name = web_engine.url.database or ""
    accounts.tokens_for(owner_url(name), name)  # the test users, one per role
    with live_server(web_engine) as url:
        yield url


# ---------- signing in: the test users of tests/accounts.py, with a cookie session as a person has ----------


SIGNED_IN: dict[tuple[str, str], httpx.Client] = {}
"""One sign-in per user and server: the login rate limit would refuse more."""


def signed_in(base_url: str, username: str) -> httpx.Client:
    """Return an API client signed in as USERNAME (POST /api/login), sending the CSRF token on writes."""
    if (base_url, username) in SIGNED_IN:
        return SIGNED_IN[base_url, username]
    # "none": not the administrator's token conftest.py gives live requests, only this user's cookies
    client = SIGNED_IN[base_url, username] = httpx.Client(
        base_url=base_url, timeout=30, headers={"Authorization": "none"}
    )
    response = client.post("/api/login", json={"username": username, "password": accounts.PASSWORD})
    assert response.status_code == 200, response.text
    client.headers["X-CSRF-Token"] = client.cookies["guatu_csrf"]
    return client


def open_page(browser: Any, base_url: str, username: str, viewport: dict[str, int]) -> Any:
    """Return a page of a fresh browser context signed in as USERNAME, on the map, editing module ready."""
    context = browser.new_context(viewport=viewport, signed_in=False)  # the session cookie, not a token
    api = signed_in(base_url, username)
    context.add_cookies([{"name": c.name, "value": c.value, "url": base_url} for c in api.cookies.jar])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    page.goto(base_url + "/")
    page.wait_for_function("() => window.guatuEdit && guatuEdit.idle() && guatu.idle()", timeout=20_000)
    return page


# ---------- the map ----------

MAP = "Object.values(window).find(v => v instanceof L.Map)"


def move_to(page: Any, x: float, y: float, zoom: int) -> None:
    """Centre the map on (X, Y) at ZOOM and wait until every layer has loaded."""
    page.evaluate(
        f"""([x, y, zoom]) => new Promise(done => {{
            const map = {MAP};
            map.once('moveend', () => done());
            map.setView([y, x], zoom, {{animate: false}});
        }})""",
        [x, y, zoom],
    )
    page.wait_for_function("() => guatu.idle() && guatuEdit.idle()", timeout=15_000)


def fit_to(page: Any, bounds: tuple[float, float, float, float]) -> None:
    """Show BOUNDS (minx, miny, maxx, maxy) whole, clear of the panels at either side, and wait for the layers."""
    page.evaluate(
        f"""([x0, y0, x1, y1]) => new Promise(done => {{
            const map = {MAP};
            map.once('moveend', () => done());
            map.fitBounds([[y0, x0], [y1, x1]], {{animate: false, maxZoom: 21,
                paddingTopLeft: [380, 160], paddingBottomRight: [440, 60]}});
        }})""",
        list(bounds),
    )
    page.wait_for_function("() => guatu.idle() && guatuEdit.idle()", timeout=15_000)


def pixel(page: Any, xy: list[float]) -> tuple[float, float]:
    """Return the page pixel of lon/lat XY."""
    x, y = page.evaluate(
        f"""([x, y]) => {{
            const map = {MAP};
            const p = map.latLngToContainerPoint([y, x]), box = map.getContainer().getBoundingClientRect();
            return [box.left + p.x, box.top + p.y];
        }}""",
        xy,
    )
    return x, y


PARCELS_DRAWN = "document.querySelectorAll('path.guatu-parcels').length + guatu.drawn('parcels').length"
"""How many parcels are drawn: GeoJSON paths (the map as of a date) or features on the tiles' canvases."""


def click_at(page: Any, x: float, y: float) -> None:
    """Move the mouse there in steps (Geoman snaps on mouse moves), then click."""
    page.mouse.move(x, y, steps=6)
    page.mouse.click(x, y)


def open_popup(page: Any, layer: str, fid: int) -> Any:
    """Click feature FID of LAYER on the map; return its popup."""
    page.wait_for_function("() => guatu.idle() && guatuEdit.idle()", timeout=15_000)
    click_feature(page, layer, fid)
    popup = page.locator(".leaflet-popup-content")
    popup.locator(".guatu-popup-table").wait_for(timeout=10_000)  # the ledger, fetched on a click
    return popup


def parcels_of(api: httpx.Client, area: str) -> list[dict[str, Any]]:
    """Return the parcels in AREA (a unit code), with their geometry."""
    response = api.get("/api/layers/parcels/features", params={"scope": area, "limit": 5000})
    assert response.status_code == 200, response.text
    features: list[dict[str, Any]] = response.json()["features"]
    return features


METRE = 1 / 111_000
"""About a metre in degrees of latitude (enough to keep clicks apart)."""


def inside_near(outline: Polygon, corner: list[float]) -> list[list[float]] | None:
    """Return two points 3 m or more inside OUTLINE near CORNER, making with it a triangle inside OUTLINE."""
    inner = outline.buffer(-3 * METRE)
    if inner.is_empty or inner.geom_type != "Polygon":
        return None
    ring = inner.exterior
    at = ring.project(Point(corner))
    for step in (12 * METRE, 8 * METRE, 5 * METRE):
        a, b = ring.interpolate((at - step) % ring.length), ring.interpolate((at + step) % ring.length)
        if Polygon([corner, (a.x, a.y), (b.x, b.y)]).within(outline) and a.distance(b) > 4 * METRE:
            return [[a.x, a.y], [b.x, b.y]]
    return None


def shared_corners(parcels: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], list[float], list[list[float]]]]:
    """Yield parcels with a corner another parcel shares exactly, that corner, and two points inside near it."""
    owners: dict[tuple[float, float], set[int]] = {}
    for p in parcels:
        for polygon in p["geometry"]["coordinates"]:
            for xy in polygon[0][:-1]:
                owners.setdefault((xy[0], xy[1]), set()).add(p["id"])
    for p in sorted(parcels, key=lambda p: -p["properties"]["area_m2"]):  # homesteads, small, are named by zones
        if len(p["geometry"]["coordinates"]) != 1 or len(p["geometry"]["coordinates"][0]) != 1:
            continue
        outline = Polygon(p["geometry"]["coordinates"][0][0])
        for xy in p["geometry"]["coordinates"][0][0][:-1]:
            points = inside_near(outline, xy) if len(owners[(xy[0], xy[1])]) >= 2 else None
            if points:
                yield p, xy, points
                break


# ---------- the tests ----------


def test_a_viewer_sees_no_edit_controls(base_url: str) -> None:
    with chromium() as browser:
        page = open_page(browser, base_url, "viewer", WIDE)
        badge = page.locator(".guatu-user")
        assert badge.locator(".guatu-logout").is_visible()
        me = page.evaluate("guatuEdit.fetch('/api/me').then(r => r.json())")
        assert me["user"]["role"] == "viewer"
        assert badge.locator(".guatu-user-role").inner_text() == me["user"]["role_zh"]
        assert page.locator(".guatu-edit-bar").count() == 0
        viewer = signed_in(base_url, "viewer")
        parcel = viewer.get("/api/layers/parcels/features", params={"limit": 1}).json()["features"][0]
        centre = shape(parcel["geometry"]).representative_point()
        move_to(page, centre.x, centre.y, 18)
        popup = open_popup(page, "parcels", parcel["id"])
        assert "地块编码" in popup.inner_text()
        assert popup.locator(".guatu-edit-actions").count() == 0
        assert page.locator(".guatu-edit-open, .guatu-delete, .guatu-add").count() == 0
        assert page.errors == []


def test_a_planner_of_another_street_cannot_open_the_form_and_the_api_refuses_it(base_url: str) -> None:
    here = signed_in(base_url, "planner")  # the demo street's planner
    parcel = here.get("/api/layers/parcels/features", params={"limit": 1}).json()["features"][0]
    centre = shape(parcel["geometry"]).representative_point()
    other = signed_in(base_url, "planner2")  # a planner of 370214002: may edit parcels, but not these
    assert other.get("/api/me").json()["layers"]["parcels"]["edit"] is True
    url = f"/api/layers/parcels/features/{parcel['id']}"
    assert other.get(url).status_code == 404  # not even seen
    csrf = other.cookies.get("guatu_csrf") or ""
    patch = {"type": "Feature", "properties": {"name": "越界修改"}}
    refused = other.patch(url, json=patch, headers={"If-Match": f'"{parcel["version"]}"', "X-CSRF-Token": csrf})
    assert refused.status_code == 404, refused.text
    assert here.get(url).json()["properties"]["name"] == parcel["properties"]["name"]
    with chromium() as browser:
        page = open_page(browser, base_url, "planner2", WIDE)
        assert page.locator(".guatu-edit-bar").count() == 1  # a planner: the tools are there, for their own street
        move_to(page, centre.x, centre.y, 18)
        click_at(page, centre.x, centre.y)
        page.wait_for_timeout(800)
        assert page.locator(".leaflet-popup").count() == 0  # nothing drawn there for them, nothing to open
        assert page.locator(".guatu-edit-open, .guatu-edit-panel").count() == 0
        assert page.errors == []


def test_a_surveyor_draws_a_snapped_parcel_is_refused_fixes_it_and_sees_its_history(base_url: str) -> None:
    surveyor = signed_in(base_url, "surveyor")
    me = surveyor.get("/api/me").json()
    assert me["layers"]["parcels"]["edit"] is True
    # Room for the new parcel: one of the surveyor's parcels is deleted (by an administrator); the
    # corner it shared with a neighbour stays as that neighbour's vertex.
    admin = signed_in(base_url, "admin")
    for found in shared_corners(parcels_of(surveyor, me["user"]["area"])):
        url = f"/api/layers/parcels/features/{found[0]['id']}"
        deleted = admin.delete(url, headers={"If-Match": admin.get(url).headers["ETag"]})
        if deleted.status_code == 204:
            hole, corner, inside = found
            break
        assert deleted.json()["code"] == "has_dependents", deleted.text  # a homestead named by its courtyard zone
    else:
        raise AssertionError("no parcel sharing a corner with a neighbour could be deleted")

    with chromium() as browser:
        page = open_page(browser, base_url, "surveyor", WIDE)
        assert page.locator(".guatu-edit-bar").is_visible()
        fit_to(page, Polygon([corner, *inside]).buffer(2 * METRE).bounds)
        page.select_option(".guatu-edit-layer", "parcels")
        page.click(".guatu-add-polygon")
        page.wait_for_function("() => guatuEdit.session() && guatuEdit.session().near > 0 && guatuEdit.idle()")
        x, y = pixel(page, corner)
        page.mouse.move(x + 40, y + 40)
        click_at(page, x + 6, y + 5)  # near the neighbour's corner: snapped onto it
        for xy in inside:
            click_at(page, *pixel(page, xy))
        click_at(page, x, y)  # the first corner again closes the shape
        form = page.locator(".guatu-edit-form")
        form.wait_for(timeout=5_000)
        drawn = page.evaluate("guatuEdit.session().geometry")
        assert drawn["coordinates"][0][0] == corner, "the first corner is exactly the neighbour's vertex"

        # A code of the wrong form is said at once by the page; a well-formed unknown land-use
        # code only by the server, whose message stands next to the field.
        code = hole["properties"]["community_code"] + "1699999"
        page.fill("#guatu-edit-code", "12345")
        assert "格式不符" in page.locator(".guatu-edit-row[data-field=code] .guatu-problem").inner_text()
        page.fill("#guatu-edit-code", code)
        page.fill("#guatu-edit-name", "新画地块 drawn on the map")
        page.select_option("#guatu-edit-ownership", "集体")
        page.select_option("#guatu-edit-use_status", "自用")
        page.fill("#guatu-edit-land_use_code", UNKNOWN_LAND_USE)
        said = surveyor.post(
            "/api/layers/parcels/features/check",
            json={
                "type": "Feature",
                "geometry": drawn,
                "properties": {
                    "code": code,
                    "name": "新画地块 drawn on the map",
                    "ownership": "集体",
                    "use_status": "自用",
                    "land_use_code": UNKNOWN_LAND_USE,
                },
            },
        )
        assert said.status_code == 422, said.text
        errors = said.json()["errors"]
        message = next(e["message"] for e in errors if "land_use_code" in (e["where"].get("field") or ""))
        problem = page.locator(".guatu-edit-row[data-field=land_use_code] .guatu-problem")
        page.wait_for_function(
            "([sel, text]) => document.querySelector(sel).textContent.includes(text)",
            arg=[".guatu-edit-row[data-field=land_use_code] .guatu-problem", message],
            timeout=10_000,
        )
        assert page.locator(".guatu-edit-row[data-field=code] .guatu-problem").inner_text() == ""
        page.screenshot(path=str(SCREENSHOTS / "edit-form.png"))
        page.click(".guatu-save")  # refused: the form stays open with the server's word
        page.wait_for_selector(".guatu-not-saved", timeout=10_000)
        assert message in problem.inner_text()

        page.fill("#guatu-edit-land_use_code", hole["properties"]["land_use_code"])
        page.wait_for_function("() => guatuEdit.idle() && !document.querySelector('.guatu-edit-form[data-checking]')")
        assert problem.inner_text() == ""
        page.click(".guatu-save")
        page.wait_for_selector(".guatu-edit-panel", state="detached", timeout=10_000)
        assert "已保存" in page.locator(".guatu-edit-status").inner_text()

        found = surveyor.get("/api/search", params={"q": code}).json()
        new_id = next(hit["id"] for hit in found if hit["layer"] == "parcels" and hit["code"] == code)
        saved = surveyor.get(f"/api/layers/parcels/features/{new_id}").json()
        assert corner in saved["geometry"]["coordinates"][0][0], "the stored vertex is the neighbour's, bit for bit"
        assert saved["properties"]["grid_code"] == hole["properties"]["grid_code"]

        page.wait_for_function("() => guatu.idle()")
        popup = open_popup(page, "parcels", new_id)
        popup.locator(".guatu-history-open").dispatch_event("click")
        insert = page.locator(".guatu-history .guatu-change[data-op=insert]")
        insert.wait_for(timeout=10_000)
        assert me["user"]["username"] in insert.locator(".guatu-change-actor").inner_text()
        assert code in insert.locator(".guatu-diff-field[data-field=code] .guatu-diff-after").inner_text()
        page.screenshot(path=str(SCREENSHOTS / "edit-history.png"))
        assert page.errors == []


def test_two_editors_of_one_parcel_the_second_sees_both_versions(base_url: str) -> None:
    planner = signed_in(base_url, "planner")
    surveyor_area = signed_in(base_url, "surveyor").get("/api/me").json()["user"]["area"]
    parcel = parcels_of(planner, surveyor_area)[5]
    version = planner.get(f"/api/layers/parcels/features/{parcel['id']}").json()["version"]
    centre = shape(parcel["geometry"]).representative_point()
    with chromium() as browser:
        pages = [open_page(browser, base_url, role, WIDE) for role in ("planner", "surveyor")]
        for page in pages:
            move_to(page, centre.x, centre.y, 18)
            open_popup(page, "parcels", parcel["id"]).locator(".guatu-edit-open").dispatch_event("click")
            page.locator(".guatu-edit-form").wait_for(timeout=10_000)
        first, second = pages
        sent: list[dict[str, Any]] = []
        first.on("request", lambda r: sent.append(json.loads(r.post_data or "{}")) if r.method == "PATCH" else None)
        first.fill("#guatu-edit-name", "甲改的名称 first")
        first.click(".guatu-save")
        first.wait_for_selector(".guatu-edit-panel", state="detached", timeout=10_000)
        assert sent == [{"type": "Feature", "properties": {"name": "甲改的名称 first"}}], "only what changed"

        second.fill("#guatu-edit-name", "乙改的名称 second")
        second.fill("#guatu-edit-owner", "乙填的权利人")
        second.click(".guatu-save")
        panel = second.locator(".guatu-conflict")
        panel.wait_for(timeout=10_000)
        name_row = panel.locator("tr[data-field=name]")
        assert "guatu-differs" in (name_row.get_attribute("class") or "")
        assert name_row.locator(".guatu-mine").inner_text() == "乙改的名称 second"
        assert name_row.locator(".guatu-theirs").inner_text() == "甲改的名称 first"
        same = panel.locator("tr[data-field=ownership]")
        assert "guatu-differs" not in (same.get_attribute("class") or "")
        second.screenshot(path=str(SCREENSHOTS / "edit-conflict.png"))

        second.click(".guatu-keep-mine")  # mine, on top of the version now stored
        second.wait_for_selector(".guatu-edit-panel", state="detached", timeout=10_000)
        now = planner.get(f"/api/layers/parcels/features/{parcel['id']}").json()
        assert now["properties"]["name"] == "乙改的名称 second"
        assert now["properties"]["owner"] == "乙填的权利人"
        assert now["version"] == version + 2  # two saves, nothing lost

        # The first editor's version, restored from the history (with a confirm).
        move_to(second, centre.x, centre.y, 18)  # the popup's pan may have moved the map
        open_popup(second, "parcels", parcel["id"]).locator(".guatu-history-open").dispatch_event("click")
        rows = second.locator(".guatu-history .guatu-change")
        rows.first.wait_for(timeout=10_000)
        assert [rows.nth(i).get_attribute("data-op") for i in range(rows.count())] == ["update", "update", "insert"]
        theirs = rows.nth(1)
        assert theirs.locator(".guatu-diff-field[data-field=name] .guatu-diff-after").inner_text() == "甲改的名称 first"
        assert theirs.locator(".guatu-diff-shape").count() == 0, "a name changed, not the shape"
        theirs.locator(".guatu-restore").click()
        theirs.locator(".guatu-confirm-yes").click()
        second.locator(".guatu-history-panel .guatu-edit-said", has_text="已恢复").wait_for(timeout=10_000)
        back = planner.get(f"/api/layers/parcels/features/{parcel['id']}").json()
        assert back["properties"]["name"] == "甲改的名称 first"
        assert back["properties"]["owner"] == parcel["properties"]["owner"]
        assert first.errors == [] and second.errors == []


def test_on_a_phone_the_panels_fold_and_fit(base_url: str) -> None:
    planner = signed_in(base_url, "planner")
    surveyor_area = signed_in(base_url, "surveyor").get("/api/me").json()["user"]["area"]
    parcel = parcels_of(planner, surveyor_area)[7]
    centre = shape(parcel["geometry"]).representative_point()
    with chromium() as browser:
        first = open_page(browser, base_url, "planner", PHONE)
        second = open_page(browser, base_url, "surveyor", PHONE)
        for page in (first, second):
            assert page.locator(".guatu-edit-bar.guatu-folded").count() == 1  # folded until tapped
            move_to(page, centre.x, centre.y, 18)
            open_popup(page, "parcels", parcel["id"]).locator(".guatu-edit-open").dispatch_event("click")
            page.locator(".guatu-edit-form").wait_for(timeout=10_000)
        box = second.locator(".guatu-edit-panel").bounding_box()
        assert box is not None and box["width"] <= PHONE["width"] and box["y"] > PHONE["height"] * 0.3
        second.screenshot(path=str(SCREENSHOTS / "edit-form-phone.png"))
        first.fill("#guatu-edit-name", "手机甲 phone first")
        first.click(".guatu-save")
        first.wait_for_selector(".guatu-edit-panel", state="detached", timeout=10_000)
        second.fill("#guatu-edit-name", "手机乙 phone second")
        second.click(".guatu-save")
        second.locator(".guatu-conflict").wait_for(timeout=10_000)
        assert second.locator(".guatu-conflict-head").is_visible()  # scrolled to, in the sheet
        second.screenshot(path=str(SCREENSHOTS / "edit-conflict-phone.png"))
        second.click(".guatu-take-theirs")  # the stored version back in the form
        assert second.input_value("#guatu-edit-name") == "手机甲 phone first"
        second.click(".guatu-edit-close")
        move_to(second, centre.x, centre.y, 18)
        open_popup(second, "parcels", parcel["id"]).locator(".guatu-history-open").dispatch_event("click")
        second.locator(".guatu-history .guatu-change[data-op=update]").first.wait_for(timeout=10_000)
        second.screenshot(path=str(SCREENSHOTS / "edit-history-phone.png"))
        assert json.dumps(first.errors + second.errors) == "[]"


def test_a_surveyor_splits_a_parcel_along_a_line_and_merges_two_neighbours(base_url: str) -> None:
    surveyor = signed_in(base_url, "surveyor")
    area = surveyor.get("/api/me").json()["user"]["area"]
    parcels = parcels_of(surveyor, area)
    named = {  # parcels a courtyard zone names cannot be merged away
        z["properties"].get("homestead_parcel_code")
        for z in surveyor.get("/api/layers/zones/features", params={"scope": area, "limit": 5000}).json()["features"]
    }
    free = [p for p in parcels if p["properties"]["code"] not in named and len(p["geometry"]["coordinates"]) == 1]
    by_size = sorted(free, key=lambda p: -p["properties"]["area_m2"])
    big = next(p for p in by_size if p["properties"]["area_m2"] < 30_000)
    outline = shape(big["geometry"])
    new_code = big["properties"]["community_code"] + "1688888"
    with chromium() as browser:
        page = open_page(browser, base_url, "surveyor", WIDE)
        fit_to(page, outline.bounds)
        open_popup(page, "parcels", big["id"]).locator(".guatu-split-open").dispatch_event("click")
        page.locator("#guatu-split-codes").fill(new_code)
        fit_to(page, outline.bounds)  # back where the popup's pan took the map from
        page.wait_for_function("() => guatuEdit.session() && guatuEdit.session().near > 0 && guatuEdit.idle()")
        x0, y0, x1, y1 = outline.bounds
        middle = outline.centroid
        a, b = pixel(page, [x0 - 0.02 * (x1 - x0), middle.y]), pixel(page, [x1 + 0.02 * (x1 - x0), middle.y])
        click_at(page, *a)
        click_at(page, *b)
        click_at(page, *b)  # the last point again ends the line
        page.locator(".guatu-edit-status", has_text="已分割为 2 块").wait_for(timeout=10_000)
        kept = surveyor.get(f"/api/layers/parcels/features/{big['id']}").json()
        assert kept["properties"]["area_m2"] < big["properties"]["area_m2"]
        hits = surveyor.get("/api/search", params={"q": new_code}).json()
        assert [h["code"] for h in hits if h["layer"] == "parcels"] == [new_code]

        # Two parcels sharing an edge become one: the one whose Merge was pressed is kept.
        pair = next(
            (p, q)
            for p in free
            for q in free
            if p["id"] < q["id"]
            and big["id"] not in (p["id"], q["id"])
            and shape(p["geometry"]).intersection(shape(q["geometry"])).length > 5 * METRE
        )
        keep, other = pair
        both = shape(keep["geometry"]).union(shape(other["geometry"]))
        page.locator(".guatu-edit-status").evaluate("e => e.textContent = ''")
        fit_to(page, both.bounds)
        open_popup(page, "parcels", keep["id"]).locator(".guatu-merge-open").dispatch_event("click")
        fit_to(page, both.bounds)
        page.wait_for_selector(f"path.guatu-near-{other['id']}", timeout=10_000)
        page.locator(f"path.guatu-near-{other['id']}").dispatch_event("click")
        assert f"#{other['id']}" in page.locator(".guatu-merge-picked").inner_text()
        page.screenshot(path=str(SCREENSHOTS / "edit-merge.png"))
        page.click(".guatu-merge-go")
        page.locator(".guatu-edit-status", has_text="已合并").wait_for(timeout=10_000)
        merged = surveyor.get(f"/api/layers/parcels/features/{keep['id']}").json()
        expected = keep["properties"]["area_m2"] + other["properties"]["area_m2"]
        assert abs(merged["properties"]["area_m2"] - expected) < 0.01 * expected
        assert surveyor.get(f"/api/layers/parcels/features/{other['id']}").status_code == 404
        assert page.errors == []


def test_the_map_as_of_a_past_date_is_drawn_from_the_history_and_read_only(base_url: str) -> None:
    surveyor = signed_in(base_url, "surveyor")
    area = surveyor.get("/api/me").json()["user"]["area"]
    parcel = parcels_of(surveyor, area)[3]
    centre = shape(parcel["geometry"]).representative_point()
    yesterday = (dt.date.today() - dt.timedelta(days=1)).isoformat()  # before the demo street was loaded
    with chromium() as browser:
        page = open_page(browser, base_url, "surveyor", WIDE)
        move_to(page, centre.x, centre.y, 18)
        assert page.evaluate(PARCELS_DRAWN) > 0  # SVG paths as of a date, the tiles' canvases now
        asked: list[str] = []
        page.on("request", lambda r: asked.append(r.url) if "as_of=" in r.url else None)
        page.fill(".guatu-asof-date", yesterday + "T12:00")
        page.locator(".guatu-asof-banner", has_text=yesterday).wait_for(timeout=5_000)
        page.wait_for_function("() => guatu.idle() && guatuEdit.idle()")
        assert any("/layers/parcels/features?" in url for url in asked)
        assert page.evaluate(PARCELS_DRAWN) == 0, "nothing stood there yet"
        bar = page.evaluate("() => getComputedStyle(document.querySelector('.guatu-edit-bar')).pointerEvents")
        assert bar == "none", "no adding to the past"
        page.click(".guatu-asof-now")
        page.wait_for_function(PARCELS_DRAWN, timeout=15_000)
        assert page.locator(".guatu-asof-banner").count() == 0
        assert page.errors == []


def test_a_deleted_parcel_comes_back_with_its_id_from_its_history(base_url: str) -> None:
    planner = signed_in(base_url, "planner")
    area = signed_in(base_url, "surveyor").get("/api/me").json()["user"]["area"]
    named = {
        z["properties"].get("homestead_parcel_code")
        for z in planner.get("/api/layers/zones/features", params={"scope": area, "limit": 5000}).json()["features"]
    }
    parcel = next(p for p in parcels_of(planner, area)[40:] if p["properties"]["code"] not in named)
    centre = shape(parcel["geometry"]).representative_point()
    with chromium() as browser:
        page = open_page(browser, base_url, "planner", WIDE)
        move_to(page, centre.x, centre.y, 18)
        popup = open_popup(page, "parcels", parcel["id"])
        popup.locator(".guatu-delete").dispatch_event("click")
        popup.locator(".guatu-confirm-yes").dispatch_event("click")  # asked once more before it goes
        page.locator(".guatu-edit-status", has_text="已删除").wait_for(timeout=10_000)
        assert planner.get(f"/api/layers/parcels/features/{parcel['id']}").status_code == 404
        page.click(".guatu-deleted-history")
        deleted = page.locator(".guatu-history .guatu-change").first
        deleted.wait_for(timeout=10_000)
        assert deleted.get_attribute("data-op") == "delete"
        deleted.locator(".guatu-restore").click()
        deleted.locator(".guatu-confirm-yes").click()
        page.locator(".guatu-history-panel .guatu-edit-said", has_text="已恢复").wait_for(timeout=10_000)
        back = planner.get(f"/api/layers/parcels/features/{parcel['id']}")
        assert back.status_code == 200, "the same id"
        assert back.json()["geometry"]["coordinates"] == parcel["geometry"]["coordinates"]
        assert back.json()["properties"]["code"] == parcel["properties"]["code"]
        assert page.errors == []


def test_a_shape_the_server_refuses_is_outlined_in_red_with_its_message(base_url: str) -> None:
    surveyor = signed_in(base_url, "surveyor")
    area = surveyor.get("/api/me").json()["user"]["area"]
    centre = shape(parcels_of(surveyor, area)[10]["geometry"]).representative_point()
    with chromium() as browser:
        page = open_page(browser, base_url, "surveyor", WIDE)
        move_to(page, centre.x, centre.y, 19)
        page.click(".guatu-add-polygon")
        page.wait_for_function("() => guatuEdit.session() && guatuEdit.idle()")
        x, y = pixel(page, [centre.x, centre.y])
        bow_tie = [(x - 70, y - 70), (x + 70, y + 70), (x + 70, y - 70), (x - 70, y + 70), (x - 70, y - 70)]
        for corner in bow_tie:
            click_at(page, *corner)
        page.locator(".guatu-edit-form").wait_for(timeout=5_000)
        tip = page.locator(".guatu-geometry-tip")
        tip.wait_for(timeout=10_000)
        assert "Self-intersection" in tip.inner_text()
        assert page.locator(".guatu-edit-panel.guatu-shape-bad").count() == 1
        assert page.locator(".guatu-edit-panel .guatu-problem-shape").is_visible()
        red = page.evaluate(
            "() => guatuEdit.session() && getComputedStyle(document.querySelector("
            "'.leaflet-guatu-edit-shape-pane path')).stroke"
        )
        assert red == "rgb(220, 38, 38)", red
        assert page.errors == []
