"""The wall map export: a PDF whose first page, rendered by pdftoppm, carries the title and the legend."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy.orm import Session

from layers import demo


def pdf_text(pdf: bytes, folder: Path) -> str:
    path = folder / "map.pdf"
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout


def first_page(pdf: bytes, folder: Path) -> Image.Image:
    path = folder / "page.pdf"
    path.write_bytes(pdf)
    subprocess.run(["pdftoppm", "-png", "-r", "40", "-f", "1", "-l", "1", str(path), str(folder / "page")], check=True)
    return Image.open(next(folder.glob("page*.png"))).convert("RGB")


def test_a_community_wall_map_has_title_legend_and_its_grids(
    client: TestClient, session: Session, tmp_path: Path
) -> None:
    demo.load(session)
    session.flush()
    response = client.get("/api/print", params={"scope": "370214001006", "size": "A4", "title": "古庙头社区挂图"})
    assert response.status_code == 200 and response.headers["content-type"] == "application/pdf"
    assert response.content.startswith(b"%PDF") and "attachment" in response.headers["content-disposition"]
    words = pdf_text(response.content, tmp_path)
    for expected in ("古庙头社区挂图", "图例", "Legend", "地块 闲置", "网格 基础网格", "古庙头社区", "北", "米"):
        assert expected in words, expected
    assert "370214001006005" in words  # grid labels
    page = np.asarray(first_page(response.content, tmp_path))
    height, width, _ = page.shape
    assert width / height == pytest.approx(297 / 210, rel=0.02)  # A4 landscape
    coloured = (np.abs(page.astype(int) - page.mean(axis=2, keepdims=True)) > 40).any(axis=2)
    assert coloured.mean() > 0.05  # the parcels are drawn in their status colours, not a blank sheet


def test_the_wall_map_follows_the_map_filter(client: TestClient, session: Session, tmp_path: Path) -> None:
    demo.load(session)
    session.flush()
    scope = {"scope": "370214001006", "size": "A4"}
    everything = pdf_text(client.get("/api/print", params=scope).content, tmp_path)
    assert "地块 闲置" in everything and "地块 自用" in everything and "筛选" not in everything
    idle = client.get("/api/print", params={**scope, "status": "闲置", "land_use": "07"})
    assert idle.status_code == 200
    words = pdf_text(idle.content, tmp_path)
    assert "筛选 状态 闲置；地类 07" in words  # said in the title block
    assert "地块 闲置" in words and "地块 自用" not in words  # only idle parcels are on the sheet
    assert "网格 基础网格" in words  # the other layers are not filtered
    bad = client.get("/api/print", params={**scope, "land_use": "_"})
    assert bad.status_code == 422 and bad.json()["code"] == "filter_invalid"


def test_png_and_bad_requests(client: TestClient, session: Session) -> None:
    demo.load(session)
    session.flush()
    png = client.get("/api/print", params={"scope": "370214001005", "size": "A4", "format": "png", "layers": "grids"})
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert client.get("/api/print", params={"size": "B5"}).status_code == 422
    assert client.get("/api/print", params={"layers": "nope"}).json()["code"] == "layer_not_found"
    assert client.get("/api/print", params={"scope": "370214001099"}).json()["code"] == "scope_not_found"


def render(pdf: bytes, folder: Path, page: int, dpi: int) -> Image.Image:
    path = folder / f"p{page}.pdf"
    path.write_bytes(pdf)
    prefix = folder / f"r{page}-{dpi}"
    subprocess.run(["pdftoppm", "-png", "-r", str(dpi), "-f", str(page), "-l", str(page), str(path), str(prefix)])
    return Image.open(next(folder.glob(f"r{page}-{dpi}*.png"))).convert("L")


@pytest.mark.parametrize(("size", "sheets"), [("A0", "A4"), ("A1", "A4")])  # landscape and portrait sheets
def test_a_wall_map_cut_into_sheets_lines_up_with_the_whole(
    client: TestClient, session: Session, tmp_path: Path, size: str, sheets: str
) -> None:
    from pypdf import PdfReader

    from web.printing import MM, PAPER_MM, plan_sheets

    demo.load(session)
    session.flush()
    params = {"size": size, "title": "城阳街道挂图"}
    whole = client.get("/api/print", params=params)
    cut = client.get("/api/print", params={**params, "sheets": sheets})
    assert cut.status_code == 200 and cut.headers["content-type"] == "application/pdf"
    assert f"{size}-%E5%88%86%E5%B9%85{sheets}.pdf" in cut.headers["content-disposition"]  # 挂图-all-A0-分幅A4.pdf
    plan = plan_sheets(size, sheets)
    big_w, big_h = PAPER_MM[size]
    small_w, small_h = PAPER_MM[sheets]
    assert plan.count == plan.rows * plan.columns >= (big_w * big_h) // (small_w * small_h)  # A0 is 16 A4, A1 8
    assert plan.columns * plan.cell_mm[0] >= big_w and plan.rows * plan.cell_mm[1] >= big_h
    assert plan.landscape == (size == "A0")  # A0 takes landscape A4s, A1 fewer portrait ones
    pages = PdfReader(io.BytesIO(cut.content)).pages
    assert len(pages) == 1 + plan.count
    for page in pages:
        width, height = (float(v) / MM for v in page.mediabox.upper_right)
        assert sorted((round(width), round(height))) == [210, 297]

    def text(page: int) -> str:
        (tmp_path / "cut.pdf").write_bytes(cut.content)
        args = ["pdftotext", "-f", str(page), "-l", str(page), str(tmp_path / "cut.pdf"), "-"]
        return subprocess.run(args, capture_output=True, text=True, check=True).stdout

    assembly = text(1)
    assert "分幅拼贴图" in assembly and f"= {plan.count} 张 A4" in assembly
    assert "制图日期" in text(2)  # the title block lies on the top-left sheet …
    assert "第 1 行 第 2 列" in text(3)
    last = text(1 + plan.count)
    assert "城阳街道挂图 ·" in last and f"{plan.count}/{plan.count}" in last
    assert "制图日期" not in last  # … and not on the bottom-right one: each sheet holds its part only

    # Sheet (row 2, column 2), printed and cropped to its printable area, is that part of the whole.
    dpi = 30
    px = dpi / 25.4
    big = np.asarray(render(whole.content, tmp_path, 1, dpi), dtype=float)
    row, column = 1, 1
    sheet = np.asarray(render(cut.content, tmp_path, 2 + row * plan.columns + column, dpi), dtype=float)
    m = round(plan.margin_mm * px)
    w, h = round((plan.cell_mm[0] + plan.overlap_mm) * px), round((plan.cell_mm[1] + plan.overlap_mm) * px)
    printed = sheet[m : m + h, m : m + w]

    def part(dx_mm: float) -> np.ndarray:
        x0, y0 = round((column * plan.cell_mm[0] + dx_mm) * px), round(row * plan.cell_mm[1] * px)
        return big[y0 : y0 + h, x0 : x0 + w]

    assert printed.std() > 10  # there is map on it, not a blank page
    right = np.abs(printed - part(0)).mean()
    shifted = np.abs(printed - part(15)).mean()
    assert right < 6 and right < shifted / 3, (right, shifted)

    bad = client.get("/api/print", params={"size": "A0", "sheets": "A4", "format": "png"})
    assert bad.status_code == 422 and bad.json()["code"] == "sheets_need_pdf"
    small = client.get("/api/print", params={"size": "A4", "sheets": "A4"})
    assert small.status_code == 422 and small.json()["code"] == "sheets_too_big"
