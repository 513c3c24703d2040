"""OGC API – Features, the domain half: collections, CRS, queryables, schemas, CQL2 and the items query.

Everything is read from the layer declarations (``layers.base``): a collection is a layer, its
queryables are its declared fields (personal ones never), its schema the fields' kinds. The
HTTP half is ``api/routes/ogc.py``.

CRS (Part 2): features are stored in CGCS2000 (EPSG:4490) lon/lat. CRS84 (the default) is
served as stored: CGCS2000 and WGS84 agree within GPS error, as everywhere else in guatu.
EPSG:4490 and EPSG:4326 are served in their own axis order, latitude first; a CGCS2000
Gauss-Kruger zone (EPSG:4491–4554) is transformed by PostGIS and served northing first, as
EPSG defines those axes. Coordinates in degrees carry 15 decimals: a stored double survives
the JSON unchanged.

Filtering (Part 3): CQL2 text or JSON is parsed by pygeofilter and the syntax tree translated
here into SQLAlchemy expressions over the declared columns, never into SQL text. Anything the
translation does not know is refused (400, ``filter_unsupported``), and so is a filter longer
than :data:`MAX_FILTER_CHARS`, deeper than :data:`MAX_DEPTH` or with more than
:data:`MAX_NODES` nodes or :data:`MAX_IN_VALUES` values in one IN list.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import JSON, Text, and_, cast, false, func, literal_column, not_, or_, select, true
from sqlalchemy.orm import Session

import shapely
from geoalchemy2.shape import from_shape
from pyproj import CRS
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from layers.base import REGISTRY, VALID_FROM, VALID_TO, Field, Layer
from layers.features import properties_json
from layers.settings import layer_settings
from spatial.crs import DeclaredCrs, gauss_kruger_family, to_storage
from spatial.errors import MalformedInput
from spatial.geometry import STORAGE_SRID

CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
EPSG = "http://www.opengis.net/def/crs/EPSG/0/"
STORAGE_CRS = f"{EPSG}{STORAGE_SRID}"
WGS84_SRID = 4326

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
COUNT_CAP = 100_000
"""numberMatched of a narrowed request is counted up to this many; beyond it, it is left out (unknown).
An unnarrowed request is counted exactly (one index scan): GDAL takes a layer's size from it."""
MAX_FILTER_CHARS = 8_000
MAX_DEPTH = 20
MAX_NODES = 200
MAX_IN_VALUES = 500
MAX_VERTICES = 10_000
"""Vertices of a geometry literal in a filter, at most."""

DEGREE_DECIMALS = 15
METRE_DECIMALS = 4

CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables-query-parameters",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/advanced-comparison-operators",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions",
    "http://www.opengis.net/spec/cql2/1.0/conf/spatial-functions",
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/create-replace-delete",
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/update",
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/features",
]
"""The conformance classes claimed: each one is exercised by tests/test_ogc.py."""

FILTER_LANGS = ("cql2-text", "cql2-json", "cql-text")
"""``cql-text`` is what GDAL ≤ 3.6 sends (its CQL is valid CQL2 text): read as cql2-text."""


def _bad(code: str, zh: str, en: str, field: str) -> MalformedInput:
    return MalformedInput.one(code, zh, en, field=field)


# --------------------------------------------------------------------------- CRS


@dataclass(frozen=True)
class OutCrs:
    """A CRS a client may ask for: its URI, its SRID and whether its first axis is latitude or northing."""

    uri: str
    srid: int
    northing_first: bool

    @property
    def degrees(self) -> bool:
        """Tell whether its coordinates are degrees."""
        return self.srid in (STORAGE_SRID, WGS84_SRID)


@lru_cache(maxsize=128)
def _northing_first(srid: int) -> bool:
    return CRS.from_epsg(srid).axis_info[0].direction.lower() in ("north", "south")


def zone_epsg(lon: float) -> int:
    """Return the CGCS2000 3° Gauss-Kruger zone (no zone prefix in eastings) whose meridian is nearest LON.

    >>> zone_epsg(120.38), zone_epsg(116.4)
    (4549, 4548)
    """
    family = [g for g in gauss_kruger_family().values() if g.width == 3 and g.zone_prefix is None]
    return min(family, key=lambda g: abs(g.central_meridian - lon)).epsg


def projected_epsg(extent: Sequence[float] | None) -> int:
    """Return the deployment's Gauss-Kruger zone: GUATU_PROJECTED_EPSG, else the zone of EXTENT's (the data's) middle.

    Without data either, the middle of the deployment's extent (GUATU_EXTENT) decides.
    """
    chosen = layer_settings().projected_epsg
    if chosen is not None:
        return chosen
    box = extent or layer_settings().extent
    return zone_epsg((box[0] + box[2]) / 2)


def crs_list(extent: Sequence[float] | None) -> list[str]:
    """Return the CRS URIs a collection of EXTENT is served in, the default first."""
    return [CRS84, STORAGE_CRS, f"{EPSG}{WGS84_SRID}", f"{EPSG}{projected_epsg(extent)}"]


def parse_crs_uri(raw: str | None, param: str) -> OutCrs:
    """Return the CRS the URI RAW names (None: CRS84), or raise ``crs_not_supported`` naming PARAM.

    Taken: CRS84, EPSG:4490, EPSG:4326 and any CGCS2000 Gauss-Kruger zone (EPSG:4491–4554), as
    ``http://www.opengis.net/def/crs/EPSG/0/N`` or ``[EPSG:N]``/``EPSG:N``.
    """
    if raw is None or not raw.strip() or raw.strip().strip("[]") in (CRS84, "OGC:CRS84", "CRS84"):
        return OutCrs(CRS84, STORAGE_SRID, False)
    text = raw.strip().strip("[]").strip("<>")
    code = text.removeprefix(EPSG).removeprefix("EPSG:")
    srid = int(code) if code.isascii() and code.isdigit() and len(code) <= 6 else None  # not ² nor ٣
    if srid is None or (srid not in (STORAGE_SRID, WGS84_SRID) and srid not in gauss_kruger_family()):
        offered = f"{CRS84}, {EPSG}{STORAGE_SRID}, {EPSG}{WGS84_SRID}, {EPSG}4491…4554"
        raise _bad(
            "crs_not_supported",
            f"不支持的坐标系 {text[:80]!r}（可用：{offered}）",
            f"CRS {text[:80]!r} is not offered (use one of {offered})",
            param,
        )
    return OutCrs(f"{EPSG}{srid}", srid, _northing_first(srid))


def geometry_sql(layer: Layer, crs: OutCrs) -> Any:
    """Return the SQL expression of LAYER's geometry as GeoJSON text in CRS (in its axis order)."""
    geom = layer.model.geom
    if crs.srid not in (STORAGE_SRID, WGS84_SRID):
        geom = func.ST_Transform(geom, crs.srid)
    if crs.northing_first:
        geom = func.ST_FlipCoordinates(geom)
    return func.ST_AsGeoJSON(geom, DEGREE_DECIMALS if crs.degrees else METRE_DECIMALS, 0)


def to_storage_geometry(geom: BaseGeometry, crs: OutCrs) -> BaseGeometry:
    """Return GEOM, given in CRS (its axis order), in CGCS2000 lon/lat."""
    if crs.northing_first:
        geom = shapely.transform(geom, lambda c: c[:, ::-1])
    if crs.degrees:
        return shapely.force_2d(geom)
    return to_storage(geom, DeclaredCrs("epsg", crs.srid, "xy"))


def feature_to_storage(feature: Any, crs: OutCrs) -> Any:
    """Return FEATURE (a request body) with its geometry moved from CRS to CGCS2000 lon/lat.

    A geometry that cannot be read is left as sent: the feature checks then name its problem.
    """
    if crs.uri == CRS84 or not isinstance(feature, Mapping) or not isinstance(feature.get("geometry"), Mapping):
        return feature
    try:
        moved = to_storage_geometry(shape(feature["geometry"]), crs)
    except Exception:  # noqa: BLE001 - shapely raises many kinds; the checks report the geometry
        return feature
    return {**feature, "geometry": orjson.loads(shapely.to_geojson(moved))}


PROJECTED_LIMIT_M = 1e8
"""Metres a Gauss-Kruger coordinate never reaches (false easting with a zone prefix: under 5e7)."""


def bbox_condition(layer: Layer, raw: str | None, crs: OutCrs) -> Any | None:
    """Return the condition keeping LAYER's features meeting the box RAW (4 numbers in CRS's axis order)."""
    if raw is None or raw == "":
        return None
    try:
        parts = [float(v) for v in raw.split(",")]
    except ValueError:
        parts = []
    if len(parts) == 6:
        parts = [parts[0], parts[1], parts[3], parts[4]]
    if len(parts) != 4 or not all(math.isfinite(v) for v in parts):
        raise _bad("bbox_invalid", "bbox 应为 4 个数字", "bbox must be 4 numbers", "bbox")
    if crs.northing_first:
        parts = [parts[1], parts[0], parts[3], parts[2]]
    x0, y0, x1, y1 = parts
    if x0 > x1 or y0 > y1:
        raise _bad("bbox_invalid", "bbox 的最小值大于最大值", "bbox minimum above its maximum", "bbox")
    if crs.degrees:
        return func.ST_Intersects(layer.model.geom, func.ST_MakeEnvelope(x0, y0, x1, y1, STORAGE_SRID))
    if max(abs(v) for v in parts) > PROJECTED_LIMIT_M:
        raise _bad("bbox_invalid", "bbox 超出投影坐标的范围", "bbox beyond the projected CRS's range", "bbox")
    box = to_storage(
        shapely.box(x0, y0, x1, y1).segmentize(max(x1 - x0, y1 - y0) / 16 or 1), DeclaredCrs("epsg", crs.srid)
    )
    return func.ST_Intersects(layer.model.geom, from_shape(box, srid=STORAGE_SRID))


# --------------------------------------------------------------------------- metadata


def queryable_fields(layer: Layer) -> list[Field]:
    """Return the fields a filter may name: every declared field but the personal ones."""
    return [f for f in layer.fields if not f.personal]


def _field_schema(f: Field) -> dict[str, Any]:
    out: dict[str, Any] = {"title": f"{f.zh} {f.en}"}
    if f.kind in ("text", "code", "enum"):
        out["type"] = "string"
        if f.kind != "enum":
            out["maxLength"] = f.max_length
    elif f.kind == "int":
        out["type"] = "integer"
    elif f.kind == "float":
        out["type"] = "number"
    else:
        out |= {"type": "string", "format": "date"}
    if f.choices:
        out["enum"] = list(f.choices)
    if f.pattern and not f.personal:
        out["pattern"] = f.pattern
    lo, hi = (f.minimum, f.maximum) if f.kind in ("int", "float") else (None, None)
    if lo is not None:
        out["minimum"] = lo
    if hi is not None:
        out["maximum"] = hi
    return out


def _geometry_schema(layer: Layer) -> dict[str, Any]:
    kinds = sorted({k.lower() for k in layer.stored})
    role = {"x-ogc-role": "primary-geometry"}
    if len(kinds) == 1:
        return {"format": f"geometry-{kinds[0]}", **role}
    return {"format": "geometry-any", **role}


def queryables(layer: Layer, url: str) -> dict[str, Any]:
    """Return LAYER's queryables (JSON Schema): its non-personal declared fields and its geometry.

    ``queryables`` (a list) repeats the names in the form older GDAL versions read.
    """
    props: dict[str, Any] = {"geometry": _geometry_schema(layer)}
    props |= {f.name: _field_schema(f) for f in queryable_fields(layer)}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": url,
        "type": "object",
        "title": f"{layer.zh} {layer.en}",
        "properties": props,
        "additionalProperties": False,
        "queryables": [{"id": name} for name in props if name != "geometry"],
    }


def _read_only() -> dict[str, Any]:
    return {
        "area_m2": {"title": "面积(m²) Area m²", "type": "number", "readOnly": True},
        "area_mu": {"title": "面积(亩) Area mu", "type": "number", "readOnly": True},
        "updated_at": {"title": "更新时间 Updated", "type": "string", "format": "date-time", "readOnly": True},
    }


def schema(layer: Layer, url: str) -> dict[str, Any]:
    """Return the schema of LAYER's features (Part 5 style: the properties, the id and the geometry by role)."""
    props: dict[str, Any] = {"id": {"type": "integer", "x-ogc-role": "id", "readOnly": True}}
    props["geometry"] = _geometry_schema(layer)
    for f in layer.fields:
        props[f.name] = _field_schema(f) | ({"x-guatu-personal": True} if f.personal else {})
    props |= _read_only() if layer.has_area else {"updated_at": _read_only()["updated_at"]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": url,
        "type": "object",
        "title": f"{layer.zh} {layer.en}",
        "properties": props,
        "required": [f.name for f in layer.fields if f.required],
    }


def feature_schema(layer: Layer, url: str) -> dict[str, Any]:
    """Return the JSON Schema of one of LAYER's GeoJSON Features (GDAL reads a layer's field types from it)."""
    flat = schema(layer, url)
    fields = {k: v for k, v in flat["properties"].items() if k not in ("id", "geometry")}
    return {
        "$schema": flat["$schema"],
        "$id": url,
        "type": "object",
        "title": flat["title"],
        "required": ["type", "geometry", "properties"],
        "properties": {
            "type": {"type": "string", "enum": ["Feature"]},
            "id": {"type": "integer"},
            "geometry": {"type": "object"},
            "properties": {"type": "object", "properties": fields, "required": flat["required"]},
        },
    }


def date_fields(layer: Layer) -> tuple[str, str | None]:
    """Return (start, end) of what ``datetime`` is compared with: valid_from/valid_to, else updated_at."""
    if layer.history:
        return VALID_FROM, VALID_TO
    return "updated_at", None


def temporal_extent(session: Session, layer: Layer) -> list[list[str | None]] | None:
    """Return the temporal extent of a versioned LAYER (its first valid_from, its last valid_to or open); else None.

    An unversioned layer has none declared (``datetime`` still narrows it by ``updated_at``):
    reading its whole table for a catalogue would cost a county's parcels each time.
    """
    if not layer.history:
        return None
    model = layer.model
    first, last, still = session.execute(
        select(
            func.min(getattr(model, VALID_FROM)),
            func.max(getattr(model, VALID_TO)),
            func.bool_or(getattr(model, VALID_TO).is_(None)),
        )
    ).one()
    if first is None:
        return None
    end = None if still or last is None else f"{last.isoformat()}T00:00:00Z"
    return [[f"{first.isoformat()}T00:00:00Z", end]]


def collection(
    layer: Layer, base: str, extent: Sequence[float] | None, temporal: Any, extra: list[dict[str, Any]]
) -> dict[str, Any]:
    """Return the collection document of LAYER served under BASE (the /ogc URL); EXTRA links are appended."""
    here = f"{base}/collections/{layer.id}"
    out: dict[str, Any] = {
        "id": layer.id,
        "title": f"{layer.zh} {layer.en}",
        "description": layer.description_zh or f"{layer.zh}（{layer.en}）",
        "x-guatu-title": {"zh": layer.zh, "en": layer.en},
        "itemType": "feature",
        "crs": crs_list(extent),
        "storageCrs": STORAGE_CRS,
        "links": [
            {"rel": "self", "href": here, "type": "application/json", "title": "本集合 this collection"},
            {"rel": "items", "href": f"{here}/items", "type": "application/geo+json", "title": "要素 features"},
            {
                "rel": "http://www.opengis.net/def/rel/ogc/1.0/queryables",
                "href": f"{here}/queryables",
                "type": "application/schema+json",
                "title": "可查询字段 queryables",
            },
            {
                "rel": "http://www.opengis.net/def/rel/ogc/1.0/schema",
                "href": f"{here}/schema",
                "type": "application/schema+json",
                "title": "模式 schema",
            },
            *(
                {
                    "rel": rel,  # GDAL ≤ 3.6 looks for "describedBy", IANA registers "describedby"
                    "href": f"{here}/schema?form=feature",
                    "type": "application/schema+json",
                    "title": "GeoJSON 要素模式 feature schema",
                }
                for rel in ("describedby", "describedBy")
            ),
            *extra,
        ],
    }
    spatial: dict[str, Any] = {"crs": CRS84}
    if extent:
        spatial["bbox"] = [list(extent)]
    out["extent"] = {"spatial": spatial}
    if temporal:
        out["extent"]["temporal"] = {
            "interval": temporal,
            "trs": "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian",
        }
    return out


def collections_in_order() -> list[Layer]:
    """Return the layers served as collections, in the map's order."""
    return sorted(REGISTRY.values(), key=lambda layer: layer.order)


# --------------------------------------------------------------------------- datetime and properties


def _instant(text: str, end: bool) -> dt.datetime | None:
    text = text.strip()
    if text in ("..", ""):
        return None
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            moment = dt.datetime.combine(day, dt.time.max if end else dt.time.min)
        else:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise _bad(
            "datetime_invalid",
            "datetime 应为 RFC 3339 时刻或区间（如 2024-01-01/2024-12-31、../2024-01-01）",
            "datetime must be an RFC 3339 instant or interval (2024-01-01/2024-12-31, ../2024-01-01)",
            "datetime",
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def datetime_condition(layer: Layer, raw: str | None) -> Any | None:
    """Return the condition of ``datetime`` RAW: an instant or interval met by the feature's dates.

    A versioned layer's feature is in force from valid_from until valid_to (excluded); another
    layer's feature is dated by its last change (updated_at).
    """
    if raw is None or raw == "":
        return None
    if len(raw) > 100:
        raise _bad("datetime_invalid", "datetime 过长", "datetime too long", "datetime")
    parts = raw.split("/")
    if len(parts) > 2 or (len(parts) == 2 and parts[0].strip() in ("..", "") and parts[1].strip() in ("..", "")):
        if len(parts) == 2:
            return true()
        raise _bad("datetime_invalid", "datetime 区间格式不正确", "datetime interval malformed", "datetime")
    start = _instant(parts[0], end=False)
    end = _instant(parts[-1], end=True) if len(parts) == 2 else _instant(parts[0], end=False)
    if len(parts) == 1 and len(parts[0].strip()) == 10:
        end = _instant(parts[0], end=True)
    if start is not None and end is not None and start > end:
        raise _bad(
            "datetime_invalid", "datetime 区间起点晚于终点", "datetime interval ends before it starts", "datetime"
        )
    first, last = date_fields(layer)
    model = layer.model
    conditions = []
    if last is None:
        column = getattr(model, first)
        if start is not None:
            conditions.append(column >= start)
        if end is not None:
            conditions.append(column <= end)
    else:
        since, until = getattr(model, first), getattr(model, last)
        if end is not None:
            conditions.append(since <= end.date())
        if start is not None:
            conditions.append(or_(until.is_(None), until > start.date()))
    return and_(*conditions) if conditions else true()


def property_conditions(layer: Layer, params: Mapping[str, str]) -> list[Any]:
    """Return equality conditions of the query parameters naming LAYER's declared filter fields (``?use_status=闲置``).

    A parameter naming a personal field is refused (``property_personal``), one naming another
    declared field that is no filter is refused too (``property_not_filterable``: use ``filter``).
    """
    out = []
    for f in layer.fields:
        if f.name not in params:
            continue
        if f.personal:
            raise _personal(f, f.name)
        if not f.filter:
            raise _bad(
                "property_not_filterable",
                f"“{f.zh}”不能作为查询参数，请用 filter（CQL2）",
                f"{f.name} is no query parameter: use filter (CQL2)",
                f.name,
            )
        out.append(_compare(layer, f, "=", params[f.name], f.name))
    return out


def _personal(f: Field, where: str) -> MalformedInput:
    return _bad(
        "property_personal",
        f"“{f.zh}”是个人信息，不能用于筛选",
        f"{f.name} is personal data and cannot be filtered on",
        where,
    )


# --------------------------------------------------------------------------- CQL2


def _json_depth(value: Any) -> int:
    """Return the nesting depth of a parsed JSON value (iteratively: no recursion on hostile input)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH * 4:
            return depth
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _bbox_as_polygon(value: Any) -> Any:
    """Return the CQL2 JSON VALUE with each ``{"bbox": [minx, miny, maxx, maxy]}`` made a GeoJSON polygon.

    pygeofilter 0.4 reads a JSON bbox in the order of an ECQL ENVELOPE (west, east, south, north).
    Called on a document whose depth is already bounded.
    """
    if isinstance(value, list):
        return [_bbox_as_polygon(v) for v in value]
    if not isinstance(value, dict):
        return value
    box = value.get("bbox")
    if len(value) == 1 and isinstance(box, list) and len(box) in (4, 6):
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in box):
            return value
        x0, y0, x1, y1 = box if len(box) == 4 else (box[0], box[1], box[3], box[4])
        ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
        return {"type": "Polygon", "coordinates": [ring]}
    return {k: _bbox_as_polygon(v) for k, v in value.items()}


def _paren_depth(text: str) -> int:
    """Return how deep the brackets of CQL2 TEXT nest, quoted text aside."""
    deepest = depth = 0
    quoted = False
    for char in text:
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif not quoted and char == ")":
            depth -= 1
    return deepest


def parse_filter(text: str | None, lang: str | None) -> Any | None:
    """Return the pygeofilter syntax tree of TEXT in LANG (default cql2-text), or raise ``filter_invalid``."""
    if text is None or not text.strip():
        return None
    lang = (lang or "cql2-text").strip().lower()
    if lang not in FILTER_LANGS:
        raise _bad(
            "filter_lang_unsupported",
            f"不支持的 filter-lang {lang[:30]!r}（可用：cql2-text、cql2-json）",
            f"filter-lang {lang[:30]!r} is not offered (cql2-text, cql2-json)",
            "filter-lang",
        )
    if len(text) > MAX_FILTER_CHARS:
        raise _bad(
            "filter_too_large",
            f"筛选条件过长（上限 {MAX_FILTER_CHARS} 字符）",
            f"filter longer than {MAX_FILTER_CHARS} characters",
            "filter",
        )
    try:
        if lang == "cql2-json":
            from pygeofilter.parsers.cql2_json import parse as parse_json

            document = orjson.loads(text)
            if _json_depth(document) > MAX_DEPTH * 4:
                raise _too_deep()
            return parse_json(_bbox_as_polygon(document))
        if _paren_depth(text) > MAX_DEPTH * 2:
            raise _too_deep()
        from pygeofilter.parsers.cql2_text import parse as parse_text

        return parse_text(text)
    except MalformedInput:
        raise
    except RecursionError:
        raise _too_deep() from None
    except Exception as exc:  # noqa: BLE001 - lark and pygeofilter raise many kinds; each means "cannot read"
        said = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise _bad(
            "filter_invalid", f"筛选条件无法解析：{said}", f"cannot parse the filter: {said}", "filter"
        ) from None


def _too_deep() -> MalformedInput:
    return _bad(
        "filter_too_complex",
        f"筛选条件过于复杂（至多 {MAX_NODES} 个节点、{MAX_DEPTH} 层嵌套）",
        f"filter too complex (at most {MAX_NODES} nodes, {MAX_DEPTH} levels)",
        "filter",
    )


def _unsupported(what: str) -> MalformedInput:
    return _bad(
        "filter_unsupported",
        f"不支持的筛选运算：{what[:60]}",
        f"filter operation not supported: {what[:60]}",
        "filter",
    )


GEOMETRY_NAMES = ("geometry", "geom")

_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "=": lambda a, b: a == b,
    "<>": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _value(f: Field, value: Any, where: str) -> Any:
    """Return VALUE as field F's column takes it, or raise ``filter_type_mismatch``."""
    ok: Any = None
    if f.kind in ("text", "code", "enum") and isinstance(value, str):
        ok = value
    elif f.kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        ok = value if -(2**31) <= value < 2**31 else None
    elif f.kind == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        ok = float(value) if math.isfinite(value) else None
    elif f.kind == "date":
        if isinstance(value, dt.datetime):
            ok = value.date()
        elif isinstance(value, dt.date):
            ok = value
        elif isinstance(value, str):
            try:
                ok = dt.date.fromisoformat(value.strip()[:10])
            except ValueError:
                ok = None
    if ok is None:
        raise _bad(
            "filter_type_mismatch",
            f"“{f.zh}”不能与 {str(value)[:40]!r} 比较（字段类型 {f.kind}）",
            f"{f.name} ({f.kind}) cannot be compared with {str(value)[:40]!r}",
            where,
        )
    return ok


def _compare(layer: Layer, f: Field, op: str, value: Any, where: str) -> Any:
    column = getattr(layer.model, f.name)
    if isinstance(value, str) and f.kind in ("int", "float"):
        try:
            value = int(value) if f.kind == "int" else float(value)
        except ValueError:
            pass
    return _COMPARE[op](column, _value(f, value, where))


class _Translator:
    """Translate a pygeofilter syntax tree into a SQLAlchemy condition over one layer's declared columns."""

    def __init__(self, layer: Layer, crs: OutCrs) -> None:
        self.layer = layer
        self.crs = crs
        self.nodes = 0

    def field(self, node: Any) -> Field:
        from pygeofilter import ast

        if not isinstance(node, ast.Attribute):
            raise _unsupported(type(node).__name__)
        name = str(node.name)
        if name not in self.layer.field_names:
            offered = ", ".join(f.name for f in queryable_fields(self.layer))
            raise _bad(
                "filter_unknown_property",
                f"{self.layer.zh}没有可查询字段 {name[:40]!r}（可用：{offered}）",
                f"{self.layer.en} has no queryable {name[:40]!r} (queryables: {offered})",
                "filter",
            )
        f = self.layer.field(name)
        if f.personal:
            raise _personal(f, "filter")
        return f

    def __call__(self, node: Any, depth: int = 0) -> Any:
        from pygeofilter import ast

        self.nodes += 1
        if depth > MAX_DEPTH or self.nodes > MAX_NODES:
            raise _too_deep()
        if isinstance(node, ast.And | ast.Or):
            parts = [self(node.lhs, depth + 1), self(node.rhs, depth + 1)]
            return and_(*parts) if isinstance(node, ast.And) else or_(*parts)
        if isinstance(node, ast.Not):
            return not_(self(node.sub_node, depth + 1))
        if isinstance(node, bool):
            return true() if node else false()
        if isinstance(node, ast.Include):
            return false() if node.not_ else true()
        if isinstance(node, ast.Comparison):
            return self.comparison(node)
        if isinstance(node, ast.Like):
            return self.like(node)
        if isinstance(node, ast.In):
            return self.in_list(node)
        if isinstance(node, ast.Between):
            f = self.field(node.lhs)
            column = getattr(self.layer.model, f.name)
            cond = column.between(_value(f, node.low, "filter"), _value(f, node.high, "filter"))
            return not_(cond) if node.not_ else cond
        if isinstance(node, ast.IsNull):
            f = self.field(node.lhs)
            column = getattr(self.layer.model, f.name)
            return column.is_not(None) if node.not_ else column.is_(None)
        if isinstance(node, ast.SpatialComparisonPredicate):
            return self.spatial(node)
        if isinstance(node, ast.BBox):
            return self.spatial_bbox(node)
        if isinstance(node, ast.TemporalPredicate):
            return self.temporal(node)
        raise _unsupported(type(node).__name__)

    def comparison(self, node: Any) -> Any:
        from pygeofilter import ast

        op = {
            ast.Equal: "=",
            ast.NotEqual: "<>",
            ast.LessThan: "<",
            ast.LessEqual: "<=",
            ast.GreaterThan: ">",
            ast.GreaterEqual: ">=",
        }.get(type(node))
        if op is None:
            raise _unsupported(type(node).__name__)
        lhs, rhs = node.lhs, node.rhs
        if not isinstance(lhs, ast.Attribute) and isinstance(rhs, ast.Attribute):
            lhs, rhs = rhs, lhs
            op = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}.get(op, op)
        f = self.field(lhs)
        if isinstance(rhs, ast.Attribute):
            other = self.field(rhs)
            return _COMPARE[op](getattr(self.layer.model, f.name), getattr(self.layer.model, other.name))
        if isinstance(rhs, ast.Node):
            raise _unsupported(type(rhs).__name__)
        return _COMPARE[op](getattr(self.layer.model, f.name), _value(f, rhs, "filter"))

    def like(self, node: Any) -> Any:
        f = self.field(node.lhs)
        if f.kind not in ("text", "code", "enum") or not isinstance(node.pattern, str):
            raise _bad(
                "filter_type_mismatch",
                f"“{f.zh}”不是文本，不能用 LIKE",
                f"{f.name} is not text: LIKE does not apply",
                "filter",
            )
        column = getattr(self.layer.model, f.name)
        cond = column.ilike(node.pattern, escape="\\") if node.nocase else column.like(node.pattern, escape="\\")
        return not_(cond) if node.not_ else cond

    def in_list(self, node: Any) -> Any:
        f = self.field(node.lhs)
        if len(node.sub_nodes) > MAX_IN_VALUES:
            raise _bad(
                "filter_too_large",
                f"IN 列表过长（至多 {MAX_IN_VALUES} 个值）",
                f"IN list longer than {MAX_IN_VALUES} values",
                "filter",
            )
        values = [_value(f, v, "filter") for v in node.sub_nodes]
        cond = getattr(self.layer.model, f.name).in_(values)
        return not_(cond) if node.not_ else cond

    def geometry_literal(self, node: Any) -> BaseGeometry:
        from pygeofilter import ast, values

        try:
            if isinstance(node, values.Geometry):
                geom = shape(node.geometry)
            elif isinstance(node, values.Envelope):
                geom = shapely.box(node.x1, node.y1, node.x2, node.y2)
            elif isinstance(node, ast.Function) and node.name.lower() == "bbox" and len(node.arguments) in (4, 6):
                a = [float(v) for v in node.arguments]
                geom = shapely.box(*(a if len(a) == 4 else [a[0], a[1], a[3], a[4]]))
            else:
                raise _unsupported(type(node).__name__)
            coords = shapely.get_coordinates(geom)
            if len(coords) > MAX_VERTICES or not len(coords) or not bool(shapely.is_valid_input(geom)):
                raise ValueError("too many vertices or empty")
            if not coords.size or not all(math.isfinite(v) for v in coords.ravel()):
                raise ValueError("not finite")
            moved = to_storage_geometry(geom, self.crs)
            if not bool(shapely.is_valid(moved)):
                raise ValueError("invalid")
            return moved
        except MalformedInput:
            raise
        except Exception:  # noqa: BLE001 - shapely and pyproj raise many kinds; all mean a bad literal
            raise _bad(
                "filter_geometry_invalid",
                "筛选条件中的几何无效（须为有效的 WKT/GeoJSON，顶点不超过 10000 个）",
                f"a geometry in the filter is invalid (valid WKT/GeoJSON, at most {MAX_VERTICES} vertices)",
                "filter",
            ) from None

    def spatial(self, node: Any) -> Any:
        from pygeofilter import ast

        lhs, rhs = node.lhs, node.rhs
        swapped = isinstance(rhs, ast.Attribute) and not isinstance(lhs, ast.Attribute)
        if swapped:
            lhs, rhs = rhs, lhs
        if not isinstance(lhs, ast.Attribute) or str(lhs.name) not in GEOMETRY_NAMES:
            raise _bad(
                "filter_unknown_property",
                "空间条件须作用于 geometry",
                "a spatial condition applies to geometry",
                "filter",
            )
        literal = from_shape(self.geometry_literal(rhs), srid=STORAGE_SRID)
        geom = self.layer.model.geom
        name = type(node).__name__
        if swapped and name in ("GeometryWithin", "GeometryContains"):
            name = "GeometryContains" if name == "GeometryWithin" else "GeometryWithin"
        functions = {
            "GeometryIntersects": func.ST_Intersects,
            "GeometryDisjoint": func.ST_Disjoint,
            "GeometryContains": func.ST_Contains,
            "GeometryWithin": func.ST_Within,
            "GeometryTouches": func.ST_Touches,
            "GeometryCrosses": func.ST_Crosses,
            "GeometryOverlaps": func.ST_Overlaps,
            "GeometryEquals": func.ST_Equals,
        }
        if name not in functions:
            raise _unsupported(name)
        return functions[name](geom, literal)

    def spatial_bbox(self, node: Any) -> Any:
        from pygeofilter import ast

        if not isinstance(node.lhs, ast.Attribute) or str(node.lhs.name) not in GEOMETRY_NAMES:
            raise _unsupported("BBOX")
        box = shapely.box(node.minx, node.miny, node.maxx, node.maxy)
        moved = to_storage_geometry(box, self.crs)
        return func.ST_Intersects(self.layer.model.geom, from_shape(moved, srid=STORAGE_SRID))

    def temporal(self, node: Any) -> Any:
        f = self.field(node.lhs)
        if f.kind != "date" or isinstance(node.rhs, list | tuple):
            raise _unsupported(type(node).__name__)
        column = getattr(self.layer.model, f.name)
        day = _value(f, node.rhs, "filter")
        ops = {"TimeAfter": column > day, "TimeBefore": column < day, "TimeEquals": column == day}
        if type(node).__name__ not in ops:
            raise _unsupported(type(node).__name__)
        return ops[type(node).__name__]


def filter_condition(layer: Layer, text: str | None, lang: str | None, crs: OutCrs) -> Any | None:
    """Return the SQLAlchemy condition of the CQL2 filter TEXT (in LANG, geometries in CRS) on LAYER, or None."""
    tree = parse_filter(text, lang)
    if tree is None:
        return None
    return _Translator(layer, crs)(tree)


# --------------------------------------------------------------------------- items


@dataclass
class Page:
    """One page of items: the features (GeoJSON text each), the matched count if known, the last id."""

    features: list[str]
    matched: int | None
    ids: list[int]


def _feature_sql(layer: Layer, crs: OutCrs) -> Any:
    model = layer.model
    feature = func.json_build_object(
        literal_column("'type'"),
        literal_column("'Feature'"),
        literal_column("'id'"),
        model.id,
        literal_column("'geometry'"),
        cast(geometry_sql(layer, crs), JSON),
        literal_column("'properties'"),
        properties_json(layer),
    )
    return cast(feature, Text)


def items(
    session: Session,
    layer: Layer,
    conditions: list[Any],
    crs: OutCrs,
    *,
    limit: int,
    offset: int = 0,
    after: int | None = None,
) -> Page:
    """Return one page of LAYER's features meeting CONDITIONS, in id order.

    AFTER (the last id of the page before: keyset paging) costs the same on page 1 and page
    10,000; OFFSET skips rows the database still reads. The count is exact when nothing
    narrows the layer, else counted up to :data:`COUNT_CAP` (None beyond); counted on the first page only
    (a cursor page leaves it out: a client paging through a county would have it counted again each time).
    """
    model = layer.model
    where = list(conditions)
    if after is not None:
        where.append(model.id > after)
    # The page's ids first: rows skipped by OFFSET are never built into JSON (the outer query builds LIMIT rows).
    page = select(model.id).where(*where).order_by(model.id).limit(limit).offset(offset).subquery()
    query = select(model.id, _feature_sql(layer, crs)).join(page, model.id == page.c.id).order_by(model.id)
    rows = session.execute(query).all()
    matched = count(session, layer, conditions) if after is None else None  # said once, on the first page
    return Page([row[1] for row in rows], matched, [int(row[0]) for row in rows])


def count(session: Session, layer: Layer, conditions: list[Any]) -> int | None:
    """Return how many of LAYER's features meet CONDITIONS: exact without any, else up to COUNT_CAP (None beyond)."""
    model = layer.model
    if not conditions:
        return int(session.execute(select(func.count()).select_from(model)).scalar_one())
    capped = select(model.id).where(*conditions).limit(COUNT_CAP + 1).subquery()
    found = int(session.execute(select(func.count()).select_from(capped)).scalar_one())
    return None if found > COUNT_CAP else found


def item(session: Session, layer: Layer, fid: int, crs: OutCrs) -> tuple[str, int] | None:
    """Return (GeoJSON text, version) of feature FID of LAYER in CRS, or None."""
    model = layer.model
    row = session.execute(select(_feature_sql(layer, crs), model.version).where(model.id == fid)).first()
    return (row[0], int(row[1])) if row else None


def feature_collection(page: Page, links: list[dict[str, Any]], stamp: str) -> Iterator[bytes]:
    """Yield the FeatureCollection of PAGE in pieces, features spliced in as the database wrote them."""
    head: dict[str, Any] = {"type": "FeatureCollection"}
    if page.matched is not None:
        head["numberMatched"] = page.matched
    head |= {"numberReturned": len(page.features), "timeStamp": stamp, "links": links}
    yield orjson.dumps(head)[:-1] + b',"features":['
    for n, text in enumerate(page.features):
        yield (b"," if n else b"") + text.encode()
    yield b"]}"
