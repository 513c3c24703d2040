"""The upload page maps a Shapefile's Chinese field names in headless Chromium: proposed, confirmed, remembered."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine

from tests.browser import chromium, live_server
from tests.conftest import migrated_database
from tests.samples import COMMUNITY, X0, Y0
from tests.test_map_page import move_to

pytestmark = pytest.mark.browser
SCREENSHOTS = Path(os.environ.get("GUATU_SCREENSHOTS", Path(__file__).resolve().parent.parent / "out" / "screenshots"))


@pytest.fixture(scope="module")
def engine_with_nothing() -> Iterator[Engine]:
    with migrated_database("guatu_test_mapping_page") as engine:
        yield engine


def mapped_file(first: int) -> dict[str, Any]:
    """Return the file a surveyor brings (its name, type and bytes): a zipped Shapefile of shops.

    Written by GDAL as desktop GIS writes them in China: Chinese field names and values in GBK
    (a DBF field name holds 10 bytes: 商铺编号 is 8 in GBK, 12 in UTF-8), with a .cpg and a .prj.
    """
    features = []
    for i in range(first, first + 2):
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [X0 + 0.0003 * i, Y0 + 0.0002]},
                "properties": {
                    "商铺编号": COMMUNITY + f"21{i:05d}",
                    "名称": f"南疃路{i}号",
                    "权属": "集体",
                    "状态": "闲置",
                    "地址": "南疃路",
                    "说明": "原为小卖部",
                    "备注": f"临街{i}",
                    "联系电话": "13812345678",
                },
            }
        )
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp, "in.geojson")
        source.write_text(json.dumps({"type": "FeatureCollection", "features": features}, ensure_ascii=False))
        out = Path(tmp, "shp")
        subprocess.run(
            ["ogr2ogr", "-f", "ESRI Shapefile", "-lco", "ENCODING=GBK", "-a_srs", "EPSG:4490", "-nln", "商铺调查"]
            + [str(out), str(source)],
            check=True,
            capture_output=True,
        )
        packed = io.BytesIO()
        with zipfile.ZipFile(packed, "w") as zf:
            for member in sorted(out.iterdir()):
                zf.write(member, member.name)
    return {"name": "商铺调查.zip", "mimeType": "application/zip", "buffer": packed.getvalue()}


def target(page: Any, name: str) -> Any:
    return page.locator(f'tr.guatu-map-row[data-field="{name}"] select')


def test_a_chinese_labelled_file_is_mapped_on_the_page_and_remembered(engine_with_nothing: Engine) -> None:
    requests: list[str] = []
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with live_server(engine_with_nothing) as base, chromium() as browser:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.on("request", lambda request: requests.append(request.url))
        page.goto(base + "/upload?layer=shops")
        page.set_input_files("input[name=file]", files=[mapped_file(0)])
        page.wait_for_selector(".guatu-map-table", timeout=15_000)
        assert target(page, "商铺编号").input_value() == "code"
        assert target(page, "状态").input_value() == "status"
        assert target(page, "说明").input_value() == ""  # nothing proposed: the surveyor chooses
        missing = page.locator(".guatu-map-missing")
        assert "均已对应" in missing.inner_text()
        target(page, "商铺编号").select_option("")  # a required field left out is shown
        assert "商铺编号" in missing.inner_text() and "guatu-bad" in (missing.get_attribute("class") or "")
        target(page, "商铺编号").select_option("code")
        target(page, "说明").select_option("former_business")
        target(page, "备注").select_option("@extra")
        box, scale = page.locator(".guatu-upload").bounding_box(), page.locator(".leaflet-control-scale").bounding_box()
        assert (
            box is not None and scale is not None and box["y"] + box["height"] <= scale["y"]
        )  # the scale bar in sight
        page.screenshot(path=str(SCREENSHOTS / "upload-mapping.png"))

        page.click("button[name=check]")
        page.wait_for_selector(".guatu-report-table", timeout=15_000)
        status = page.locator(".guatu-upload-status").inner_text()
        assert "新增 2" in status and "拒绝 0" in status, status
        notes = " ".join(page.locator(".guatu-map-note").all_inner_texts())
        assert "说明→原业态" in notes and "备注" in notes and "联系电话" in notes, notes
        page.click("button[name=commit]")
        page.wait_for_function(
            "document.querySelector('.guatu-upload-status').textContent.includes('committed')", timeout=15_000
        )
        page.screenshot(path=str(SCREENSHOTS / "upload-mapping-committed.png"))
        shops = httpx.get(f"{base}/api/layers/shops/features").json()["features"]
        assert sorted(f["properties"]["former_business"] for f in shops) == ["原为小卖部", "原为小卖部"]
        assert sorted(json.dumps(f["extra"], ensure_ascii=False) for f in shops) == [
            '{"备注": "临街0"}',
            '{"备注": "临街1"}',
        ]
        assert "13812345678" not in json.dumps(shops)

        # the map's popup shows the other attributes under their own heading
        shop = next(f for f in shops if f["extra"] == {"备注": "临街0"})
        page.goto(base + "/")
        page.wait_for_function("window.guatu && guatu.idle()", timeout=15_000)
        move_to(page, *shop["geometry"]["coordinates"], 18)
        marker = f"path.guatu-shops-{shop['id']}"
        page.wait_for_selector(marker, timeout=15_000)
        page.click(marker)
        popup = page.locator(".leaflet-popup-content", has_text="其他属性")
        popup.wait_for(timeout=5_000)
        assert "Other attributes" in popup.inner_text()
        assert popup.locator(".guatu-popup-extra-table th").all_inner_texts() == ["备注"]
        assert popup.locator(".guatu-popup-extra-table td").all_inner_texts() == ["临街0"]
        page.wait_for_timeout(400)
        page.screenshot(path=str(SCREENSHOTS / "map-popup-extra.png"))

        phone = browser.new_page(viewport={"width": 390, "height": 844})
        phone.on("request", lambda request: requests.append(request.url))
        phone.goto(base + "/upload?layer=shops")
        phone.set_input_files("input[name=file]", files=[mapped_file(2)])
        phone.wait_for_selector(".guatu-map-table", timeout=15_000)
        assert "上次" in phone.locator(".guatu-map-title").inner_text()
        assert target(phone, "说明").input_value() == "former_business"  # the confirmed choice, proposed again
        assert target(phone, "备注").input_value() == "@extra"
        width = phone.evaluate("document.querySelector('.guatu-upload').getBoundingClientRect().width")
        assert width <= 390
        phone.screenshot(path=str(SCREENSHOTS / "upload-mapping-390.png"), full_page=True)
        phone.click("button[name=check]")
        phone.wait_for_selector(".guatu-report-table", timeout=15_000)
        status = phone.locator(".guatu-upload-status").inner_text()
        assert "新增 2" in status and "拒绝 0" in status, status
        phone.click("button[name=commit]")
        phone.wait_for_function(
            "document.querySelector('.guatu-upload-status').textContent.includes('committed')", timeout=15_000
        )
        assert httpx.get(f"{base}/api/layers/shops").json()["count"] == 4
    assert [url for url in requests if not url.startswith(base) and not url.startswith("data:")] == []
