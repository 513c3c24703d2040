"""The map page in headless Chromium: layers drawn, a popup read, text escaped, nothing external."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine

from tests.browser import chromium, click_feature, live_server
from tests.conftest import demo_database

pytestmark = pytest.mark.browser

XSS_NAME = "<img src=x onerror=alert(1)>"
# `make screenshots` points this at docs/screenshots to refresh the user guides' pictures.
SCREENSHOTS = Path(os.environ.get("GUATU_SCREENSHOTS", Path(__file__).resolve().parent.parent / "out" / "screenshots"))


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
    with live_server(web_engine) as url:
        yield url


@pytest.fixture(scope="module")
def xss_shop(base_url: str) -> dict:
    """Create an idle shop whose name is an HTML injection attempt."""
    grids = httpx.get(f"{base_url}/api/layers/grids/features", params={"limit": 1}).json()["features"]
    grid = grids[0]["properties"]
    from shapely.geometry import shape

    spot = shape(grids[0]["geometry"]).representative_point()
    body = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [spot.x, spot.y]},
        "properties": {
            "code": grid["community_code"] + "2199999",
            "name": XSS_NAME,
            "ownership": "不明",
            "status": "闲置",
        },
    }
    response = httpx.post(f"{base_url}/api/layers/shops/features", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def move_to(page, x: float, y: float, zoom: int) -> None:
    """Centre the map on (X, Y) at ZOOM and wait until every layer has loaded."""
    page.evaluate(
        """([x, y, zoom]) => new Promise(done => {
            const name = Object.keys(window).find(k => k.startsWith('map_') && window[k] instanceof L.Map);
            window[name].once('moveend', () => done());
            window[name].setView([y, x], zoom, {animate: false});
        })""",
        [x, y, zoom],
    )
    page.wait_for_function("guatu.idle()", timeout=15_000)


def test_map_draws_layers_and_popups_escape_text(base_url: str, xss_shop: dict) -> None:
    dialogs: list[str] = []
    requests: list[str] = []
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("request", lambda request: requests.append(request.url))
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(base_url + "/")
        page.wait_for_function("window.guatu && guatu.idle()", timeout=15_000)
        page.wait_for_selector("path.guatu-divisions", timeout=15_000)
        page.wait_for_selector("path.guatu-grids", timeout=15_000)
        assert page.locator("path.guatu-grids").count() >= 30
        assert "图例" in page.locator(".guatu-legend").inner_text()
        page.screenshot(path=str(SCREENSHOTS / "map-overview.png"))
        legend_rows = page.locator(".guatu-legend-layer").first
        page.click(".guatu-legend-title")
        assert not legend_rows.is_visible()
        page.click(".guatu-legend-title")
        assert legend_rows.is_visible()

        x, y = xss_shop["geometry"]["coordinates"]
        move_to(page, x, y, 18)
        marker = f"path.guatu-shops-{xss_shop['id']}"
        page.wait_for_selector(marker, timeout=15_000)
        page.wait_for_function("guatu.drawn('parcels').length > 0", timeout=15_000)
        page.click(marker)
        popup = page.locator(".leaflet-popup-content", has_text="商铺编号")
        popup.wait_for(timeout=5_000)
        assert XSS_NAME in popup.inner_text()
        assert "闲置" in popup.inner_text()
        assert popup.locator("img").count() == 0
        assert "地址" not in popup.inner_text()  # empty fields are left out
        page.wait_for_function("guatu.idle()", timeout=15_000)
        page.wait_for_timeout(400)  # let the popup fade in and auto-pan finish
        page.screenshot(path=str(SCREENSHOTS / "map-popup.png"))

        # A parcel's popup shows its ledger, with the area in 亩 to two decimals.
        click_feature(page, "parcels")  # painted on the tiles' canvases: clicked where it is drawn
        parcel_popup = page.locator(".leaflet-popup-content", has_text="地块编码")
        parcel_popup.wait_for(timeout=5_000)
        text = parcel_popup.inner_text()
        assert "面积(亩)" in text and "利用现状" in text
        mu = parcel_popup.locator("td.guatu-v-area_mu").inner_text()
        assert re.fullmatch(r"\d+\.\d{2}", mu), mu

    assert dialogs == []
    outside = [url for url in requests if not url.startswith(base_url) and not url.startswith("data:")]
    assert outside == []


def test_a_tiled_parcel_clicked_is_highlighted_and_its_own_ledger_opens(base_url: str) -> None:
    """On the tiles' canvases: the click opens the ledger of the parcel under the mouse (not a neighbour's),
    that parcel alone is drawn highlighted until its popup closes, and a filtered view draws only what it keeps."""
    parcels = httpx.get(f"{base_url}/api/layers/parcels/features", params={"limit": 200}).json()["features"]
    from shapely.geometry import shape

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(base_url + "/")
        page.wait_for_selector(".guatu-figures[data-count]", timeout=15_000)
        spot = shape(parcels[7]["geometry"]).representative_point()
        move_to(page, spot.x, spot.y, 18)
        page.wait_for_function("guatu.idle() && guatu.drawn('parcels').length > 3", timeout=15_000)
        ids = page.evaluate("guatu.drawn('parcels').map(p => p.id)")
        for fid in ids[:3]:
            click_feature(page, "parcels", fid)
            code = next(p["properties"]["code"] for p in parcels if p["id"] == fid)
            # its own ledger, not a neighbour's (nor the last one's: each click replaces the popup)
            page.locator(".leaflet-popup-content .guatu-popup-table", has_text=code).wait_for(timeout=10_000)
            lit = page.evaluate(
                "guatu.drawn('parcels').filter(p => guatu.styleOf('parcels', p.id).color === '#f59e0b')"
            )
            assert [p["id"] for p in lit] == [fid]
            assert page.evaluate(f"guatu.styleOf('parcels', {fid}).weight") == 4
        page.evaluate("(() => { const m = Object.values(window).find(v => v instanceof L.Map); m.closePopup(); })()")
        assert page.evaluate(f"guatu.styleOf('parcels', {ids[2]}).color") != "#f59e0b"

        for box in page.locator(".guatu-choice input").all():  # the filter: idle parcels only
            if box.get_attribute("value") != "闲置":
                box.uncheck()
        page.wait_for_function("document.querySelector('.guatu-figures').dataset.query.startsWith('status=')")
        page.wait_for_function("guatu.idle()", timeout=15_000)
        statuses = page.evaluate("guatu.drawn('parcels').map(p => p.use_status)")
        assert set(statuses) <= {"闲置"}
        kept = page.evaluate("guatu.drawn('parcels').map(p => p.id)")
        if kept:  # the filtered tiles are hit-tested too
            click_feature(page, "parcels", kept[0])
            page.locator(".leaflet-popup-content td.guatu-v-use_status", has_text="闲置").wait_for(timeout=10_000)


def test_api_docs_render_offline(base_url: str) -> None:
    requests: list[str] = []
    with chromium() as browser:
        page = browser.new_page()
        page.on("request", lambda request: requests.append(request.url))
        page.goto(base_url + "/docs")
        page.wait_for_selector(".swagger-ui .info .title", timeout=15_000)
        assert "guatu" in page.locator(".swagger-ui .info .title").inner_text()
        page.get_by_text("/api/layers/{layer_id}/features", exact=True).first.wait_for(timeout=15_000)
    assert [url for url in requests if not url.startswith(base_url) and not url.startswith("data:")] == []


def test_grid_popup_shows_its_manager(base_url: str) -> None:
    grid = httpx.get(f"{base_url}/api/layers/grids/features", params={"limit": 1}).json()["features"][0]
    from shapely.geometry import shape

    centre = shape(grid["geometry"]).representative_point()
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.goto(base_url + "/")
        page.wait_for_function("window.guatu && guatu.idle()", timeout=15_000)
        move_to(page, centre.x, centre.y, 16)
        # Parcels tile the grids: a grid manager switches them (and zones, shops) off first.
        for name in ("地块 Land parcels", "一户一区 Courtyard zones", "商铺 Shops"):
            page.locator(".leaflet-control-layers-overlays label", has_text=name).locator("input").uncheck()
        assert page.evaluate("guatu.drawn('parcels').length") == 0
        box = page.locator(".leaflet-container").bounding_box()
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        popup = page.locator(".leaflet-popup-content", has_text="网格编码")
        popup.wait_for(timeout=5_000)
        text = popup.inner_text()
        assert grid["properties"]["code"] in text
        assert grid["properties"]["manager"] in text and "户数" in text
        page.wait_for_timeout(400)
        page.screenshot(path=str(SCREENSHOTS / "grid-popup.png"))


def test_page_embeds_no_features(base_url: str) -> None:
    page = httpx.get(base_url + "/").text
    parcel = httpx.get(f"{base_url}/api/layers/parcels/features", params={"limit": 1}).json()["features"][0]
    assert parcel["properties"]["code"] not in page  # layers come from the API by bbox
    assert "http://" not in page and "https://" not in page  # nothing from a CDN
    assert "/static/vendor/leaflet/leaflet.js" in page
    assert httpx.get(base_url + "/static/vendor/leaflet/leaflet.js").status_code == 200


def test_the_print_button_returns_the_wall_map_of_the_view(base_url: str, tmp_path: Path) -> None:
    from tests.test_print import first_page, pdf_text

    requests: list[str] = []
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("request", lambda request: requests.append(request.url))
        page.goto(base_url + "/")
        page.wait_for_function("document.querySelectorAll('path.guatu-grids').length > 10", timeout=15_000)
        link = page.locator("a.guatu-print")
        assert "打印" in link.inner_text()
        page.select_option("select.guatu-print-size", "A0/A4")  # an A0 wall map on an office printer
        sheets = link.get_attribute("href") or ""
        assert "size=A0" in sheets and "sheets=A4" in sheets and "format=pdf" in sheets
        page.select_option("select.guatu-print-size", "A3")
        href = link.get_attribute("href")
        assert href is not None and "bbox=" in href and "size=A3" in href
        page.locator(".guatu-choice input[value='自用']").uncheck()  # the wall map prints what is shown
        assert "narrow_parcels=status%3D" in (link.get_attribute("href") or "")  # the parcels' own filter
        page.locator(".guatu-choice input[value='自用']").check()
        page.select_option("select.guatu-print-scale", "2000")  # at 1:2 000, the figures beside the map
        page.locator(".guatu-print-figures input").check()
        href = link.get_attribute("href")
        assert href is not None and "narrow_" not in href
        assert "scale=2000" in href and "figures=true" in href
        with page.expect_download(timeout=90_000) as download:
            link.click()
            assert "正在绘制" in page.locator(".guatu-print-status").inner_text()  # said while it is drawn
        saved = tmp_path / "saved.pdf"
        download.value.save_as(saved)
        assert download.value.suggested_filename.endswith(".pdf") and "挂图" in download.value.suggested_filename
        assert saved.read_bytes().startswith(b"%PDF")
        page.wait_for_function("document.querySelector('.guatu-print-status').textContent.includes('已生成')")
    response = httpx.get(base_url + href, timeout=60)
    assert response.status_code == 200 and response.content.startswith(b"%PDF")
    words = pdf_text(response.content, tmp_path)
    assert "城阳街道 集体资源一张图" in words and "图例" in words and "地块 闲置" in words
    assert "比例尺 1:2 000" in words and "统计表" in words
    image = first_page(response.content, tmp_path)
    image.save(SCREENSHOTS / "wall-map.png")
    assert image.width > image.height  # A3 landscape
    assert [url for url in requests if not url.startswith(base_url) and not url.startswith("data:")] == []


def test_search_zooms_and_the_status_filter_changes_drawing_and_figures(base_url: str) -> None:
    parcels = httpx.get(f"{base_url}/api/layers/parcels/features", params={"limit": 2000}).json()["features"]
    idle = next(p for p in parcels if p["properties"]["use_status"] == "闲置")
    code = idle["properties"]["code"]
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(base_url + "/")
        page.wait_for_selector(".guatu-figures[data-count]", timeout=15_000)
        page.fill("input.guatu-search", code)
        page.press("input.guatu-search", "Enter")
        page.wait_for_function(  # zoomed in: parcels drawn
            f"guatu.drawn('parcels').some(p => p.id === {idle['id']})", timeout=15_000
        )
        assert page.locator(".guatu-hit").first.inner_text().startswith("地块 " + code)
        page.wait_for_function("window.guatu.idle()", timeout=15_000)
        before = int(page.locator(".guatu-figures").get_attribute("data-count") or 0)
        drawn_before = page.evaluate("guatu.drawn('parcels').length")
        bounds = page.evaluate(
            "(() => { const m = Object.values(window).find(v => v && v._leaflet_id && v.getBounds); "
            "const b = m.getBounds(); return [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()]; })()"
        )
        expected = httpx.get(
            f"{base_url}/api/layers/parcels/stats",
            params={"bbox": ",".join(f"{v:.6f}" for v in bounds), "status": "闲置"},
        ).json()["total"]["count"]
        for box in page.locator(".guatu-choice input").all():
            if box.get_attribute("value") != "闲置":
                box.uncheck()
        # each uncheck asks again; wait for the answer to the last one (the view does not move)
        page.wait_for_function(
            f"document.querySelector('.guatu-figures').dataset.count === '{expected}'", timeout=15_000
        )
        page.wait_for_function("window.guatu.idle()", timeout=15_000)
        after = int(page.locator(".guatu-figures").get_attribute("data-count") or 0)
        assert after == expected and 0 < after < before
        drawn, emphasised = page.evaluate(  # both counted at one moment: a tile may still be drawing
            "[guatu.drawn('parcels').length, guatu.drawn('parcels').filter(p => p.use_status === '闲置').length]"
        )
        assert 0 < drawn < drawn_before
        assert drawn == emphasised  # only idle ones are left
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "map-filter.png"))


def test_basemaps_are_configurable_and_none_asks_nothing_outside() -> None:
    import re as regex

    from layers.base import REGISTRY
    from web.maps import Basemap, LayerView, build_map_page

    views = [LayerView(layer, 0, None) for layer in REGISTRY.values()]
    plain = build_map_page(views, title="t")
    assert "tianditu" not in plain and not regex.search(r"https?://(?!127\.0\.0\.1)", plain)
    vec = build_map_page(views, title="t", basemap=Basemap("tianditu-vec", key="KEY123"))
    assert "tianditu.gov.cn/vec_w" in vec and "tianditu.gov.cn/cva_w" in vec and "tk=KEY123" in vec
    img = build_map_page(views, title="t", basemap=Basemap("tianditu-img", key="KEY123"))
    assert "img_w" in img and "cia_w" in img
    assert "tianditu" not in build_map_page(views, title="t", basemap=Basemap("tianditu-vec"))  # no key: none
    xyz = build_map_page(views, title="t", basemap=Basemap("xyz", url="https://tiles.example.org/{z}/{x}/{y}.png"))
    assert "https://tiles.example.org/{z}/{x}/{y}.png" in xyz


def test_the_panel_drills_down_and_every_drawn_parcel_matches_the_filter(base_url: str) -> None:
    listed = httpx.get(f"{base_url}/api/layers/parcels/features", params={"limit": 10000}).json()["features"]
    ledger = {f["id"]: f["properties"] for f in listed}
    requests: list[str] = []
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("request", lambda request: requests.append(request.url))
        page.goto(base_url + "/")
        page.wait_for_selector(".guatu-rollup-row", timeout=15_000)
        street = page.locator(".guatu-rollup-row").first
        assert "城阳街道" in street.inner_text() and "街道" in page.locator(".guatu-rollup th").first.inner_text()
        street_code = street.get_attribute("data-code")
        street.click()
        page.wait_for_function(f"document.querySelector('.guatu-figures').dataset.query === 'scope={street_code}'")
        page.wait_for_selector(f".guatu-crumb[data-code='{street_code}']")
        assert "社区" in page.locator(".guatu-rollup th").first.inner_text()
        community = page.locator(".guatu-rollup-row").first.get_attribute("data-code")
        page.locator(".guatu-rollup-row").first.click()
        page.wait_for_function(f"document.querySelector('.guatu-figures').dataset.query === 'scope={community}'")
        assert "网格" in page.locator(".guatu-rollup th").first.inner_text()
        grid = page.locator(".guatu-rollup-row").first.get_attribute("data-code")
        assert grid is not None and community is not None and grid.startswith(community)
        page.locator(".guatu-rollup-row").first.click()
        page.wait_for_function(f"document.querySelector('.guatu-figures').dataset.query === 'scope={grid}'")
        page.wait_for_function("!document.querySelector('.guatu-figures').dataset.loading && window.guatu.idle()")
        assert page.locator(".guatu-rollup-row").count() == 0  # a grid is the last level

        in_grid = {i for i, p in ledger.items() if p["grid_code"] == grid}
        drawn = {p["id"] for p in page.evaluate("guatu.drawn('parcels')")}
        assert drawn == in_grid  # the tiles hold this grid's parcels, every one (the grid is in view)

        figures = page.locator(".guatu-figures")
        bars = page.locator(".guatu-bar")
        assert sum(int(b.get_attribute("data-count") or 0) for b in bars.all()) == int(
            figures.get_attribute("data-count") or -1
        )
        page.select_option("select.guatu-f-land-use", "07")
        page.wait_for_function(f"document.querySelector('.guatu-figures').dataset.query === 'scope={grid}&land_use=07'")
        page.wait_for_function("!document.querySelector('.guatu-figures').dataset.loading && window.guatu.idle()")
        homes = {p["id"] for p in page.evaluate("guatu.drawn('parcels')")}
        expected_homes = {i for i in in_grid if ledger[i]["land_use_code"].startswith("07")}
        assert homes and homes == expected_homes and homes < drawn
        bounds = page.evaluate(
            "(() => { const m = Object.values(window).find(v => v instanceof L.Map); "
            "const b = m.getBounds(); return [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()]; })()"
        )
        expected = httpx.get(
            f"{base_url}/api/layers/parcels/stats",
            params={"bbox": ",".join(f"{v:.6f}" for v in bounds), "scope": grid, "land_use": "07"},
        ).json()["total"]["count"]
        assert int(figures.get_attribute("data-count") or -1) == expected
        page.screenshot(path=str(SCREENSHOTS / "map-drilldown.png"))
        page.locator(".guatu-crumb", has_text="全部").click()  # back to the top
        page.wait_for_function("document.querySelector('.guatu-figures').dataset.query === 'land_use=07'")

    assert any("/tiles/parcels/" in url for url in requests)  # parcels come as vector tiles …
    assert not any("/api/layers/parcels/features" in url for url in requests)  # … not as GeoJSON
    assert [url for url in requests if not url.startswith(base_url) and not url.startswith("data:")] == []


def test_a_filter_changed_while_zoomed_out_fetches_no_parcel_tiles_until_zoomed_in(base_url: str) -> None:
    tile_requests: list[str] = []
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.on("request", lambda r: tile_requests.append(r.url) if "/tiles/parcels/" in r.url else None)
        page.goto(base_url + "/")
        page.wait_for_selector(".guatu-figures[data-count]", timeout=15_000)
        x, y = page.evaluate(
            "(() => { const c = Object.values(window).find(v => v instanceof L.Map).getCenter(); "
            "return [c.lng, c.lat]; })()"
        )
        move_to(page, x, y, 12)  # below the parcels' zoom (14): nothing of them is fetched
        tile_requests.clear()
        page.locator(".guatu-choice input[value='自用']").uncheck()
        page.wait_for_function("document.querySelector('.guatu-figures').dataset.query.startsWith('status=')")
        page.wait_for_timeout(500)
        assert tile_requests == []
        move_to(page, x, y, 16)
        assert tile_requests and all("status=" in url and "/16/" in url for url in tile_requests)
        drawn = page.evaluate("guatu.drawn('parcels')")
        assert drawn and all(p["use_status"] != "自用" for p in drawn)


def map_call(page, body: str):
    """Evaluate BODY with `m` the page's Leaflet map."""
    return page.evaluate(f"(() => {{ const m = Object.values(window).find(v => v instanceof L.Map); {body} }})()")


def test_a_search_hit_hidden_by_the_filter_is_said_and_its_ledger_opens(base_url: str) -> None:
    parcels = httpx.get(f"{base_url}/api/layers/parcels/features", params={"limit": 2000}).json()["features"]
    used = next(p for p in parcels if p["properties"]["use_status"] == "自用")
    code = used["properties"]["code"]
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(base_url + "/")
        page.wait_for_selector(".guatu-figures[data-count]", timeout=15_000)
        page.locator(".guatu-choice input[value='自用']").uncheck()
        page.wait_for_function("document.querySelector('.guatu-figures').dataset.query.startsWith('status=')")
        page.fill("input.guatu-search", code)
        page.press("input.guatu-search", "Enter")
        note = page.locator(".guatu-hit-hidden")
        note.wait_for(timeout=10_000)
        assert "筛选" in note.inner_text()
        popup = page.locator(".leaflet-popup-content", has_text=code)  # the ledger opens all the same
        popup.wait_for(timeout=10_000)
        assert "自用" in popup.inner_text()
        page.screenshot(path=str(SCREENSHOTS / "map-search-hidden.png"))
        page.click("button.guatu-clear-filter")
        page.wait_for_function("document.querySelector('.guatu-figures').dataset.query === ''", timeout=10_000)
        assert page.locator(".guatu-choice input[value='自用']").is_checked()
        page.wait_for_function(  # drawn again
            f"guatu.drawn('parcels').some(p => p.id === {used['id']})", timeout=15_000
        )


def test_panels_leave_the_title_and_the_map_in_sight(base_url: str) -> None:
    def rect(page, selector: str) -> dict:
        return page.locator(selector).first.bounding_box()

    def overlap(a: dict, b: dict) -> bool:
        return (
            a["x"] < b["x"] + b["width"]
            and b["x"] < a["x"] + a["width"]
            and a["y"] < b["y"] + b["height"]
            and b["y"] < a["y"] + a["height"]
        )

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(base_url + "/")
        page.wait_for_selector(".guatu-rollup-row", timeout=15_000)
        for _ in range(2):  # street → community → grid: the panel grows with each table
            code = page.locator(".guatu-rollup-row").first.get_attribute("data-code")
            page.locator(".guatu-rollup-row").first.click()
            page.wait_for_function(f"document.querySelector('.guatu-figures').dataset.query === 'scope={code}'")
            page.wait_for_function("!document.querySelector('.guatu-figures').dataset.loading && guatu.idle()")
        page.wait_for_timeout(300)
        assert not overlap(rect(page, ".guatu-panel"), rect(page, ".guatu-title"))
        page.screenshot(path=str(SCREENSHOTS / "map-drilldown-1440.png"))

        phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
        phone.goto(base_url + "/")
        phone.wait_for_selector(".guatu-figures[data-count]", state="attached", timeout=15_000)
        assert not phone.locator(".guatu-figures").is_visible()  # a phone shows the map first, the panel folded
        assert not phone.locator(".leaflet-control-layers-expanded").count()  # and the layer switcher a button
        phone.click(".guatu-panel-head")  # open the panel on a phone
        phone.wait_for_timeout(300)
        free = phone.evaluate(
            """(() => {
                const frame = document.querySelector('.leaflet-container').getBoundingClientRect();
                let free = 0, all = 0;
                for (let x = frame.left + 5; x < frame.right; x += 20)
                    for (let y = frame.top + 5; y < frame.bottom; y += 20) {
                        all += 1;
                        if (!document.elementFromPoint(x, y).closest('.leaflet-control')) free += 1;
                    }
                return free / all;
            })()"""
        )
        phone.screenshot(path=str(SCREENSHOTS / "map-phone.png"))
        assert free > 0.35, free  # at least a third of the map is still in sight with the panel open


def test_popups_name_land_use_codes(base_url: str) -> None:
    from layers.landuse import land_use_codes

    parcels = httpx.get(f"{base_url}/api/layers/parcels/features", params={"limit": 2000}).json()["features"]
    parcel = next(p for p in parcels if p["properties"]["land_use_code"] in land_use_codes())
    code = parcel["properties"]["land_use_code"]
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(base_url + "/")
        page.wait_for_selector(".guatu-figures[data-count]", timeout=15_000)
        from shapely.geometry import shape

        spot = shape(parcel["geometry"]).representative_point()
        move_to(page, spot.x, spot.y, 18)
        click_feature(page, "parcels", parcel["id"])
        cell = page.locator(".leaflet-popup-content td.guatu-v-land_use_code")
        cell.wait_for(timeout=10_000)
        assert cell.inner_text() == f"{code} {land_use_codes()[code].name}"


def test_units_are_labelled_by_zoom_without_overlapping(base_url: str) -> None:
    grid = httpx.get(f"{base_url}/api/layers/grids/features", params={"limit": 1}).json()["features"][0]
    from shapely.geometry import shape

    centre = shape(grid["geometry"]).representative_point()
    seen: dict[int, set[str]] = {}
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(base_url + "/")
        page.wait_for_function("window.guatu && guatu.idle()", timeout=15_000)
        for zoom in (13, 17):
            move_to(page, centre.x, centre.y, zoom)
            page.wait_for_timeout(400)
            labels = page.locator(".guatu-unit-label")
            assert labels.count() > 0, zoom
            seen[zoom] = {t.strip() for t in labels.all_inner_texts()}
            boxes = [b for b in (label.bounding_box() for label in labels.locator(".guatu-unit-text").all()) if b]
            for i, a in enumerate(boxes):
                for b in boxes[i + 1 :]:
                    assert not (
                        a["x"] + 1 < b["x"] + b["width"]
                        and b["x"] + 1 < a["x"] + a["width"]
                        and a["y"] + 1 < b["y"] + b["height"]
                        and b["y"] + 1 < a["y"] + a["height"]
                    ), (zoom, a, b)
            page.screenshot(path=str(SCREENSHOTS / ("map-labels.png" if zoom == 13 else f"map-labels-z{zoom}.png")))
    assert any(name.endswith("社区") for name in seen[13])  # zoomed out: the communities
    assert grid["properties"]["name"] in seen[17]  # zoomed in: the grids


def stats_in_view(page, base_url: str, layer: str, value: str) -> dict:
    """Return the API's totals of LAYER's features of status VALUE in the page's view (what the panel must say)."""
    bounds = map_call(page, "const b = m.getBounds(); return [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()];")
    params = {"bbox": ",".join(f"{v:.6f}" for v in bounds), "status": value}
    total: dict = httpx.get(f"{base_url}/api/layers/{layer}/stats", params=params).json()["total"]
    return total


def keep_only_status(page, layer: str, value: str) -> list[dict]:
    """Pick LAYER in the panel, tick only VALUE of its status, wait for the map; return what is drawn."""
    page.select_option("select.guatu-f-layer", layer)
    page.wait_for_function(f"document.querySelector('.guatu-figures').dataset.layer === '{layer}'")
    for box in page.locator(".guatu-choice input").all():
        if box.get_attribute("value") != value:
            box.uncheck()
    page.wait_for_function(
        f"decodeURIComponent(document.querySelector('.guatu-figures').dataset.query) === 'status={value}'"
    )
    page.wait_for_function("!document.querySelector('.guatu-figures').dataset.loading && guatu.idle()")
    drawn: list[dict] = page.evaluate(f"guatu.drawn('{layer}')")
    return drawn


def test_shops_get_their_own_filter_and_figures_on_the_map(base_url: str) -> None:
    listed = httpx.get(f"{base_url}/api/layers/shops/features", params={"limit": 2000}).json()["features"]
    idle = next(f for f in listed if f["properties"]["status"] == "闲置")
    x, y = idle["geometry"]["coordinates"] if idle["geometry"]["type"] == "Point" else (None, None)
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(base_url + "/")
        page.wait_for_selector(".guatu-figures[data-count]", timeout=15_000)
        if x is not None:
            move_to(page, x, y, 16)
        drawn = keep_only_status(page, "shops", "闲置")
        assert "narrow_shops=status%3D" in (page.locator("a.guatu-print").get_attribute("href") or "")  # printed so
        assert drawn and {p["status"] for p in drawn} == {"闲置"}
        expected = stats_in_view(page, base_url, "shops", "闲置")
        figures = page.locator(".guatu-figures")
        assert int(figures.get_attribute("data-count") or -1) == expected["count"] == len(drawn)
        assert "间" in figures.inner_text() and "闲置" in figures.inner_text()
        page.select_option("select.guatu-f-letting-status", "招租中")
        page.wait_for_function("document.querySelector('.guatu-figures').dataset.query.includes('letting_status=')")
        page.wait_for_function("!document.querySelector('.guatu-figures').dataset.loading && guatu.idle()")
        letting = page.evaluate("guatu.drawn('shops')")
        assert all(p["letting_status"] == "招租中" and p["status"] == "闲置" for p in letting)
        page.screenshot(path=str(SCREENSHOTS / "map-shops-filter.png"))


def test_revenue_points_are_searched_drawn_filtered_and_counted_like_any_layer(base_url: str) -> None:
    """公共收益点位, declared in its own module only: found, in the legend, filtered and counted."""
    listed = httpx.get(f"{base_url}/api/layers/revenue_points/features", params={"limit": 2000}).json()["features"]
    waiting = next(f for f in listed if f["properties"]["status"] == "待招租")
    name = waiting["properties"]["name"]
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(base_url + "/")
        page.wait_for_selector(".guatu-figures[data-count]", timeout=15_000)
        assert "公共收益点位" in page.locator(".guatu-legend").inner_text()
        page.fill("input.guatu-search", name)
        page.press("input.guatu-search", "Enter")
        page.wait_for_selector(".guatu-hit", timeout=15_000)
        assert page.locator(".guatu-hit").first.inner_text().startswith("公共收益点位")
        page.wait_for_function("guatu.idle()", timeout=15_000)
        drawn = keep_only_status(page, "revenue_points", "待招租")
        assert drawn and {p["status"] for p in drawn} == {"待招租"} and name in {p["name"] for p in drawn}
        expected = stats_in_view(page, base_url, "revenue_points", "待招租")
        figures = page.locator(".guatu-figures")
        assert int(figures.get_attribute("data-count") or -1) == expected["count"] == len(drawn)
        assert "处" in figures.inner_text()
        page.screenshot(path=str(SCREENSHOTS / "map-revenue-points.png"))
