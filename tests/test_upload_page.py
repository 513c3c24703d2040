"""The upload page in headless Chromium: two bad features listed and drawn, then the valid ones committed."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine

from tests.browser import chromium, live_server
from tests.conftest import migrated_database
from tests.samples import COMMUNITY, X0, Y0, polygon, sample

pytestmark = pytest.mark.browser
SCREENSHOTS = Path(os.environ.get("GUATU_SCREENSHOTS", Path(__file__).resolve().parent.parent / "out" / "screenshots"))


@pytest.fixture(scope="module")
def engine_with_nothing() -> Iterator[Engine]:
    with migrated_database("guatu_test_upload_page") as engine:
        yield engine


def survey() -> bytes:
    features = []
    for i in range(5):
        parcel = sample("parcels")
        parcel["properties"]["code"] = COMMUNITY + f"01{i:05d}"
        x = X0 + 0.0015 * i
        parcel["geometry"] = polygon(x, Y0, x + 0.001, Y0 + 0.0008)
        features.append(parcel)
    features[1]["properties"]["ownership"] = "私人"  # not an allowed ownership
    x = X0 + 0.0015 * 3
    features[3]["geometry"]["coordinates"] = [
        [[x, Y0], [x + 0.001, Y0 + 0.0008], [x + 0.001, Y0], [x, Y0 + 0.0008], [x, Y0]]
    ]
    return json.dumps({"type": "FeatureCollection", "features": features}, ensure_ascii=False).encode()


def test_upload_page_lists_and_draws_rejects_and_the_rest_then_commits_them(engine_with_nothing: Engine) -> None:
    requests: list[str] = []
    with live_server(engine_with_nothing) as base, chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("request", lambda request: requests.append(request.url))
        page.goto(base + "/upload")
        page.select_option("select[name=layer]", "parcels")
        page.select_option("select[name=mode]", "valid-only")
        page.set_input_files(
            "input[name=file]",
            files=[{"name": "survey.geojson", "mimeType": "application/geo+json", "buffer": survey()}],
        )
        page.click("button[name=check]")
        page.wait_for_selector(".guatu-report-table", timeout=15_000)
        status = page.locator(".guatu-upload-status").inner_text()
        assert "新增 3" in status and "拒绝 2" in status, status
        rejected = page.locator("tr.guatu-row-rejected")
        assert rejected.count() == 2
        reasons = " ".join(rejected.all_inner_texts())
        assert "enum" in reasons and "self_intersection" in reasons
        assert page.locator("path.guatu-rejected").count() == 2  # both drawn on the map
        assert page.locator("path.guatu-feature-new").count() == 3  # and the valid ones beside them
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "upload-report.png"))
        assert httpx.get(f"{base}/api/layers/parcels").json()["count"] == 0  # a dry run writes nothing

        page.click("button[name=commit]")
        page.wait_for_function(
            "document.querySelector('.guatu-upload-status').textContent.includes('committed')", timeout=15_000
        )
        assert httpx.get(f"{base}/api/layers/parcels").json()["count"] == 3
        uploads = httpx.get(f"{base}/api/uploads").json()
        assert [u["status"] for u in uploads[:2]] == ["committed", "dry_run"]
    assert [url for url in requests if not url.startswith(base) and not url.startswith("data:")] == []


def test_upload_page_lists_and_draws_overlaps_with_stored_parcels(engine_with_nothing: Engine) -> None:
    def one(code: str, x: float) -> bytes:
        parcel = sample("parcels")
        parcel["properties"]["code"] = code
        parcel["geometry"] = polygon(x, Y0 + 0.003, x + 0.001, Y0 + 0.0038)
        return json.dumps({"type": "FeatureCollection", "features": [parcel]}, ensure_ascii=False).encode()

    with live_server(engine_with_nothing) as base, chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(base + "/upload")
        page.select_option("select[name=layer]", "parcels")
        for name, body, button in (
            ("stored.geojson", one(COMMUNITY + "0500001", X0), "check"),
            (None, b"", "commit"),  # the file checked: a new choice would be checked again first
            ("overlapping.geojson", one(COMMUNITY + "0500002", X0 + 0.0006), "check"),
        ):
            if name is not None:
                page.set_input_files(
                    "input[name=file]", files=[{"name": name, "mimeType": "application/geo+json", "buffer": body}]
                )
                page.wait_for_selector(".guatu-map-table", timeout=15_000)  # its fields read (inspect)
            page.click(f"button[name={button}]")
            page.wait_for_function(
                "document.querySelector('.guatu-upload-status').textContent.includes("
                + ("'committed')" if button == "commit" else "'Dry run')"),
                timeout=15_000,
            )
        warnings = " ".join(page.locator(".guatu-warning").all_inner_texts())
        assert "重叠" in warnings and "亩" in warnings, warnings
        row = page.locator("tr.guatu-row-new").inner_text()
        assert COMMUNITY + "0500001" in row and "平方米" in row, row  # the stored parcel it overlaps, and by how much
        assert page.locator("path.guatu-overlap").count() == 1  # the overlap drawn
        page.screenshot(path=str(SCREENSHOTS / "upload-overlaps.png"))
