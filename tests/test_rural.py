"""A rural deployment (乡镇 → 行政村 → 网格) works by configuration only: checks, roll-up, names."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from layers import hierarchy
from layers.settings import layer_settings
from tests import rural


@pytest.fixture
def rural_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Name the levels as a rural deployment does (GUATU_HIERARCHY=rural)."""
    monkeypatch.setenv("GUATU_HIERARCHY", "rural")
    layer_settings.cache_clear()
    yield
    monkeypatch.delenv("GUATU_HIERARCHY")
    layer_settings.cache_clear()


@pytest.fixture
def township(client: TestClient, rural_settings: None) -> TestClient:
    """Load the rural fixture through the API, as a surveyor would, one feature at a time."""
    for layer_id, items in rural.features().items():
        for item in items:
            response = client.post(f"/api/layers/{layer_id}/features", json=item)
            assert response.status_code == 201, (layer_id, item["properties"], response.text)
    return client


def test_the_levels_take_their_rural_names(rural_settings: None) -> None:
    described = {lv["id"]: lv for lv in hierarchy.describe()}
    assert described["street"]["zh"] == "乡镇" and described["community"]["zh"] == "行政村"
    assert described["community"]["en"] == "Village" and described["grid"]["digits"] == 15
    assert hierarchy.level_of(rural.WEST) == hierarchy.level("community")
    assert hierarchy.parent_of(rural.WEST + "001") == rural.WEST and hierarchy.parent_of(rural.WEST) == rural.TOWNSHIP


def test_parcels_take_their_village_and_grid_from_where_they_lie(township: TestClient) -> None:
    listed = township.get("/api/layers/parcels/features", params={"limit": 100}).json()["features"]
    by_code = {f["properties"]["code"]: f["properties"] for f in listed}
    first = by_code[rural.WEST + "0100002"]
    assert first["community_code"] == rural.WEST and first["grid_code"] == rural.WEST + "001"
    assert by_code[rural.EAST + "0100005"]["grid_code"] == rural.EAST + "002"


def test_checks_of_a_township_find_the_gap_and_the_straddler_in_rural_words(township: TestClient) -> None:
    body = township.get("/api/checks", params={"scope": rural.TOWNSHIP}).json()
    findings = body["findings"]
    gaps = [f for f in findings if f["rule"] == "gap"]
    assert len(gaps) == 1 and set(gaps[0]["codes"]) == {rural.EAST + "001", rural.EAST + "002"}, findings
    assert "行政村" in gaps[0]["message"] and "village" in gaps[0]["message"]
    assert not [f for f in findings if f["rule"] == "outside_parent"], findings  # long shared edges stay shared
    assert 0.9 * 46 * 3300 < gaps[0]["area_m2"] < 1.1 * 46 * 3330  # the 50 m strip, the village's height
    straddling = [f for f in findings if rural.STRADDLER in f["codes"]]
    assert straddling and all(f["rule"] != "gap" for f in straddling)
    west = township.get("/api/checks", params={"scope": rural.WEST}).json()["findings"]
    assert not [f for f in west if f["rule"] in ("gap", "overlap")]  # 西村's grids tile it


def test_the_roll_up_goes_township_village_grid(township: TestClient) -> None:
    villages = township.get("/api/layers/parcels/stats", params={"scope": rural.TOWNSHIP, "by": "community"}).json()
    rows = {r["code"]: r for r in villages["rows"]}
    assert rows[rural.WEST]["name"] == "西村" and rows[rural.EAST]["name"] == "东村"
    assert rows[rural.WEST]["count"] == 3 and rows[rural.EAST]["count"] == 2
    grids = township.get("/api/layers/parcels/stats", params={"scope": rural.WEST, "by": "grid"}).json()["rows"]
    assert {r["code"]: r["count"] for r in grids} == {rural.WEST + "001": 2, rural.WEST + "003": 1}
    assert all(r["name"].startswith("西村第") for r in grids)
    township_total = township.get("/api/layers/parcels/stats", params={"scope": rural.TOWNSHIP}).json()["total"]
    assert township_total["count"] == 5 and township_total["idle"] == 2


def test_a_rural_level_name_is_stored_and_an_urban_one_still_accepted(township: TestClient) -> None:
    listed = township.get("/api/layers/divisions/features", params={"limit": 10}).json()["features"]
    assert {f["properties"]["level"] for f in listed} == {"乡镇", "行政村"}


@pytest.mark.browser
def test_the_map_page_drills_down_township_village_grid(rural_settings: None) -> None:
    """In Chromium: the roll-up names 乡镇, then 行政村, then 网格, and clicking walks down them."""
    import httpx

    from tests.browser import chromium, live_server
    from tests.conftest import migrated_database

    with migrated_database("guatu_test_rural_web") as engine, live_server(engine) as base:
        for layer_id, items in rural.features().items():
            for item in items:
                response = httpx.post(f"{base}/api/layers/{layer_id}/features", json=item)
                assert response.status_code == 201, response.text
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(base + "/")
            page.wait_for_selector(".guatu-rollup-row", timeout=15_000)
            assert "乡镇" in page.locator(".guatu-rollup th").first.inner_text()
            town = page.locator(".guatu-rollup-row").first
            assert "示范镇" in town.inner_text() and town.get_attribute("data-code") == rural.TOWNSHIP
            town.click()
            page.wait_for_selector(f".guatu-crumb[data-code='{rural.TOWNSHIP}']")
            page.wait_for_function("document.querySelector('.guatu-rollup th').innerText.includes('行政村')")
            villages = {
                row.get_attribute("data-code"): row.inner_text() for row in page.locator(".guatu-rollup-row").all()
            }
            assert set(villages) == {rural.WEST, rural.EAST} and "西村" in villages[rural.WEST]
            page.locator(f".guatu-rollup-row[data-code='{rural.WEST}']").click()
            page.wait_for_function("document.querySelector('.guatu-rollup th').innerText.includes('网格')")
            grids = [row.get_attribute("data-code") for row in page.locator(".guatu-rollup-row").all()]
            assert grids and all(g and g.startswith(rural.WEST) for g in grids)
            page.screenshot(path="out/screenshots/map-rural-drilldown.png")
