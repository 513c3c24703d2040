"""Upload templates of a layer as GeoJSON and GeoPackage: its fields, their types and choices, and the example feature.

The Excel template is :func:`layers.workbook.write_template`. These two serve surveyors who
work in a desktop GIS: open the template, draw, fill in the attributes, upload. Field names
are the layer's own, so the upload maps them as they are.
"""

from __future__ import annotations

import datetime as dt
import functools
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import orjson

import shapely
from pyproj import CRS

from layers.base import Field, Layer, declared_layer
from layers.workbook import field_rules
from spatial.geometry import STORAGE_SRID

EXAMPLE_PLACE = (120.396, 36.307)
"""Where the example feature lies (城阳区, lon/lat CGCS2000): inside the default extent; the user deletes it."""
EXAMPLE_SIZE = 0.0005
"""The example polygon's side in degrees (~50 m)."""


def fields_description(layer: Layer) -> list[dict[str, Any]]:
    """Return what each field of LAYER holds: name, labels, type, whether required, choices and rules."""
    return [
        {
            **f.described(),
            "pattern": f.pattern,
            "max_length": f.max_length if f.kind in ("text", "code") else None,
            "aliases": list(f.aliases) or None,
            "rules": field_rules(f),
        }
        for f in layer.fields
    ]


def example_geometry(layer: Layer) -> dict[str, Any]:
    """Return the example feature's geometry: a point, or a small square, at EXAMPLE_PLACE."""
    x, y = EXAMPLE_PLACE
    if "Point" in layer.accepts:
        return {"type": "Point", "coordinates": [x, y]}
    d = EXAMPLE_SIZE
    ring = [[x, y], [x + d, y], [x + d, y + d], [x, y + d], [x, y]]
    if "Polygon" in layer.accepts:
        return {"type": "Polygon", "coordinates": [ring]}
    return {"type": "MultiPolygon", "coordinates": [[ring]]}


def example_properties(layer: Layer) -> dict[str, Any]:
    """Return the example feature's properties, every field present (None where the example has no value)."""
    return {f.name: layer.example.get(f.name) for f in layer.fields}


def write_geojson_template(layer: Layer) -> bytes:
    """Return LAYER's GeoJSON template: the example feature, and a ``fields`` member describing every field."""
    return _geojson(layer.id, layer.module)


@functools.lru_cache(maxsize=32)
def _geojson(layer_id: str, module: str) -> bytes:
    layer = declared_layer(layer_id, module)
    body = {
        "type": "FeatureCollection",
        "name": f"{layer.zh} {layer.en}",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::4490"}},
        "description": f"{layer.zh}导入模板：示例要素请删除后填写；fields 列出每个字段的含义、类型和取值 "
        f"({layer.en} template: delete the example feature; `fields` describes every field)",
        "fields": fields_description(layer),
        "features": [{"type": "Feature", "geometry": example_geometry(layer), "properties": example_properties(layer)}],
    }
    return orjson.dumps(body, option=orjson.OPT_INDENT_2)


def _column(f: Field, value: Any) -> tuple[Any, Any]:
    """Return the example's VALUE of F as a one-row column of the GeoPackage, and its null mask."""
    empty = value is None
    if f.kind == "int":
        return np.array([0 if empty else value], dtype=np.int32), np.array([empty])
    if f.kind == "float":
        return np.array([0.0 if empty else value], dtype=np.float64), np.array([empty])
    if isinstance(value, dt.date):  # text, as the uploads read a date ("2021-03-01")
        value = value.isoformat()
    return np.array([None if empty else str(value)], dtype=object), None


def write_gpkg_template(layer: Layer) -> bytes:
    """Return LAYER's GeoPackage template: a layer with its fields and the example feature, and a ``fields`` table."""
    return _gpkg(layer.id, layer.module)


@functools.lru_cache(maxsize=32)
def _gpkg(layer_id: str, module: str) -> bytes:
    from pyogrio.raw import write

    layer = declared_layer(layer_id, module)
    props = example_properties(layer)
    columns = [_column(f, props[f.name]) for f in layer.fields]
    geometry = shapely.geometry.shape(example_geometry(layer))
    if layer.stored == ("MultiPolygon",) and geometry.geom_type == "Polygon":
        geometry = shapely.MultiPolygon([geometry])
    wkb = np.array([shapely.to_wkb(geometry)], dtype=object)
    crs = CRS.from_epsg(STORAGE_SRID).to_wkt()
    described = fields_description(layer)
    names = ["name", "zh", "en", "kind", "required", "choices", "rules"]
    table = [
        np.array([d["name"] for d in described], dtype=object),
        np.array([d["zh"] for d in described], dtype=object),
        np.array([d["en"] for d in described], dtype=object),
        np.array([d["kind"] for d in described], dtype=object),
        np.array([int(d["required"]) for d in described], dtype=np.int32),
        np.array(["、".join(d["choices"] or []) for d in described], dtype=object),
        np.array([d["rules"] for d in described], dtype=object),
    ]
    with tempfile.TemporaryDirectory(prefix="guatu-template-") as folder:
        path = Path(folder) / f"{layer.id}.gpkg"
        write(
            str(path),
            wkb,
            [c for c, _ in columns],
            [f.name for f in layer.fields],
            field_mask=[m for _, m in columns],
            layer=layer.id,
            driver="GPKG",
            geometry_type=geometry.geom_type,
            crs=crs,
        )
        write(str(path), None, table, names, layer="fields", driver="GPKG", append=True)
        return path.read_bytes()


GUIDE_BEGIN = "<!-- fields:begin (generated: python -m layers.templates docs/surveyor-guide.md) -->"
GUIDE_END = "<!-- fields:end -->"
_KINDS = {"text": "文本", "code": "编码", "enum": "选项", "int": "整数", "float": "数字", "date": "日期"}


def guide_fields(layers: list[Layer]) -> str:
    """Return the surveyor guide's tables of every field of LAYERS (between its markers), from the declarations."""
    out = [GUIDE_BEGIN, ""]
    for layer in layers:
        out.append(f"### {layer.zh} {layer.en}（`{layer.id}`）")
        out.append("")
        out.append("| 字段 Field | 中文名 | English | 类型 | 必填 | 规则与取值 | 别名 Aliases |")
        out.append("|---|---|---|---|---|---|---|")
        for f in layer.fields:
            aliases = "、".join(f"`{a}`" for a in f.aliases)
            rules = field_rules(f).replace("|", "\\|")
            required = "是" if f.required else ""
            out.append(f"| `{f.name}` | {f.zh} | {f.en} | {_KINDS[f.kind]} | {required} | {rules} | {aliases} |")
        out.append("")
    out.append(GUIDE_END)
    return "\n".join(out)


def rewrite_guide(path: Path, layers: list[Layer]) -> bool:
    """Put the generated field tables into the guide at PATH (between its markers); return whether it changed."""
    text = path.read_text(encoding="utf-8")
    start, end = text.index(GUIDE_BEGIN), text.index(GUIDE_END) + len(GUIDE_END)
    fresh = text[:start] + guide_fields(layers) + text[end:]
    if fresh != text:
        path.write_text(fresh, encoding="utf-8")
    return fresh != text


if __name__ == "__main__":  # python -m layers.templates docs/surveyor-guide.md
    import sys

    import layers  # noqa: F401 - every layer registered
    from layers.base import REGISTRY

    ordered = sorted((x for x in REGISTRY.values() if x.module.startswith("layers.")), key=lambda x: (x.order, x.id))
    changed = rewrite_guide(Path(sys.argv[1]), ordered)
    sys.stdout.write("updated\n" if changed else "up to date\n")
