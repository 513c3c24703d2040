"""The wall map (挂图): a printable PDF or PNG of a scope, drawn on the server without a browser.

Title block (unit, scope, date), legend, scale bar, north arrow and grid labels, with the
styling the map page uses, in a local transverse Mercator so that the scale bar is true.
Chinese text is set in Noto Sans CJK (Debian ``fonts-noto-cjk``).
"""

from __future__ import annotations

import datetime as dt
import io
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
# Text is text: a title or a grid name holding "$" must print as written, never as mathtext.
matplotlib.rcParams["text.parse_math"] = False

from matplotlib import font_manager  # noqa: E402
from matplotlib.collections import PatchCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import FancyArrow, PathPatch, Rectangle  # noqa: E402
from matplotlib.path import Path as MplPath  # noqa: E402
from pypdf.generic import ArrayObject, DecodedStreamObject, DictionaryObject, FloatObject, NameObject  # noqa: E402

import shapely  # noqa: E402
from shapely.geometry.base import BaseGeometry  # noqa: E402

from layers import REGISTRY  # noqa: E402 - importing the package registers every layer
from layers.base import Layer  # noqa: E402
from spatial.topology import LocalMetric  # noqa: E402

PAPER_MM = {"A0": (1189, 841), "A1": (841, 594), "A2": (594, 420), "A3": (420, 297), "A4": (297, 210)}
"""Landscape sheet sizes (width, height) in millimetres."""

FONT_FILES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
)


@dataclass
class PrintLayer:
    """A layer to print (by id: plain data a worker process can be handed) and its features in the scope."""

    layer_id: str
    features: list[tuple[BaseGeometry, dict[str, Any]]]

    @property
    def layer(self) -> Layer:
        """Return the layer's declaration."""
        return REGISTRY[self.layer_id]


def _plain(text: str) -> str:
    """Return TEXT as it is printed: controls and invisible format marks (a bidi override) dropped, tabs a space."""
    return "".join(" " if c == "\t" else c for c in text if c == "\n" or unicodedata.category(c) not in ("Cc", "Cf"))


@lru_cache(maxsize=2)
def _font(bold: bool = False) -> font_manager.FontProperties:
    path = Path(FONT_FILES[1 if bold else 0])
    if path.exists():
        return font_manager.FontProperties(fname=str(path))
    return font_manager.FontProperties(family="sans-serif", weight="bold" if bold else "normal")


def _path(geom: BaseGeometry) -> MplPath | None:
    """Return a matplotlib path of a (multi)polygon, holes included."""
    vertices: list[Any] = []
    codes: list[Any] = []
    for poly in shapely.get_parts(geom):
        if poly.geom_type != "Polygon" or poly.is_empty:
            continue
        for ring in (poly.exterior, *poly.interiors):
            coords = list(ring.coords)
            vertices.extend(coords)
            codes.extend([MplPath.MOVETO] + [MplPath.LINETO] * (len(coords) - 2) + [MplPath.CLOSEPOLY])
    return MplPath(vertices, codes) if vertices else None


def _nice_length(metres: float) -> float:
    """Return a round length (1, 2 or 5 × 10^k metres) close to METRES."""
    exponent = math.floor(math.log10(max(metres, 1e-9)))
    for step in (5, 2, 1):
        if step * 10**exponent <= metres:
            return float(step * 10**exponent)
    return float(10**exponent)


def render_wall_map(
    layers: Sequence[PrintLayer],
    *,
    title: str,
    scope_label: str,
    size: str = "A3",
    fmt: str = "pdf",
    day: dt.date | None = None,
    frame: BaseGeometry | None = None,
) -> bytes:
    """Return the wall map of LAYERS as PDF or PNG bytes, showing FRAME (the scope) when given."""
    width_mm, height_mm = PAPER_MM[size]
    fig = Figure(figsize=(width_mm / 25.4, height_mm / 25.4))
    scale = width_mm / 420  # text sizes follow the sheet (A3 is 1)
    everything = [g for pl in layers for g, _ in pl.features]
    metric = LocalMetric.around(everything or [shapely.Point(120.4, 36.3)])
    ax = fig.add_axes((0.03, 0.05, 0.72, 0.82))
    ax.set_aspect("equal")
    ax.set_axis_off()
    legend: list[tuple[str, str, str]] = []  # colour, edge, label
    labels = []
    for pl in layers:
        style, layer = pl.layer.style, pl.layer
        patches, faces, edges, widths = [], [], [], []
        seen: dict[str, str] = {}
        for geom, props in pl.features:
            value = props.get(style.by) if style.by else None
            colour = style.colors.get(str(value), style.default)
            seen.setdefault(str(value) if value is not None else layer.zh, colour)
            path = _path(metric.to_m(geom)) if geom.geom_type != "Point" else None
            if geom.geom_type == "Point":
                x, y = metric.to_m(geom).coords[0]
                ax.plot([x], [y], "o", color=colour, markersize=3 * scale, markeredgecolor="#111827")
                continue
            if path is None:
                continue
            patches.append(PathPatch(path))
            faces.append(colour if style.fill else "none")
            edges.append(colour if not style.fill or value == style.emphasis else "#374151")
            widths.append((2.5 if value == style.emphasis else style.weight * 0.6) * scale)
            if layer.id == "grids":
                centre = metric.to_m(geom.representative_point())
                labels.append((centre.x, centre.y, _plain(f"{props.get('name') or ''}\n{props.get('code')}")))
        if patches:
            collection = PatchCollection(
                patches, facecolors=faces, edgecolors=edges, linewidths=widths, alpha=None, zorder=layer.order
            )
            if style.fill:
                collection.set_alpha(min(1.0, style.fill_opacity + 0.3))
            if style.dash:
                collection.set_linestyle("--")
            ax.add_collection(collection)
        for value, colour in seen.items():
            face = colour if style.fill else "none"
            legend.append((face, colour, f"{layer.zh} {value}" if value != layer.zh else layer.zh))
    for x, y, text in labels:
        ax.text(
            x, y, text, ha="center", va="center", fontsize=4.5 * scale, fontproperties=_font(), zorder=200, clip_on=True
        )
    ax.autoscale_view()
    if frame is not None and not frame.is_empty:  # the scope, with a margin; neighbours give context
        fx0, fy0, fx1, fy1 = metric.to_m(frame).bounds
        pad = 0.05 * max(fx1 - fx0, fy1 - fy0)
        ax.set_xlim(fx0 - pad, fx1 + pad)
        ax.set_ylim(fy0 - pad, fy1 + pad)
        ax.apply_aspect()
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    # scale bar: about a fifth of the map's width, a round number of metres
    bar = _nice_length((x1 - x0) / 5)
    bx, by = x0 + (x1 - x0) * 0.04, y0 + (y1 - y0) * 0.04
    ax.add_patch(Rectangle((bx, by), bar, (y1 - y0) * 0.008, color="#111827", zorder=300))
    shown = f"{bar / 1000:g} 公里 km" if bar >= 1000 else f"{bar:g} 米 m"
    ax.text(bx, by + (y1 - y0) * 0.015, shown, fontsize=7 * scale, fontproperties=_font(), zorder=300)
    # north arrow (the map is drawn with north up: a transverse Mercator around the scope)
    nx, ny = x1 - (x1 - x0) * 0.05, y1 - (y1 - y0) * 0.12
    ax.add_patch(FancyArrow(nx, ny, 0, (y1 - y0) * 0.07, width=(x1 - x0) * 0.006, color="#111827", zorder=300))
    ax.text(nx, ny + (y1 - y0) * 0.085, "北 N", ha="center", fontsize=9 * scale, fontproperties=_font(True))
    # title block and legend on the right
    title = _plain(title)
    fig.text(0.03, 0.93, title, fontsize=20 * scale, fontproperties=_font(True))
    day = day or dt.date.today()
    fig.text(
        0.03,
        0.895,
        _plain(f"{scope_label}    制图日期 {day.isoformat()}    guatu 挂图"),
        fontsize=9 * scale,
        fontproperties=_font(),
    )
    side = fig.add_axes((0.78, 0.05, 0.2, 0.82))
    side.set_axis_off()
    side.text(0.0, 1.0, "图例 Legend", fontsize=12 * scale, fontproperties=_font(True), va="top")
    step = min(0.045, 0.9 / max(len(legend), 1))
    for i, (face, edge, label) in enumerate(legend):
        top = 0.94 - i * step
        side.add_patch(Rectangle((0.0, top - step * 0.7), 0.12, step * 0.6, facecolor=face, edgecolor=edge))
        side.text(0.16, top - step * 0.4, label, fontsize=7.5 * scale, fontproperties=_font(), va="center")
    side.set_xlim(0, 1)
    side.set_ylim(0, 1)
    out = io.BytesIO()
    if fmt == "png":
        dpi = 150 if size in ("A4", "A3") else 72
        fig.savefig(out, format="png", dpi=dpi, facecolor="white")
    else:
        with matplotlib.rc_context({"pdf.fonttype": 42}):
            fig.savefig(out, format="pdf", facecolor="white", metadata={"Title": title, "Creator": "guatu"})
    return out.getvalue()


MM = 72 / 25.4
"""PDF points per millimetre."""


@dataclass(frozen=True)
class SheetPlan:
    """How a big sheet is cut into small ones: columns × rows of cells, each printed with a margin
    (printers cannot print to the edge) and an overlap strip to glue on its right and bottom."""

    big: str
    small: str
    landscape: bool
    columns: int
    rows: int
    cell_mm: tuple[float, float]
    margin_mm: float
    overlap_mm: float

    @property
    def count(self) -> int:
        """Return the number of small sheets."""
        return self.columns * self.rows

    @property
    def page_mm(self) -> tuple[float, float]:
        """Return the small sheet's (width, height) in millimetres, as printed."""
        w, h = PAPER_MM[self.small]
        return (w, h) if self.landscape else (h, w)


def plan_sheets(big: str, small: str = "A4", margin_mm: float = 10, overlap_mm: float = 10) -> SheetPlan:
    """Return the fewest small sheets (either orientation) that cover the landscape sheet BIG.

    Each small sheet prints a cell of the big one plus OVERLAP_MM of its right and bottom
    neighbours, inside MARGIN_MM of white: trim, overlap on the dashed line, glue.
    """
    width, height = PAPER_MM[big]
    best: SheetPlan | None = None
    for landscape in (True, False):
        w, h = PAPER_MM[small] if landscape else PAPER_MM[small][::-1]
        cell = (w - 2 * margin_mm - overlap_mm, h - 2 * margin_mm - overlap_mm)
        plan = SheetPlan(
            big,
            small,
            landscape,
            math.ceil(width / cell[0] - 1e-9),
            math.ceil(height / cell[1] - 1e-9),
            cell,
            margin_mm,
            overlap_mm,
        )
        if best is None or plan.count < best.count:
            best = plan
    assert best is not None
    return best


def _marks(ax: Any, plan: SheetPlan, text: str, glue: tuple[bool, bool]) -> None:
    """Draw a small sheet's white margin, its label and the dashed glue lines on AX (millimetres)."""
    pw, ph = plan.page_mm
    m = plan.margin_mm
    ax.set_xlim(0, pw)
    ax.set_ylim(0, ph)
    ax.set_axis_off()
    ax.patch.set_alpha(0)
    for x, y, w, h in ((0, 0, pw, m), (0, ph - m, pw, m), (0, 0, m, ph), (pw - m, 0, m, ph)):
        ax.add_patch(Rectangle((x, y), w, h, facecolor="white", edgecolor="none", zorder=1))
    ax.add_patch(Rectangle((m, m), pw - 2 * m, ph - 2 * m, fill=False, edgecolor="#9ca3af", linewidth=0.3, zorder=2))
    right, below = glue  # the strips that lie under the next sheets, on the right and at the bottom
    if right:
        x = pw - m - plan.overlap_mm
        ax.plot([x, x], [m, ph - m], linestyle="--", color="#6b7280", linewidth=0.4, zorder=2)
    if below:
        y = m + plan.overlap_mm
        ax.plot([m, pw - m], [y, y], linestyle="--", color="#6b7280", linewidth=0.4, zorder=2)
    ax.text(m, ph - m / 2, text, fontsize=7, va="center", fontproperties=_font(), zorder=3)


def _assembly(
    ax: Any, plan: SheetPlan, origin_mm: tuple[float, float], fit: float, big_mm: tuple[float, float]
) -> None:
    """Draw the small sheets' outlines and numbers over the reduced big sheet."""
    ox, oy = origin_mm
    top = oy + big_mm[1] * fit
    cw, ch = plan.cell_mm[0] * fit, plan.cell_mm[1] * fit
    for row in range(plan.rows):
        for column in range(plan.columns):
            x, y = ox + column * cw, max(top - (row + 1) * ch, oy)
            w, h = min(cw, ox + big_mm[0] * fit - x), min(ch, top - row * ch - y)
            ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="#dc2626", linewidth=0.5, zorder=4))
            number = str(row * plan.columns + column + 1)
            ax.text(x + w / 2, y + h / 2, number, ha="center", va="center", color="#dc2626", fontsize=9, zorder=4)


def draw(
    layers: Sequence[PrintLayer],
    *,
    title: str,
    scope_label: str,
    size: str,
    fmt: str,
    day: dt.date,
    frame: BaseGeometry | None,
    sheets: str | None,
) -> bytes:
    """Return the finished wall map: drawn, and cut into SHEETS when asked (run in a worker process)."""
    title = _plain(title)
    data = render_wall_map(layers, title=title, scope_label=scope_label, size=size, fmt=fmt, day=day, frame=frame)
    if sheets is not None:
        data = tile_sheets(data, plan_sheets(size, sheets), title)
    return data


def tile_sheets(big_pdf: bytes, plan: SheetPlan, title: str) -> bytes:
    """Return BIG_PDF (one landscape sheet of size PLAN.big) cut into PLAN's small sheets.

    Page 1 is the assembly sheet: the whole map reduced, with each small sheet's number;
    then one page per small sheet, row by row from the top left, labelled with its row,
    column and number, with a dashed line where the next sheet is glued. The map stays
    vector and is stored once: every page shows its part of the big page (a form XObject).
    """
    from matplotlib.backends.backend_pdf import PdfPages
    from pypdf import PdfReader, PdfWriter

    big = PdfReader(io.BytesIO(big_pdf)).pages[0]
    big_w, big_h = (float(v) for v in big.mediabox.upper_right)
    pw_mm, ph_mm = plan.page_mm
    pw, ph, m = pw_mm * MM, ph_mm * MM, plan.margin_mm * MM
    cw, ch = (v * MM for v in plan.cell_mm)
    fit = min((pw - 2 * m) / big_w, (ph - 2 * m - 8 * MM) / big_h)
    ox, oy = (pw - big_w * fit) / 2, m

    # Every page's marks in one PDF from matplotlib, so that the CJK font is embedded once.
    marks = io.BytesIO()
    placements: list[bytes] = [f"q {fit:.6f} 0 0 {fit:.6f} {ox:.3f} {oy:.3f} cm /GuatuMap Do Q".encode()]
    with matplotlib.rc_context({"pdf.fonttype": 42}), PdfPages(marks) as pages:
        fig = Figure(figsize=(pw_mm / 25.4, ph_mm / 25.4))
        ax = fig.add_axes((0, 0, 1, 1))
        label = (
            f"{title} · {plan.big} 分幅拼贴图 assembly: "
            f"{plan.rows} 行 × {plan.columns} 列 = {plan.count} 张 {plan.small}"
        )
        _marks(ax, plan, label, (False, False))
        _assembly(ax, plan, (ox / MM, oy / MM), fit, (big_w / MM, big_h / MM))
        pages.savefig(fig, transparent=True)
        for row in range(plan.rows):
            for column in range(plan.columns):
                fig = Figure(figsize=(pw_mm / 25.4, ph_mm / 25.4))
                number = row * plan.columns + column + 1
                text = (
                    f"{title} · {plan.big} 第 {row + 1} 行 第 {column + 1} 列 (row {row + 1}, column {column + 1}) · "
                    f"{number}/{plan.count} · 虚线处与相邻图幅重叠粘贴 (glue the next sheet on the dashed line)"
                )
                _marks(fig.add_axes((0, 0, 1, 1)), plan, text, (column < plan.columns - 1, row < plan.rows - 1))
                pages.savefig(fig, transparent=True)
                # the cell's top-left corner of the big page lands on the sheet's top-left margin
                tx, ty = m - column * cw, ph - m - (big_h - row * ch)
                placements.append(f"q 1 0 0 1 {tx:.3f} {ty:.3f} cm /GuatuMap Do Q".encode())
    overlays = PdfReader(io.BytesIO(marks.getvalue())).pages

    writer = PdfWriter()
    the_map = _form(writer, big)
    for placement, overlay in zip(placements, overlays, strict=True):
        page = writer.add_blank_page(pw, ph)
        xobjects = DictionaryObject(
            {NameObject("/GuatuMap"): the_map, NameObject("/GuatuMarks"): _form(writer, overlay)}
        )
        page[NameObject("/Resources")] = DictionaryObject({NameObject("/XObject"): xobjects})
        content = DecodedStreamObject()
        content.set_data(placement + b" q /GuatuMarks Do Q")
        page[NameObject("/Contents")] = writer._add_object(content)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _form(writer: Any, page: Any) -> Any:
    """Add PAGE to WRITER as a form XObject (drawn by reference, stored once); return its reference."""
    form = DecodedStreamObject()
    form.set_data(page.get_contents().get_data())
    form.update(
        {
            NameObject("/Type"): NameObject("/XObject"),
            NameObject("/Subtype"): NameObject("/Form"),
            NameObject("/BBox"): ArrayObject([FloatObject(float(v)) for v in page.mediabox]),
            NameObject("/Resources"): page["/Resources"].clone(writer),
        }
    )
    return writer._add_object(form.flate_encode())
