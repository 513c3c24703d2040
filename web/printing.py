"""The wall map (挂图): a printable PDF or PNG of a scope, drawn on the server without a browser.

Title block (unit, scope, date), legend, scale bar, north arrow and feature labels, in a local
transverse Mercator so that the scale bar is true. Every layer is drawn as its declaration
says (``layer.style``: the field it is coloured by, its colours, the value that stands out,
fill, dash, label), with the map page's rules; this module knows no layer and no field.
Chinese text is set in Noto Sans CJK SC (Debian ``fonts-noto-cjk``), the Simplified Chinese face.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
# Text is text: a title or a grid name holding "$" must print as written, never as mathtext.
matplotlib.rcParams["text.parse_math"] = False

import numpy as np  # noqa: E402
from matplotlib import font_manager, ft2font  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.collections import PatchCollection  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import FancyArrow, PathPatch, Rectangle  # noqa: E402
from matplotlib.path import Path as MplPath  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from pypdf.generic import ArrayObject, DecodedStreamObject, DictionaryObject, FloatObject, NameObject  # noqa: E402

import shapely  # noqa: E402
from shapely.geometry.base import BaseGeometry  # noqa: E402

from layers import REGISTRY  # noqa: E402 - importing the package registers every layer
from layers.base import Layer, Style, declared_layer  # noqa: E402
from spatial.topology import LocalMetric  # noqa: E402

PAPER_MM = {"A0": (1189, 841), "A1": (841, 594), "A2": (594, 420), "A3": (420, 297), "A4": (297, 210)}
"""Landscape sheet sizes (width, height) in millimetres."""

FONT_FILES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
)
"""Debian's fonts-noto-cjk: one collection per weight, holding a JP, KR, SC, TC and HK face each."""
FONT_FAMILY = "Noto Sans CJK SC"
"""The face of the collections a wall map is set in: Simplified Chinese glyph forms (骨, 直 differ from JP's)."""
INK = "#111827"
"""Text, scale bar and north arrow."""
OUTLINE = "#374151"
"""The outline of a filled shape, as on the map page (outline-only layers and the loud value keep their colour)."""
PT_PER_PX = 0.6
"""A line weight or a marker radius declared in screen pixels, in points on an A3 sheet."""


@dataclass
class PrintLayer:
    """A layer to print (by id: plain data a worker process can be handed) and its features in the scope."""

    layer_id: str
    features: list[tuple[BaseGeometry, dict[str, Any]]]
    module: str = ""
    """The module declaring the layer (a worker process imports it if it has not met the layer)."""

    @property
    def layer(self) -> Layer:
        """Return the layer's declaration."""
        return declared_layer(self.layer_id, self.module)


@dataclass(frozen=True)
class Look:
    """How a feature is drawn: its style's colour for its value, as the map page draws it (map.js ``look``)."""

    colour: str
    face: tuple[float, float, float, float]
    edge: str
    width: float
    """Line weight in screen pixels."""

    @classmethod
    def of(cls, style: Style, value: Any) -> Look:
        """Return the look of a feature whose styled field holds VALUE."""
        colour = style.default if value is None else style.colors.get(str(value), style.default)
        loud = style.emphasis is not None and value == style.emphasis
        opacity = (min(0.85, style.fill_opacity + 0.3) if loud else style.fill_opacity) if style.fill else 0.0
        edge = colour if loud or not style.fill or style.fill_opacity < 0.2 else OUTLINE
        width = max(2.0, style.weight * 2.5) if loud else style.weight
        return cls(colour, to_rgba(colour, opacity), edge, width)


@dataclass(frozen=True)
class LegendRow:
    """A row of the legend: a layer's value as drawn."""

    layer_id: str
    label: str
    look: Look
    point: bool


@dataclass
class WallMap:
    """A wall map drawn but not saved: the figure, and what a cut into sheets (or a test) reads of it."""

    figure: Figure
    size: str
    title: str
    legend: list[LegendRow]
    north: tuple[Text, FancyArrow]
    """The north label and its arrow."""
    drawn: list[BaseGeometry] = field(default_factory=list)
    """Each drawn feature where it lies on the sheet, in millimetres from the bottom left (clipped to the map)."""
    furniture: list[tuple[float, float, float, float]] = field(default_factory=list)
    """Title block, legend, scale bar and north arrow: their boxes in millimetres (x0, y0, x1, y1)."""
    reach_mm: float = 0.0
    """How far ink reaches beyond a drawn shape: half the widest line, or a marker's radius and outline."""
    scale: int = 0
    """The denominator of the numeric scale the map is drawn at (2000: 1:2 000)."""


@dataclass(frozen=True)
class SideTable:
    """A table printed beside the map (the statistics, the open problems): plain text, a colour mark per row."""

    title: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    marks: tuple[str | None, ...] = ()
    """A colour per row drawn as a dot before it (a problem's light), or None."""
    widths: tuple[float, ...] = ()
    """The share of the table's width each column takes (equal when not given)."""


NICE_SCALES = (1, 1.25, 1.5, 2, 2.5, 5)
"""The leading digits of a printed numeric scale (1:2 000, 1:2 500, 1:5 000 …)."""
NUMBERS_AT = 5000
"""At 1:NUMBERS_AT or larger, each feature of a layer whose style says ``numbered`` carries its number."""


def nice_scale(denominator: float) -> int:
    """Return the round scale denominator at or just above DENOMINATOR (the map only ever gets smaller).

    Examples
    --------
    >>> nice_scale(1830), nice_scale(2000), nice_scale(2137), nice_scale(44_000)
    (2000, 2000, 2500, 50000)
    """
    exponent = math.floor(math.log10(max(denominator, 1)))
    for lead in (*NICE_SCALES, 10):
        value = round(lead * 10**exponent)
        if value >= denominator - 1e-6:
            return int(value)
    return int(10 ** (exponent + 1))


def scale_text(denominator: int) -> str:
    """Return a numeric scale as a Chinese map prints it (比例尺 1:2 000).

    Examples
    --------
    >>> scale_text(2000), scale_text(250000)
    ('比例尺 1:2 000', '比例尺 1:250 000')
    """
    return "比例尺 1:" + f"{denominator:,}".replace(",", " ")


@dataclass(frozen=True)
class Printed:
    """A finished print: its bytes, and the sheets of a cut left out as blank (their numbers)."""

    data: bytes
    left_out: tuple[int, ...] = ()


def _plain(text: str) -> str:
    """Return TEXT as it is printed: controls and invisible format marks (a bidi override) dropped, tabs a space."""
    return "".join(" " if c == "\t" else c for c in text if c == "\n" or unicodedata.category(c) not in ("Cc", "Cf"))


@lru_cache(maxsize=4)
def _face(path: str, family: str) -> font_manager.FontPath | None:
    """Return the face of the collection at PATH whose family is FAMILY (a .ttc holds several), if any."""
    for index in range(ft2font.FT2Font(path).num_faces):
        if ft2font.FT2Font(path, face_index=index).family_name == family:
            return font_manager.FontPath(path, index)
    return None


@lru_cache(maxsize=2)
def _font(bold: bool = False) -> font_manager.FontProperties:
    """Return the Simplified Chinese face (a bare FontProperties of the .ttc would take its first face: JP)."""
    path = Path(FONT_FILES[1 if bold else 0])
    face = _face(str(path), FONT_FAMILY) if path.exists() else None
    if face is not None:
        return font_manager.FontProperties(fname=face)
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


def _dashes(style: Style) -> Any:
    """Return the matplotlib line style of STYLE's dash ("6 4": on, off in screen pixels, whatever the weight).

    Matplotlib scales a dash pattern by the line's width (the weight in points), so the
    pattern is given in weights.
    """
    if not style.dash:
        return "solid"
    return (0, tuple(float(v) / (style.weight or 1) for v in style.dash.replace(",", " ").split()))


def _nice_length(metres: float) -> float:
    """Return a round length (1, 2 or 5 × 10^k metres) close to METRES."""
    exponent = math.floor(math.log10(max(metres, 1e-9)))
    for step in (5, 2, 1):
        if step * 10**exponent <= metres:
            return float(step * 10**exponent)
    return float(10**exponent)


def _value_order(style: Style, value: str) -> tuple[int, str]:
    """Sort key of a legend row: the declared colours' order, then values without a colour of their own."""
    declared = list(style.colors)
    return (declared.index(value), "") if value in declared else (len(declared), value)


def _draw_layer(
    ax: Any, pl: PrintLayer, metric: LocalMetric, scale: float, numbers: bool = False
) -> tuple[list[BaseGeometry], list[Any]]:
    """Draw PL's features on AX; return them in metres as drawn (outlines for an unfilled layer) and their labels.

    With NUMBERS (a large scale) a layer whose style is ``numbered`` labels each feature with its number:
    the last five characters of its key (the 宗地 or asset sequence).
    """
    layer, style = pl.layer, pl.layer.style
    if not pl.features:
        return [], []
    geoms = metric.to_m(np.asarray([g for g, _ in pl.features], dtype=object))
    patches, faces, edges, widths, drawn, labels = [], [], [], [], [], []
    points: dict[str, list[Any]] = {"x": [], "y": [], "face": [], "edge": [], "width": []}
    for geom, (_, props) in zip(geoms, pl.features, strict=True):
        look = Look.of(style, props.get(style.by) if style.by else None)
        if geom.geom_type == "Point":
            points["x"].append(geom.x)
            points["y"].append(geom.y)
            points["face"].append(look.face if style.fill else to_rgba(look.colour))
            points["edge"].append(look.edge)
            points["width"].append(look.width * PT_PER_PX * scale)
            drawn.append(geom)
            continue
        path = _path(geom)
        if path is None:
            continue
        patches.append(PathPatch(path))
        faces.append(look.face if style.fill else "none")
        edges.append(look.edge)
        widths.append(look.width * PT_PER_PX * scale)
        drawn.append(geom if style.fill else geom.boundary)
        text = "\n".join(str(props[f]) for f in style.label if props.get(f) not in (None, ""))
        if numbers and style.numbered and props.get(layer.key_field):
            text = str(props[layer.key_field])[-5:]
        if text:
            centre = geom.representative_point()
            labels.append((centre.x, centre.y, _plain(text)))
    if patches:
        collection = PatchCollection(
            patches, facecolors=faces, edgecolors=edges, linewidths=widths, linestyles=_dashes(style)
        )
        collection.set_zorder(layer.order)
        ax.add_collection(collection)
    if points["x"]:
        diameter = 2 * style.radius * PT_PER_PX * scale
        ax.scatter(
            points["x"],
            points["y"],
            s=diameter**2,
            c=points["face"],
            edgecolors=points["edge"],
            linewidths=points["width"],
            zorder=layer.order,
        )
    return drawn, labels


def _legend_rows(layers: Sequence[PrintLayer]) -> list[LegendRow]:
    """Return the legend: a row per value drawn of each layer with features on the sheet, in declared order."""
    rows = []
    for pl in layers:
        layer, style = pl.layer, pl.layer.style
        if not pl.features:
            continue
        points = any(g.geom_type == "Point" for g, _ in pl.features)
        if not style.by:
            rows.append(LegendRow(layer.id, layer.zh, Look.of(style, None), points))
            continue
        values = {props.get(style.by) for _, props in pl.features}
        for value in sorted(values, key=lambda v: _value_order(style, "" if v is None else str(v))):
            label = f"{layer.zh} {value}" if value not in (None, "") else f"{layer.zh} 未填 (blank)"
            rows.append(LegendRow(layer.id, label, Look.of(style, value), points))
    return rows


MAP_BOX = (0.03, 0.05, 0.72, 0.82)
LEGEND_BOX = (0.78, 0.05, 0.2, 0.82)
"""Where the map and the legend lie on the sheet (left, bottom, width, height as shares of it)."""
MAP_BOX_TABLES = (0.03, 0.05, 0.6, 0.82)
LEGEND_BOX_TABLES = (0.66, 0.5, 0.32, 0.37)
TABLES_BOX = (0.66, 0.05, 0.32, 0.43)
"""The same with tables beside the map: the map narrower, the legend above the tables."""


def _extent(
    metric: LocalMetric,
    everything: Sequence[BaseGeometry],
    frame: BaseGeometry | None,
    ax: Any,
    sheet_mm: tuple[float, float],
    at_scale: int | None,
) -> tuple[int, tuple[float, float, float, float]]:
    """Return the scale denominator the map is drawn at and its limits in metres (x0, y0, x1, y1).

    The frame (the scope, with a 5 % margin) or else every feature is fitted into the map's
    box at the largest round scale that holds it, or shown at AT_SCALE around its centre.
    """
    if frame is not None and not frame.is_empty:
        fx0, fy0, fx1, fy1 = metric.to_m(frame).bounds
        pad = 0.05 * max(fx1 - fx0, fy1 - fy0)
        fx0, fy0, fx1, fy1 = fx0 - pad, fy0 - pad, fx1 + pad, fy1 + pad
    elif everything:
        fx0, fy0, fx1, fy1 = shapely.total_bounds(metric.to_m(np.asarray(everything, dtype=object)))
    else:
        fx0, fy0, fx1, fy1 = -50.0, -50.0, 50.0, 50.0
    box = ax.get_position(original=True)  # the box as laid out (the active one is squeezed to the aspect)
    w_mm, h_mm = box.width * sheet_mm[0], box.height * sheet_mm[1]
    fitted = max((fx1 - fx0) / w_mm, (fy1 - fy0) / h_mm, 0.1) * 1000  # ground millimetres per paper millimetre
    denominator = at_scale or nice_scale(fitted)
    cx, cy = (fx0 + fx1) / 2, (fy0 + fy1) / 2
    half_w, half_h = denominator * w_mm / 2000, denominator * h_mm / 2000
    return denominator, (cx - half_w, cy - half_h, cx + half_w, cy + half_h)


def _fit(text: str, room: int) -> str:
    """Return TEXT cut to ROOM half-width characters (a Chinese character takes two), an ellipsis marking a cut.

    Examples
    --------
    >>> _fit("WT-2026-000001", 22), _fit("驾驶舱测试问题说明", 10)
    ('WT-2026-000001', '驾驶舱测…')
    """
    used = 0
    for i, c in enumerate(text):
        used += 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1
        if used > room:
            return text[: max(i - 1, 0)] + "…" if i else "…"
    return text


def _draw_tables(fig: Figure, tables: Sequence[SideTable], scale: float) -> Any:
    """Set TABLES one under the other beside the map; rows that do not fit are left out, and that is said."""
    side = fig.add_axes(TABLES_BOX)
    side.set_axis_off()
    side.set_xlim(0, 1)
    side.set_ylim(0, 1)
    lines = sum(len(t.rows) + 2 for t in tables)
    height_pt = TABLES_BOX[3] * fig.get_figheight() * 72
    line_pt = 6.5 * scale * 1.5  # a line of the table's text, with its leading: rows never overprint
    step = min(0.045, max(line_pt / height_pt, 0.98 / max(lines, 1)))
    top = 1.0
    for table in tables:
        side.text(0.0, top, _plain(table.title), fontsize=10 * scale, fontproperties=_font(True), va="top")
        top -= step * 1.2
        widths = table.widths or tuple(1 / len(table.header) for _ in table.header)
        starts = [sum(widths[:i]) for i in range(len(widths))]
        for x, heading in zip(starts, table.header, strict=True):
            side.text(x + 0.03, top, _plain(heading), fontsize=6.5 * scale, fontproperties=_font(True), va="top")
        top -= step
        side.plot([0, 1], [top + step * 0.1] * 2, color=OUTLINE, linewidth=0.4 * scale)
        for n, row in enumerate(table.rows):
            if top - step < 0 and n < len(table.rows):
                left = len(table.rows) - n
                side.text(
                    0.03, top, f"…另有 {left} 行 {left} more", fontsize=6 * scale, fontproperties=_font(), va="top"
                )
                top -= step
                break
            mark = table.marks[n] if n < len(table.marks) else None
            if mark:
                side.plot(
                    [0.012], [top - step * 0.35], marker="o", markersize=3.5 * scale, color=mark, linestyle="none"
                )
            for x, cell, w in zip(starts, row, widths, strict=True):
                text = _fit(_plain(cell), max(4, int(w * 100)))  # half-width characters a column holds
                side.text(x + 0.03, top, text, fontsize=6.5 * scale, fontproperties=_font(), va="top")
            top -= step
        top -= step * 0.6
    return side


def _draw_legend(
    fig: Figure, rows: Sequence[LegendRow], scale: float, where: tuple[float, float, float, float] = LEGEND_BOX
) -> Any:
    """Draw the legend on the right: each row's symbol drawn as its features are."""
    side = fig.add_axes(where)
    side.set_axis_off()
    side.set_xlim(0, 1)
    side.set_ylim(0, 1)
    side.text(0.0, 1.0, "图例 Legend", fontsize=12 * scale, fontproperties=_font(True), va="top")
    step = min(0.045, 0.9 / max(len(rows), 1))
    for i, row in enumerate(rows):
        top = 0.94 - i * step
        style = REGISTRY[row.layer_id].style  # met already: its PrintLayer came first
        width = row.look.width * PT_PER_PX * scale
        if row.point:
            diameter = 2 * style.radius * PT_PER_PX * scale
            face = row.look.face if style.fill else to_rgba(row.look.colour)
            side.plot(  # a line of one marker: its extent is the marker's (a scatter's is unbounded)
                [0.06],
                [top - step * 0.4],
                marker="o",
                linestyle="none",
                markersize=diameter,
                markerfacecolor=face,
                markeredgecolor=row.look.edge,
                markeredgewidth=width,
            )
        else:
            box = Rectangle((0.0, top - step * 0.7), 0.12, step * 0.6, facecolor=row.look.face, edgecolor=row.look.edge)
            box.set_linewidth(width)
            box.set_linestyle(_dashes(style))
            side.add_patch(box)
        side.text(0.16, top - step * 0.4, row.label, fontsize=7.5 * scale, fontproperties=_font(), va="center")
    return side


def compose(
    layers: Sequence[PrintLayer],
    *,
    title: str,
    scope_label: str,
    size: str = "A3",
    day: dt.date | None = None,
    frame: BaseGeometry | None = None,
    tables: Sequence[SideTable] = (),
    at_scale: int | None = None,
) -> WallMap:
    """Return the wall map of LAYERS (drawn in their declared order) showing FRAME (the scope) when given.

    The map is drawn at a round numeric scale (1:2 000, 1:2 500 …) printed under the scale bar:
    AT_SCALE when given (centred on the scope), else the largest round one the scope fits in. At
    1:NUMBERS_AT or larger, numbered layers carry each feature's number. TABLES (the statistics,
    the open problems) are set beside the map, under the legend.
    """
    width_mm, height_mm = PAPER_MM[size]
    fig = Figure(figsize=(width_mm / 25.4, height_mm / 25.4))
    FigureCanvasAgg(fig)  # a renderer: where text lands is measured before the sheet is saved
    scale = width_mm / 420  # text sizes follow the sheet (A3 is 1)
    everything = [g for pl in layers for g, _ in pl.features]
    metric = LocalMetric.around(everything or [shapely.Point(120.4, 36.3)])
    ax = fig.add_axes(MAP_BOX_TABLES if tables else MAP_BOX)
    ax.set_aspect("equal")
    ax.set_axis_off()
    denominator, limits = _extent(metric, everything, frame, ax, (width_mm, height_mm), at_scale)
    drawn: list[BaseGeometry] = []
    labels = []
    reach_pt = 0.0
    for pl in sorted(layers, key=lambda pl: pl.layer.order):
        shapes, texts = _draw_layer(ax, pl, metric, scale, numbers=denominator <= NUMBERS_AT)
        drawn.extend(shapes)
        labels.extend(texts)
        if shapes:
            style = pl.layer.style
            widest = max(2.0, style.weight * 2.5) * PT_PER_PX * scale  # the loud value's outline is the widest
            marker = style.radius * PT_PER_PX * scale if any(g.geom_type == "Point" for g, _ in pl.features) else 0
            reach_pt = max(reach_pt, marker + widest / 2)
    # readable over any fill; a box, not a stroked outline: that would turn the PDF's text into shapes
    backing = {"boxstyle": "round,pad=0.15", "facecolor": "white", "alpha": 0.6, "edgecolor": "none"}
    for x, y, text in labels:
        ax.text(
            x,
            y,
            text,
            ha="center",
            va="center",
            fontsize=4.5 * scale,
            fontproperties=_font(),
            zorder=200,
            clip_on=True,
            bbox=backing,
        )
    ax.set_xlim(limits[0], limits[2])
    ax.set_ylim(limits[1], limits[3])
    ax.apply_aspect()
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    furniture: list[Any] = []
    # scale bar: about a fifth of the map's width, a round number of metres
    bar = _nice_length((x1 - x0) / 5)
    bx, by = x0 + (x1 - x0) * 0.04, y0 + (y1 - y0) * 0.04
    furniture.append(ax.add_patch(Rectangle((bx, by), bar, (y1 - y0) * 0.008, color=INK, zorder=300)))
    shown = f"{bar / 1000:g} 公里 km" if bar >= 1000 else f"{bar:g} 米 m"
    furniture.append(ax.text(bx, by + (y1 - y0) * 0.015, shown, fontsize=7 * scale, fontproperties=_font(), zorder=300))
    numeric = scale_text(denominator)
    furniture.append(ax.text(bx, by - (y1 - y0) * 0.008, numeric, fontsize=7 * scale, fontproperties=_font(), va="top"))
    # north arrow (the map is drawn with north up: a transverse Mercator around the scope), its label above the tip
    nx, ny, length = x1 - (x1 - x0) * 0.05, y1 - (y1 - y0) * 0.14, (y1 - y0) * 0.08
    arrow = FancyArrow(nx, ny, 0, length, width=(x1 - x0) * 0.006, length_includes_head=True, color=INK, zorder=300)
    ax.add_patch(arrow)
    north = ax.annotate(
        "北 N",
        xy=(nx, ny + length),
        xytext=(0, 2 * scale),
        textcoords="offset points",
        ha="center",
        va="bottom",
        fontsize=9 * scale,
        fontproperties=_font(True),
        zorder=300,
    )
    furniture += [arrow, north]
    # title block and legend
    title = _plain(title)
    furniture.append(fig.text(0.03, 0.93, title, fontsize=20 * scale, fontproperties=_font(True)))
    day = day or dt.date.today()
    subtitle = _plain(f"{scope_label}    制图日期 {day.isoformat()}    guatu 挂图")
    furniture.append(fig.text(0.03, 0.895, subtitle, fontsize=9 * scale, fontproperties=_font()))
    legend = _legend_rows(layers)
    side = _draw_legend(fig, legend, scale, LEGEND_BOX_TABLES if tables else LEGEND_BOX)
    furniture += [*side.texts, *side.patches, *side.lines]
    if tables:
        beside = _draw_tables(fig, tables, scale)
        furniture += [*beside.texts, *beside.lines]
    wall = WallMap(fig, size, title, legend, (north, arrow), reach_mm=reach_pt * 25.4 / 72, scale=denominator)
    # where things lie on the sheet, in millimetres: what a cut into sheets keeps
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    per_px = 25.4 / fig.dpi
    for artist in furniture:
        box = artist.get_window_extent(renderer)
        wall.furniture.append((box.x0 * per_px, box.y0 * per_px, box.x1 * per_px, box.y1 * per_px))
    to_mm = ax.transData + fig.transFigure.inverted()
    sheet = np.array([width_mm, height_mm])
    position = ax.get_position()
    visible = shapely.box(
        position.x0 * width_mm, position.y0 * height_mm, position.x1 * width_mm, position.y1 * height_mm
    )
    if drawn:
        on_sheet = shapely.transform(np.asarray(drawn, dtype=object), lambda xy: to_mm.transform(xy) * sheet)
        wall.drawn = [g for g in shapely.intersection(on_sheet, visible) if not g.is_empty]
    return wall


def save(wall: WallMap, fmt: str) -> bytes:
    """Return WALL as PDF (text as text, the CJK face embedded) or PNG bytes."""
    out = io.BytesIO()
    if fmt == "png":
        dpi = 150 if wall.size in ("A4", "A3") else 72
        wall.figure.savefig(out, format="png", dpi=dpi, facecolor="white")
    else:
        with matplotlib.rc_context({"pdf.fonttype": 42}):
            wall.figure.savefig(
                out, format="pdf", facecolor="white", metadata={"Title": wall.title, "Creator": "guatu"}
            )
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
    ax: Any,
    plan: SheetPlan,
    origin_mm: tuple[float, float],
    fit: float,
    big_mm: tuple[float, float],
    left_out: Sequence[int],
) -> None:
    """Draw the small sheets' outlines and numbers over the reduced big sheet; the left-out ones greyed, crossed."""
    ox, oy = origin_mm
    top = oy + big_mm[1] * fit
    cw, ch = plan.cell_mm[0] * fit, plan.cell_mm[1] * fit
    for row in range(plan.rows):
        for column in range(plan.columns):
            x, y = ox + column * cw, max(top - (row + 1) * ch, oy)
            w, h = min(cw, ox + big_mm[0] * fit - x), min(ch, top - row * ch - y)
            number = row * plan.columns + column + 1
            if number in left_out:
                ax.add_patch(Rectangle((x, y), w, h, facecolor="#e5e7eb", edgecolor="#9ca3af", linewidth=0.4, zorder=4))
                ax.plot([x, x + w], [y, y + h], color="#9ca3af", linewidth=0.4, zorder=4)
                shown, colour = f"{number}\n空白 blank", "#6b7280"
            else:
                ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="#dc2626", linewidth=0.5, zorder=4))
                shown, colour = str(number), "#dc2626"
            ax.text(
                x + w / 2,
                y + h / 2,
                shown,
                ha="center",
                va="center",
                color=colour,
                fontsize=9,
                zorder=5,
                fontproperties=_font(),
            )


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
    tables: Sequence[SideTable] = (),
    at_scale: int | None = None,
) -> Printed:
    """Return the finished wall map: drawn, and cut into SHEETS when asked (run in a worker process)."""
    wall = compose(
        layers,
        title=_plain(title),
        scope_label=scope_label,
        size=size,
        day=day,
        frame=frame,
        tables=tables,
        at_scale=at_scale,
    )
    data = save(wall, fmt)
    if sheets is None:
        return Printed(data)
    plan = plan_sheets(size, sheets)
    left_out = blank_sheets(wall, plan)
    return Printed(tile_sheets(data, plan, wall.title, left_out), left_out)


def blank_sheets(wall: WallMap, plan: SheetPlan) -> tuple[int, ...]:
    """Return the numbers of PLAN's sheets that hold nothing of WALL: no feature, no title, legend or scale.

    A sheet holds its cell of the big sheet (the overlap strip it shares with the next
    sheet is that one's): left out when nothing drawn lies in it, nor the ink of a line or
    a marker drawn just outside it.
    """
    height = PAPER_MM[plan.big][1]
    cw, ch = plan.cell_mm
    furniture = [shapely.box(*box) for box in wall.furniture]
    tree = shapely.STRtree([*wall.drawn, *furniture])
    blank = []
    for row in range(plan.rows):
        for column in range(plan.columns):
            cell = shapely.box(column * cw, height - (row + 1) * ch, (column + 1) * cw, height - row * ch)
            if not len(tree.query(cell, predicate="dwithin", distance=wall.reach_mm + 0.5)):
                blank.append(row * plan.columns + column + 1)
    return tuple(blank)


def tile_sheets(big_pdf: bytes, plan: SheetPlan, title: str, left_out: Sequence[int] = ()) -> bytes:
    """Return BIG_PDF (one landscape sheet of size PLAN.big) cut into PLAN's small sheets, but LEFT_OUT.

    Page 1 is the assembly sheet: the whole map reduced, with each small sheet's number (the
    left-out, blank ones greyed and listed); then one page per printed sheet, row by row from
    the top left, labelled with its row, column and number, with a dashed line where the next
    sheet is glued. The map stays vector and is stored once: every page shows its part of the
    big page (a form XObject). The PDF's metadata names the left-out sheets too.
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
            f"{title} · {plan.big} 分幅拼贴图 assembly: {plan.rows} 行 × {plan.columns} 列，"
            f"印 {plan.count - len(left_out)} 张 {plan.small}" + _left_out_said(left_out)
        )
        _marks(ax, plan, label, (False, False))
        _assembly(ax, plan, (ox / MM, oy / MM), fit, (big_w / MM, big_h / MM), left_out)
        pages.savefig(fig, transparent=True)
        for row in range(plan.rows):
            for column in range(plan.columns):
                number = row * plan.columns + column + 1
                if number in left_out:
                    continue
                fig = Figure(figsize=(pw_mm / 25.4, ph_mm / 25.4))
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
    writer.add_metadata(
        {
            "/Title": title,
            "/Creator": "guatu",
            "/Subject": f"{plan.big} 分幅 {plan.small} sheets" + _left_out_said(left_out),
            "/GuatuSheetsLeftOut": ",".join(map(str, left_out)),
        }
    )
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


def _left_out_said(left_out: Sequence[int]) -> str:
    """Return how the assembly sheet lists the blank sheets left out (empty for none)."""
    if not left_out:
        return ""
    return f"；空白未印 {len(left_out)} 张 (blank, left out): " + ", ".join(map(str, left_out))


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
