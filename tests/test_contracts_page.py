"""按合同着色 in headless Chromium: a parcel in arrears turns red, one let out without a contract too."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from layers import contracts
from layers.access import Actor
from spatial.db import state
from tests.browser import chromium, live_server, sign_in_as
from tests.conftest import demo_database
from tests.test_map_page import SCREENSHOTS, move_to

pytestmark = pytest.mark.browser

RED = "#dc2626"


@pytest.fixture(scope="module")
def web_engine() -> Iterator[Engine]:
    """Return an engine on a committed database holding the demo street and its demo contracts."""
    with demo_database("guatu_test_contracts_web") as engine:
        yield engine


@pytest.fixture(scope="module")
def base_url(web_engine: Engine) -> Iterator[str]:
    with live_server(web_engine) as url:
        yield url


def _lights(engine: Engine, layer_id: str) -> dict[str, dict]:
    with Session(engine) as session:
        state(session, Actor(None, "tests", "admin").settings())
        return contracts.asset_lights(session, contracts.let_layers()[0], dt.date.today())


def test_colour_by_contract_turns_a_parcel_in_arrears_red(base_url: str, web_engine: Engine) -> None:
    layer = contracts.let_layers()[0]
    lights = _lights(web_engine, layer.id)
    overdue = sorted(code for code, lit in lights.items() if "overdue" in lit["warnings"])
    green = sorted(code for code, lit in lights.items() if lit["light"] == "green")
    assert overdue and green  # the demo has both
    features = httpx.get(f"{base_url}/api/layers/{layer.id}/features", params={"limit": 5000}).json()["features"]
    by_code = {f["properties"][layer.key_field]: f for f in features}
    late, fine = by_code[overdue[0]], by_code[green[0]]
    from shapely.geometry import shape

    spot = shape(late["geometry"]).representative_point()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(base_url + "/")
        page.wait_for_function("window.guatu && guatu.idle()", timeout=15_000)
        move_to(page, spot.x, spot.y, 17)
        late_fill, fine_fill = fill_js(layer.id, late["id"]), fill_js(layer.id, fine["id"])
        page.wait_for_function(f"{late_fill} !== ''", timeout=15_000)
        assert page.evaluate(late_fill) != RED  # coloured by its use status first
        page.check("input.guatu-contracts-check")
        page.wait_for_selector(".guatu-contracts[data-loaded]", timeout=15_000)
        page.wait_for_function(f"{late_fill} === '{RED}'", timeout=15_000)
        page.screenshot(path=str(SCREENSHOTS / "contracts-map.png"))
        if page.evaluate(fine_fill):  # drawn in this view too: green, not red
            assert page.evaluate(fine_fill) != RED
        page.uncheck("input.guatu-contracts-check")
        page.wait_for_function(f"{late_fill} !== '{RED}'", timeout=15_000)


def _as(engine: Engine, username: str) -> dict[str, str]:
    """Open pages (and httpx calls) as USERNAME from now on; return the bearer header."""
    return {"Authorization": f"Bearer {sign_in_as(engine, username)}"}


@pytest.fixture
def back_to_admin(web_engine: Engine) -> Iterator[None]:
    yield
    sign_in_as(web_engine, "admin")


def _shown(page: Any) -> dict[str, dict[str, Any]]:
    """Return the rows of the page's list by contract number."""
    rows = page.evaluate("guatuContracts.table().getData()")
    return {r["number"]: r for r in rows}


def test_contracts_page_lists_figures_creates_a_contract_and_records_a_payment(
    base_url: str, web_engine: Engine, back_to_admin: None
) -> None:
    headers = _as(web_engine, "planner")
    listed = httpx.get(f"{base_url}/api/contracts", params={"limit": 500}, headers=headers).json()
    summary = httpx.get(f"{base_url}/api/contracts/summary", headers=headers).json()
    assert listed["total"] > 5
    lights = _lights(web_engine, "parcels")
    free = sorted(code for code, lit in lights.items() if "no_contract" in lit["warnings"])
    assert free, "the demo leaves a let parcel without a contract"
    layer = contracts.let_layers()[0]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(base_url + "/contracts")
        page.wait_for_selector("#guatu-root[data-loaded]", timeout=15_000)
        shown = _shown(page)
        assert len(shown) == listed["total"]
        for c in listed["contracts"]:
            row = shown[c["number"]]
            assert (row["receivable"], row["received"], row["arrears"], row["days"], row["status"]) == (
                c["position"]["receivable"],
                c["position"]["received"],
                c["position"]["arrears"],
                c["position"]["days_overdue"],
                c["position"]["status"],
            )
        arrears = page.get_attribute(".guatu-figure-arrears", "data-value")
        assert float(arrears or "nan") == summary["arrears"]
        overdue = [c for c in listed["contracts"] if c["position"]["light"] == "red"]
        assert overdue and page.locator(".guatu-badge[data-code=overdue]").count() >= len(overdue)
        # the detail of one in arrears: its instalments, what they still owe, its payments
        page.locator(".tabulator-row", has_text=overdue[0]["number"]).first.click()
        page.wait_for_selector(f".guatu-contract-detail[data-id='{overdue[0]['id']}'] .guatu-contract-schedule")
        assert page.locator(".guatu-contract-schedule tr.guatu-owing").count() >= 1
        page.wait_for_selector(".guatu-contract-asset[href^='/#18/']", timeout=15_000)  # the map at the asset
        page.screenshot(path=str(SCREENSHOTS / "contracts-page.png"))
        # a new contract for the let parcel without one: a wrong date first, shown at its field
        start = dt.date.today() - dt.timedelta(days=30)
        page.click(".guatu-contract-new")
        form = page.locator(".guatu-contract-form")
        for name, value in {
            "number": "HT-PAGE-001",
            "lessor": "演示社区股份经济合作社",
            "lessee_name": "王小二",
            "start_date": start.isoformat(),
            "end_date": (start - dt.timedelta(days=1)).isoformat(),
            "rent": "12000",
            "assets.0.code": free[0],
        }.items():
            form.locator(f"[name='{name}']").fill(value)
        form.locator("[name=rent_unit]").select_option("元/年")
        form.locator("[name=cycle]").select_option("年")
        form.locator("[name='assets.0.layer']").select_option(layer.id)
        page.click(".guatu-contract-save")
        page.wait_for_selector(".guatu-field-error[data-field=end_date]", timeout=15_000)
        form.locator("[name=end_date]").fill((start.replace(year=start.year + 3) - dt.timedelta(days=1)).isoformat())
        page.click(".guatu-contract-save")
        page.wait_for_selector(".guatu-contract-detail .guatu-contract-pay", timeout=15_000)
        page.wait_for_function("!!document.querySelector('.guatu-contract-detail h2')")
        assert "HT-PAGE-001" in page.inner_text(".guatu-contract-detail h2")
        page.wait_for_function("guatuContracts.table().getData().some(r => r.number === 'HT-PAGE-001')")
        assert _shown(page)["HT-PAGE-001"]["arrears"] == 12000.0
        made = httpx.get(f"{base_url}/api/contracts", params={"limit": 500}, headers=headers).json()
        (mine,) = [c for c in made["contracts"] if c["number"] == "HT-PAGE-001"]
        assert mine["position"]["arrears"] == 12000.0 and mine["assets"] == [{"layer": layer.id, "code": free[0]}]
        # a payment: the arrears go
        payment = page.locator(".guatu-contract-payment")
        payment.locator("[name=amount]").fill("12000")
        payment.locator("[name=note]").fill("收据 0001")
        page.click(".guatu-contract-pay")
        page.wait_for_function(
            "guatuContracts.table().getData().some(r => r.number === 'HT-PAGE-001' && r.arrears === 0)"
        )
        after = httpx.get(f"{base_url}/api/contracts/{mine['id']}", headers=headers).json()
        assert after["position"]["arrears"] == 0 and after["payments"][0]["note"] == "收据 0001"
        assert after["payments"][0]["recorded_by"] == "planner"
        page.screenshot(path=str(SCREENSHOTS / "contracts-page-paid.png"))
        phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
        phone.goto(base_url + "/contracts")
        phone.wait_for_selector("#guatu-root[data-loaded] .guatu-contract-new", timeout=15_000)
        phone.click(".guatu-contract-new")
        phone.click(".guatu-contract-save")  # nothing filled: each error at its field
        phone.wait_for_selector(".guatu-field-error[data-field=number]", timeout=15_000)
        assert phone.locator(".guatu-field-error").count() >= 4
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
        phone.locator(".guatu-contract-form").screenshot(path=str(SCREENSHOTS / "contracts-form-390.png"))
        phone.close()
        # an edit while someone else changed it: 412, then a retry on the latest version saves it
        page.click(".guatu-contract-edit")
        page.locator(".guatu-contract-form [name=title]").fill("页面修改")
        body = {k: after[k] for k in contracts.ContractIn.model_fields if k in after} | {"note": "他人修改"}
        body["assets"] = after["assets"]
        meanwhile = httpx.put(
            f"{base_url}/api/contracts/{mine['id']}", json=body, headers=headers | {"If-Match": f'"{after["version"]}"'}
        )
        assert meanwhile.status_code == 200, meanwhile.text
        page.click(".guatu-contract-save")
        page.wait_for_selector(".guatu-contract-retry", timeout=15_000)
        page.click(".guatu-contract-retry")
        page.wait_for_function("(document.querySelector('.guatu-contract-detail h2') || {}).textContent")
        page.wait_for_selector(".guatu-contract-edit", timeout=15_000)
        saved = httpx.get(f"{base_url}/api/contracts/{mine['id']}", headers=headers).json()
        assert saved["title"] == "页面修改" and saved["version"] == after["version"] + 2
        # the export link carries the filters
        page.select_option("select[name=status]", "履行中")
        page.wait_for_function("document.querySelector('.guatu-export').href.includes('status=')")
        href = page.get_attribute(".guatu-export", "href") or ""
        got = httpx.get(base_url + href, headers=headers)
        assert got.status_code == 200 and got.content[:2] == b"PK"
        page.goto(base_url + "/problems")
        assert page.locator("a[href='/contracts']").count() == 1
        href = page.get_attribute(".guatu-export", "href") or ""
        got = httpx.get(base_url + href, headers=headers)
        assert got.status_code == 200 and got.content[:2] == b"PK"


def test_a_viewer_sees_masked_lessees_and_no_write_controls(
    base_url: str, web_engine: Engine, back_to_admin: None
) -> None:
    headers = _as(web_engine, "viewer")
    listed = httpx.get(f"{base_url}/api/contracts", params={"limit": 500}, headers=headers).json()
    assert listed["total"] > 0
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 390, "height": 844})
        page.goto(base_url + "/contracts")
        page.wait_for_selector("#guatu-root[data-loaded]", timeout=15_000)
        assert page.get_attribute("#guatu-root", "data-ready") == "1"
        shown = _shown(page)
        assert shown and all("*" in r["lessee"] for r in shown.values())
        assert page.locator(".guatu-contract-new").count() == 0
        page.locator(".tabulator-row").first.click()
        page.wait_for_selector(".guatu-contract-detail .guatu-contract-schedule", timeout=15_000)
        assert page.locator(".guatu-contract-edit, .guatu-contract-payment").count() == 0
        assert "*" in page.inner_text(".guatu-contract-detail")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways at 390 px ({width})"
        page.screenshot(path=str(SCREENSHOTS / "contracts-page-390.png"), full_page=True)


def test_on_a_phone_the_contract_switch_covers_not_the_status(base_url: str) -> None:
    # at 390 px the switch (bottom right) covered the end of the status lines (bottom left)
    boxes = """() => Array.from(document.querySelectorAll('.leaflet-control'))
        .filter(n => n.offsetParent !== null).map(n => {
            const r = n.getBoundingClientRect();
            return {name: n.className, x0: r.left, y0: r.top, x1: r.right, y1: r.bottom};
        })"""
    with chromium() as browser:
        for mobile in (True, False):  # a phone, and a narrow window on a desktop
            page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=mobile, has_touch=mobile)
            page.goto(base_url + "/")
            page.wait_for_function("window.guatu && guatu.idle()", timeout=15_000)
            for checked in (False, True):
                if checked:
                    page.check("input.guatu-contracts-check")
                    page.wait_for_selector(".guatu-contracts[data-loaded]", timeout=15_000)
                found = page.evaluate(boxes)
                switch = next(b for b in found if "guatu-contracts" in b["name"])
                assert switch["x1"] <= 390 and switch["x0"] >= 0
                for other in found:  # the open panel and legend cover each other on a phone already: not the switch's
                    if other is switch or "guatu-panel" in other["name"] or "guatu-legend" in other["name"]:
                        continue
                    apart = switch["x1"] <= other["x0"] or other["x1"] <= switch["x0"]
                    apart = apart or switch["y1"] <= other["y0"] or other["y1"] <= switch["y0"]
                    assert apart, (mobile, checked, switch, other)
            page.screenshot(path=str(SCREENSHOTS / f"contracts-map-390{'-mobile' if mobile else ''}.png"))
            page.close()


def fill_js(layer: str, fid: int) -> str:
    """A JS expression: the fill colour feature FID of LAYER is drawn with now ('' if not drawn), lower case.

    A tiled layer paints its features on canvases (map.js tells their style); others are SVG paths.
    """
    path = f"document.querySelector('path.guatu-{layer}-{fid}')"
    return (
        f"((guatu.styleOf('{layer}', {fid}) || {{}}).fillColor || ({path} && {path}.getAttribute('fill')) || '')"
        ".toLowerCase()"
    )
