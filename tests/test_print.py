"""The wall map export: a PDF whose first page, rendered by pdftoppm, carries the title and the legend."""

from __future__ import annotations

import ast
import datetime as dt
import io
import itertools
import subprocess
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import text
from sqlalchemy.orm import Session

from layers import REGISTRY, demo


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
    assert "筛选 地块 状态 闲置；地类 07" in words  # said in the title block, with the layer it narrows
    assert "地块 闲置" in words and "地块 自用" not in words  # only idle parcels are on the sheet
    assert "网格 基础网格" in words  # the other layers are not filtered
    bad = client.get("/api/print", params={**scope, "land_use": "_"})
    assert bad.status_code == 422 and bad.json()["code"] == "filter_invalid"


def test_each_printed_layer_follows_its_own_filter(client: TestClient, session: Session, tmp_path: Path) -> None:
    """As on the map: the shops' and the revenue points' filters narrow them on the sheet, not only the parcels'."""
    demo.load(session)
    session.flush()
    asked = {"scope": "370214001001", "size": "A4", "layers": "grids,shops,revenue_points"}
    everything = pdf_text(client.get("/api/print", params=asked).content, tmp_path)
    assert "商铺 在营" in everything and "公共收益点位 在营" in everything
    narrowed = {**asked, "narrow_shops": "status=闲置", "narrow_revenue_points": "status=待招租&kind=停车位"}
    response = client.get("/api/print", params=narrowed)
    assert response.status_code == 200, response.text
    words = pdf_text(response.content, tmp_path)
    assert "商铺 闲置" in words and "商铺 在营" not in words  # the legend lists what is drawn
    assert "公共收益点位 待招租" in words and "公共收益点位 在营" not in words
    assert "筛选 商铺 状态 闲置；公共收益点位 状态 待招租；类型 停车位" in words
    wrong = client.get("/api/print", params={**asked, "narrow_shops": "kind=停车位"})  # shops have no kind
    assert wrong.status_code == 422 and wrong.json()["code"] == "filter_invalid"
    assert client.get("/api/print", params={**asked, "narrow_nope": "status=x"}).json()["code"] == "layer_not_found"


def test_png_and_bad_requests(client: TestClient, session: Session) -> None:
    demo.load(session)
    session.flush()
    png = client.get("/api/print", params={"scope": "370214001005", "size": "A4", "format": "png", "layers": "grids"})
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert client.get("/api/print", params={"size": "B5"}).status_code == 422
    assert client.get("/api/print", params={"layers": "nope"}).json()["code"] == "layer_not_found"
    assert client.get("/api/print", params={"scope": "370214001099"}).json()["code"] == "scope_not_found"


def render(pdf: bytes, folder: Path, page: int, dpi: float) -> Image.Image:
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
    # Sheets that hold nothing are left out, said in a header, the PDF's metadata and on the assembly sheet.
    said = cut.headers["x-guatu-sheets-left-out"]
    left_out = [int(n) for n in said.split(",") if n]
    kept = [n for n in range(1, plan.count + 1) if n not in left_out]
    reader = PdfReader(io.BytesIO(cut.content))
    assert reader.metadata is not None and reader.metadata["/GuatuSheetsLeftOut"] == said
    pages = reader.pages
    assert len(pages) == 1 + len(kept)
    for page in pages:
        width, height = (float(v) / MM for v in page.mediabox.upper_right)
        assert sorted((round(width), round(height))) == [210, 297]

    (tmp_path / "cut.pdf").write_bytes(cut.content)
    texts = subprocess.run(
        ["pdftotext", str(tmp_path / "cut.pdf"), "-"], capture_output=True, text=True, check=True
    ).stdout.split("\f")
    assembly = texts[0]
    assert "分幅拼贴图" in assembly and f"印 {len(kept)} 张 A4" in assembly
    if left_out:
        assert f"空白未印 {len(left_out)} 张" in assembly and ", ".join(map(str, left_out)) in assembly
    for page, number in enumerate(kept, start=1):  # each printed sheet keeps its row, column and number
        row, column = divmod(number - 1, plan.columns)
        assert f"第 {row + 1} 行 第 {column + 1} 列" in texts[page] and f"{number}/{plan.count}" in texts[page]
    assert kept[0] == 1 and "制图日期" in texts[1]  # the title block lies on the top-left sheet …
    assert "城阳街道挂图 ·" in texts[len(kept)] and "制图日期" not in texts[len(kept)]  # … not on the last one

    dpi = 25.4  # a pixel a millimetre: the sheets and cells fall on whole pixels
    px = dpi / 25.4
    big = np.asarray(render(whole.content, tmp_path, 1, dpi), dtype=float)
    for number in range(1, plan.count + 1):  # a left-out sheet's part of the whole is white; a printed one's is not
        row, column = divmod(number - 1, plan.columns)
        x0, y0 = round(column * plan.cell_mm[0] * px), round(row * plan.cell_mm[1] * px)
        cell = big[y0 : y0 + round(plan.cell_mm[1] * px), x0 : x0 + round(plan.cell_mm[0] * px)]
        assert (cell.min() > 245) == (number in left_out), (number, cell.min())

    # Sheet (row 2, column 2), printed and cropped to its printable area, is that part of the whole.
    row, column = 1, 1
    sheet = np.asarray(
        render(cut.content, tmp_path, 1 + kept.index(row * plan.columns + column + 1) + 1, dpi), dtype=float
    )
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


# --- the wall map's looks: face, legend, shops, north arrow, blank sheets, one style source -------------------

COMMUNITY = "370214001006"
STREET = "370214001"


def gathered(session: Session, scope: str, layer_ids: Sequence[str]) -> tuple[list[Any], str, Any]:
    """Return the print's layers, scope label and frame as the route reads them (on the test's session)."""
    from api.routes.printing import _gather
    from spatial.work import CancelToken

    chosen = sorted((REGISTRY[i] for i in layer_ids), key=lambda layer: layer.order)
    printed, label, frame, _ = _gather(
        lambda: nullcontext(session), CancelToken(), scope, None, chosen, {}, dt.date(2026, 1, 5)
    )
    return printed, label, frame


def sc_face(path: str, family: str) -> Any:
    """Return the face of the .ttc at PATH named FAMILY (the reference, found here independently of the code)."""
    from matplotlib import font_manager, ft2font

    faces = [ft2font.FT2Font(path, face_index=i).family_name for i in range(ft2font.FT2Font(path).num_faces)]
    return font_manager.FontPath(path, faces.index(family))


def glyph(font: Any, char: str) -> np.ndarray:
    """Return CHAR drawn large in FONT (a FontProperties) as a grey array."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1), dpi=100)
    FigureCanvasAgg(fig)
    fig.text(0.5, 0.5, char, fontproperties=font, fontsize=60, ha="center", va="center")
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., 0].astype(int)  # type: ignore[attr-defined]


def test_the_wall_map_is_set_in_the_simplified_chinese_face(
    client: TestClient, session: Session, tmp_path: Path
) -> None:
    from matplotlib import font_manager

    from web import printing

    demo.load(session)
    session.flush()
    pdf = client.get("/api/print", params={"scope": COMMUNITY, "size": "A4", "title": "骨直说"}).content
    (tmp_path / "map.pdf").write_bytes(pdf)
    listing = subprocess.run(["pdffonts", str(tmp_path / "map.pdf")], capture_output=True, text=True, check=True)
    fonts = [line.split()[0] for line in listing.stdout.splitlines()[2:]]
    assert fonts and all("NotoSansCJKsc-" in name for name in fonts), fonts  # not NotoSansCJKjp-: the .ttc's first
    for bold, path in enumerate(printing.FONT_FILES):
        resolved = font_manager.fontManager._find_fonts_by_props(printing._font(bool(bold)))
        assert font_manager.get_font(resolved).family_name == "Noto Sans CJK SC"
        sc = font_manager.FontProperties(fname=sc_face(path, "Noto Sans CJK SC"))
        jp = font_manager.FontProperties(fname=sc_face(path, "Noto Sans CJK JP"))
        for char in "骨直":  # their Simplified Chinese and Japanese forms differ
            printed = glyph(printing._font(bool(bold)), char)
            assert np.abs(glyph(jp, char) - glyph(sc, char)).mean() > 2  # the comparison can tell them apart
            assert np.array_equal(printed, glyph(sc, char)), char


def lab(colour: str) -> np.ndarray:
    """Return COLOUR (#rrggbb) in CIELAB (D65)."""
    rgb = np.array([int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear
    xyz /= np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_legend_colours_differ_across_layers_and_every_drawn_layer_is_in_the_legend(
    client: TestClient, session: Session, tmp_path: Path
) -> None:
    colours = [(layer.id, value, colour) for layer in REGISTRY.values() for value, colour in layer.style.colors.items()]
    for (a, value_a, colour_a), (b, value_b, colour_b) in itertools.combinations(colours, 2):
        if a != b:  # ΔE76 ≥ 15: told apart at a glance on paper, not only unequal
            distance = np.linalg.norm(lab(colour_a) - lab(colour_b))
            assert distance >= 15, (a, value_a, colour_a, b, value_b, colour_b, distance)
    from web.printing import compose

    demo.load(session)
    session.flush()
    every = sorted(REGISTRY, key=lambda i: REGISTRY[i].order)
    words = pdf_text(
        client.get("/api/print", params={"scope": STREET, "size": "A3", "layers": ",".join(every)}).content,
        tmp_path,
    )
    printed, label, frame = gathered(session, STREET, every)
    legend = compose(printed, title="t", scope_label=label, size="A3", frame=frame).legend
    for pl in printed:
        layer = REGISTRY[pl.layer_id]
        assert pl.features, pl.layer_id  # the demo street holds every layer
        rows = [row for row in legend if row.layer_id == layer.id]
        values = {str(props[layer.style.by]) for _, props in pl.features}
        assert {row.label for row in rows} == {f"{layer.zh} {value}" for value in values}
        assert all(row.look.colour == layer.style.colors[row.label.split(" ", 1)[1]] for row in rows)
        for row in rows:
            assert row.label in words  # on the sheet
    assert len({row.look.colour for row in legend}) == len(legend)


def test_shops_print_in_their_status_colours(client: TestClient, session: Session) -> None:
    demo.load(session)
    session.flush()
    shops, parcels = REGISTRY["shops"], REGISTRY["parcels"]
    found = session.execute(
        text(
            f"SELECT DISTINCT ON (s.{shops.style.by}) ST_X(s.geom), ST_Y(s.geom), s.{shops.style.by}, "
            f"p.{parcels.style.by} FROM {shops.table} s JOIN {parcels.table} p ON ST_Contains(p.geom, s.geom) "
            f"WHERE ST_GeometryType(s.geom) = 'ST_Point' ORDER BY s.{shops.style.by}, s.code"
        )
    ).all()
    assert {row[2] for row in found} == set(shops.style.colors)  # a shop of every status, on a parcel
    for x, y, status, under in found:
        d = 0.0002  # about 20 m each way: the shop is at the centre of the map
        params = {"bbox": f"{x - d},{y - d},{x + d},{y + d}", "size": "A4", "format": "png", "layers": "parcels,shops"}
        response = client.get("/api/print", params=params)
        assert response.status_code == 200
        page = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"), dtype=float)
        height, width, _ = page.shape
        cx, cy = round(width * (0.03 + 0.72 / 2)), round(height * (1 - (0.05 + 0.82 / 2)))  # the map's centre
        pixel = np.median(page[cy - 1 : cy + 2, cx - 1 : cx + 2].reshape(-1, 3), axis=0)
        hexed = "#" + "".join(f"{round(v):02x}" for v in pixel)
        shop = np.linalg.norm(lab(hexed) - lab(shops.style.colors[status]))
        parcel = np.linalg.norm(lab(hexed) - lab(parcels.style.colors[under]))
        assert shop < 20 and shop < parcel, (status, under, hexed, shop, parcel)


def test_the_north_label_and_its_arrow_do_not_overlap(session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrow

    from web.printing import draw

    demo.load(session)
    session.flush()
    saved: list[Figure] = []
    savefig = Figure.savefig

    def keep(self: Figure, *args: Any, **kwargs: Any) -> Any:
        saved.append(self)
        return savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)  # watches the figure the print saves; changes nothing
    printed, label, frame = gathered(session, STREET, ["divisions", "grids"])
    for size in ("A4", "A3", "A0"):
        common = {"title": "t", "scope_label": label, "day": dt.date(2026, 1, 5), "frame": frame, "sheets": None}
        draw(printed, size=size, fmt="png", **common)
        fig = saved.pop()
        renderer = FigureCanvasAgg(fig).get_renderer()
        texts = [t for ax in fig.axes for t in ax.texts if t.get_text().startswith("北")]
        arrows = [p for ax in fig.axes for p in ax.patches if isinstance(p, FancyArrow)]
        assert len(texts) == 1 and len(arrows) == 1
        words, arrow = texts[0].get_window_extent(renderer), arrows[0].get_window_extent(renderer)
        assert not words.overlaps(arrow), (size, words, arrow)
        assert words.y0 >= arrow.y1  # above its tip
        assert abs((words.x0 + words.x1) / 2 - (arrow.x0 + arrow.x1) / 2) < 2  # centred on it


def test_the_printing_code_names_no_layer_and_no_field() -> None:
    """Printing reads which layers print, their order, colours and labels from the declarations only."""
    names = {layer.id for layer in REGISTRY.values()} | {layer.table for layer in REGISTRY.values()}
    names |= {name for layer in REGISTRY.values() for name in layer.field_names}
    # `scope` is the print's own query parameter (a street, community or grid code), as on every map route.
    allowed = {"scope"}
    root = Path(__file__).resolve().parent.parent
    for module in ("web/printing.py", "api/routes/printing.py"):
        tree = ast.parse((root / module).read_text())
        said = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}
        modules = {
            (alias.asname or alias.name)
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        said |= {  # attributes of the code's own objects (a module's, like math.floor, are not a field)
            node.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and not (isinstance(node.value, ast.Name) and node.value.id in modules)
        }
        said |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        said |= {node.arg for node in ast.walk(tree) if isinstance(node, ast.arg | ast.keyword) and node.arg}
        assert not (said & names) - allowed, (module, sorted((said & names) - allowed))


def test_a_wall_map_at_a_numeric_scale_with_parcel_numbers_and_figures_beside_it(
    client: TestClient, session: Session, tmp_path: Path
) -> None:
    from api.routes.printing import _gather
    from spatial.work import CancelToken
    from web.printing import MAP_BOX_TABLES, PAPER_MM, SideTable, compose

    demo.load(session)
    session.flush()
    chosen = sorted((REGISTRY[i] for i in ("grids", "parcels")), key=lambda layer: layer.order)
    printed, label, frame, tables = _gather(
        lambda: nullcontext(session), CancelToken(), COMMUNITY, None, chosen, {}, dt.date(2026, 1, 5), True
    )
    assert [t.title for t in tables] == [
        "统计表 Statistics",
        "各网格工作进度 Campaign progress per grid",
        "待办问题 Open problems",
    ]
    parcels = next(p for p in printed if p.layer_id == "parcels")
    numbers = {str(props["code"])[-5:] for _, props in parcels.features}
    for at, numbered in ((2000, True), (50000, False)):
        wall = compose(printed, title="t", scope_label=label, size="A3", frame=frame, tables=tables, at_scale=at)
        assert wall.scale == at
        ax = wall.figure.axes[0]
        (x0, x1), width_mm = ax.get_xlim(), MAP_BOX_TABLES[2] * PAPER_MM["A3"][0]
        assert (x1 - x0) / width_mm * 1000 == pytest.approx(at, rel=1e-6)  # the printed scale is the true one
        texts = [t.get_text() for a in wall.figure.axes for t in a.texts]
        assert f"比例尺 1:{at:,}".replace(",", " ") in texts
        shown = numbers & set(texts)
        assert (len(shown) > 10) if numbered else not shown, at
        assert "统计表 Statistics" in texts and "古庙头社区第1网格" in texts  # the progress table names its grids
    fitted = compose(printed, title="t", scope_label=label, size="A3", frame=frame)
    assert fitted.scale in {m * 10**k for m in (1000, 1250, 1500, 2000, 2500, 5000) for k in range(4)}
    # a long table is cut with its remainder said, never drawn over the sheet's edge
    long = SideTable("问题清单 Problems", ("编号", "问题"), tuple((f"WT-{i}", "占道") for i in range(200)))
    wall = compose(printed, title="t", scope_label=label, size="A4", frame=frame, tables=[long])
    said = [t.get_text() for a in wall.figure.axes for t in a.texts if "more" in t.get_text()]
    assert said and said[0].startswith("…另有")
    answer = client.get("/api/print", params={"scope": COMMUNITY, "size": "A4", "figures": "true", "scale": "2000"})
    assert answer.status_code == 200
    words = pdf_text(answer.content, tmp_path)
    assert "比例尺 1:2 000" in words and "统计表" in words
    refused = client.get("/api/print", params={"scope": COMMUNITY, "scale": "5"})
    assert refused.status_code == 422
