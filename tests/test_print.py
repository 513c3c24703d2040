"""The wall map export: a PDF whose first page, rendered by pdftoppm, carries the title and the legend."""

from __future__ import annotations

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


def test_png_and_bad_requests(client: TestClient, session: Session) -> None:
    demo.load(session)
    session.flush()
    png = client.get("/api/print", params={"scope": "370214001005", "size": "A4", "format": "png", "layers": "grids"})
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert client.get("/api/print", params={"size": "B5"}).status_code == 422
    assert client.get("/api/print", params={"layers": "nope"}).json()["code"] == "layer_not_found"
    assert client.get("/api/print", params={"scope": "370214001099"}).json()["code"] == "scope_not_found"
