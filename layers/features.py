"""Reading and writing features of any declared layer, with every rule checked first.

All writes go through :func:`check_feature`, so the API, the demo loader and later the
uploader share one set of rules. Errors are :mod:`spatial.errors` with stable codes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
import pydantic
from sqlalchemy import JSON, Text, bindparam, cast, delete, func, literal_column, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

import shapely
from geoalchemy2.shape import from_shape
from shapely.geometry.base import BaseGeometry

from layers import changes
from layers.access import SETTING_NOTE, Actor, area_of, locate_function, shown_function
from layers.base import (
    EXTRA,
    READ_ONLY,
    REGISTRY,
    Layer,
    as_shown_masked,
    looks_masked_text,
    mask_text,
)
from layers.changes import VERSION
from spatial.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    MalformedInput,
    NotFound,
    PreconditionFailed,
    Problem,
    Where,
)
from spatial.geometry import STORAGE_SRID, parse_geojson_geometry, prepare_for_storage

NOTE_CHARS = 500

MAX_LIMIT = 10_000
DEFAULT_LIMIT = 1_000

_PYDANTIC_CODES = {
    "missing": ("required", "缺少必填字段", "required field is missing"),
    "literal_error": ("enum", "取值不在允许范围内", "value is not one of the allowed values"),
    "string_pattern_mismatch": ("code_format", "编码格式不正确", "code format is wrong"),
    "string_too_long": ("too_long", "内容过长", "value is too long"),
    "extra_forbidden": ("unknown_field", "未知字段", "unknown field"),
    "greater_than_equal": ("out_of_range", "数值过小", "value is too small"),
    "less_than_equal": ("out_of_range", "数值过大", "value is too large"),
    "string_too_short": ("required", "不能为空", "must not be blank"),
    "control_character": ("invalid_text", "含有 NUL 等控制字符，不能作为文本", "holds a control character such as NUL"),
    "finite_number": ("type", "必须是有限数值", "must be a finite number"),
}
SHOWN_VALUE_CHARS = 80
_FULLWIDTH = re.compile("[\uff10-\uff19]")
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def layer_or_404(layer_id: str) -> Layer:
    """Return the layer called LAYER_ID or raise NotFound."""
    try:
        return REGISTRY[layer_id]
    except KeyError:
        raise NotFound.one(
            "layer_not_found",
            f"图层 {layer_id!r} 不存在（可用：{'、'.join(REGISTRY)}）",
            f"no layer {layer_id!r} (known: {', '.join(REGISTRY)})",
        ) from None


MAX_PROBLEMS = 20
"""Property problems listed per feature; the rest are counted (a feature may carry 100,000 unknown keys)."""


def _property_problems(layer: Layer, exc: pydantic.ValidationError, index: int | None) -> list[Problem]:
    problems = []
    errors = exc.errors()
    for err in errors[:MAX_PROBLEMS]:
        name = str(err["loc"][0]) if err["loc"] else None
        kind = err["type"]
        if err.get("input") is None and name in layer.field_names and layer.field(name).required:
            kind = "missing"  # an explicit null for a required field
        code, zh, en = _PYDANTIC_CODES.get(kind, ("type", "类型不正确", "wrong type"))
        if name is not None and _CONTROL.search(name):
            name = name.encode("unicode_escape").decode("ascii")[:SHOWN_VALUE_CHARS]
            code, zh, en = "invalid_text", "字段名含有控制字符（如 NUL）", "a field name holds a control character"
        label = layer.field(name).zh if name in layer.field_names else name
        if isinstance(err.get("input"), str) and _FULLWIDTH.search(err["input"]):
            code, zh, en = "fullwidth_digits", "含有全角数字（如“１２３”），请改为半角", "contains full-width digits"
        if code == "enum" and name in layer.field_names:
            zh += "（允许：" + "、".join(layer.field(name).choices) + "）"
        if code == "code_format" and name in layer.field_names and layer.field(name).pattern_zh:
            zh += "（应为" + layer.field(name).pattern_zh + "）"
        value = err.get("input")
        if name in layer.field_names and layer.field(name).personal and isinstance(value, str):
            value = mask_text(value)  # what was sent for a personal field is never echoed (a report is read by many)
        shown = "" if isinstance(value, dict | list) or value is None else f"：{repr(value)[:SHOWN_VALUE_CHARS]}"
        problems.append(
            Problem(
                code,
                f"字段“{label}”{zh}{shown}",
                f"field {name!r}: {en} ({err['msg'][:SHOWN_VALUE_CHARS]})",
                Where(feature_index=index, field=f"properties.{name}" if name else "properties"),
            )
        )
    if len(errors) > MAX_PROBLEMS:
        more = len(errors) - MAX_PROBLEMS
        problems.append(
            Problem(
                "more_problems",
                f"属性还有 {more:,} 个问题未列出",
                f"{more:,} more property problems not listed",
                Where(feature_index=index, field="properties"),
                details={"not_listed": more},
            )
        )
    return problems


LONLAT_CRS = {
    "urn:ogc:def:crs:OGC:1.3:CRS84",
    "urn:ogc:def:crs:OGC::CRS84",
    "EPSG:4326",
    "urn:ogc:def:crs:EPSG::4326",
    "EPSG:4490",
    "urn:ogc:def:crs:EPSG::4490",
}


def _crs_problems(feature: Mapping[str, Any], index: int | None) -> list[Problem]:
    """Refuse a legacy `crs` member naming anything but lon/lat WGS84 or CGCS2000."""
    geometry = feature.get("geometry")
    for holder in (feature, geometry if isinstance(geometry, Mapping) else {}):
        crs = holder.get("crs")
        if crs is None:
            continue
        name = crs.get("properties", {}).get("name") if isinstance(crs, Mapping) else None
        if name not in LONLAT_CRS:
            return [
                Problem(
                    "crs_not_supported",
                    f"此接口只接受 CGCS2000/WGS84 经纬度坐标，收到坐标系 {str(name)[:80]}（投影坐标请用上传功能）",
                    f"this endpoint takes CGCS2000/WGS84 lon/lat only, got CRS {str(name)[:80]}",
                    Where(feature_index=index, field="crs"),
                )
            ]
    return []


def _check_members(feature: Mapping[str, Any], index: int | None) -> None:
    """Refuse an `id` that is neither string nor number, and a malformed `bbox`."""
    fid = feature.get("id")
    if fid is not None and (isinstance(fid, bool) or not isinstance(fid, str | int | float)):
        raise MalformedInput.one(
            "feature_id_invalid",
            "要素的 id 应为字符串或数字",
            "a Feature's id must be a string or a number",
            feature_index=index,
            field="id",
        )
    geometry = feature.get("geometry")
    for holder, where in ((feature, "bbox"), (geometry if isinstance(geometry, Mapping) else {}, "geometry.bbox")):
        bbox = holder.get("bbox")
        if bbox is None:
            continue
        numbers = isinstance(bbox, list) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in bbox)
        if not numbers or len(bbox) not in (4, 6):
            raise MalformedInput.one(
                "bbox_invalid",
                "bbox 应为 4 个（或 6 个）数字",
                "bbox must be 4 (or 6) numbers",
                feature_index=index,
                field=where,
            )


def check_feature(
    session: Session | None,
    layer: Layer,
    feature: Any,
    *,
    index: int | None = None,
    locate: bool = True,
    transform: Callable[[BaseGeometry], BaseGeometry] | None = None,
) -> tuple[dict[str, Any], BaseGeometry]:
    """Return the clean properties and geometry of FEATURE, or raise with every problem.

    With LOCATE, codes that follow from the location (community, grid) are filled in
    when missing and checked against the stored frame when given. TRANSFORM converts the
    parsed geometry to CGCS2000 lon/lat (an upload's declared CRS); without it the
    feature must already be lon/lat, and a `crs` member saying otherwise is refused.
    """
    if not isinstance(feature, Mapping):
        raise MalformedInput.one(
            "not_a_feature",
            "请求体应为 GeoJSON Feature 对象",
            "body must be a GeoJSON Feature object",
            feature_index=index,
        )
    if feature.get("type") != "Feature":
        raise MalformedInput.one(
            "not_a_feature",
            f'type 应为 "Feature"，收到 {feature.get("type")!r}',
            f'type must be "Feature", got {feature.get("type")!r}',
            feature_index=index,
            field="type",
        )
    if "properties" not in feature:
        raise MalformedInput.one(
            "properties_missing",
            '要素缺少 properties 成员（无属性时应写 "properties": {} 或 null）',
            'a Feature needs a "properties" member ({} or null when it has none)',
            feature_index=index,
            field="properties",
        )
    _check_members(feature, index)
    raw_props = feature["properties"]
    raw_props = {} if raw_props is None else raw_props
    if not isinstance(raw_props, Mapping):
        raise MalformedInput.one(
            "properties_malformed",
            "properties 应为对象",
            "properties must be an object",
            feature_index=index,
            field="properties",
        )
    problems: list[Problem] = [] if transform else _crs_problems(feature, index)
    props: dict[str, Any] = {}
    try:
        model = layer.schema.model_validate({k: v for k, v in raw_props.items() if k not in READ_ONLY})
        props = model.model_dump()
    except pydantic.ValidationError as exc:
        problems.extend(_property_problems(layer, exc, index))
    geom: BaseGeometry | None = None
    try:
        parsed = parse_geojson_geometry(feature.get("geometry"))
        geom = prepare_for_storage(
            transform(parsed) if transform else parsed, allowed=layer.accepts, stored=layer.stored
        )
    except InvalidInput as exc:
        for problem in exc.problems:
            problem.where.feature_index = index
        problems.extend(exc.problems)
    if not problems:
        for rule in layer.cross_rules:
            found = rule(props)
            if found:
                code, name, zh, en = found
                problems.append(Problem(code, zh, en, Where(feature_index=index, field=f"properties.{name}")))
    if locate and not problems and geom is not None:
        assert session is not None, "locating a feature needs the database"
        hexes = shapely.to_wkb(shapely.set_srid(geom, STORAGE_SRID), hex=True, include_srid=True)
        problems.extend(locate_all(session, layer, [(index, props)], [hexes], geom.bounds).get(index, []))
    if problems or geom is None:
        raise InvalidInput(problems)
    return props, geom


def _located_units(session: Session, parent: Layer, level: str | None, hexes: Sequence[str]) -> dict[int, str]:
    """Return, per position in HEXES (geometries as hex EWKB), the code of the PARENT unit of LEVEL holding its
    largest share (one statement for the whole list)."""
    if not len(hexes):
        return {}
    # The owner's function (layers.access): every unit counts, not only those of the user's area.
    function = locate_function(parent.id, level)
    rows = session.execute(text(f"SELECT i, unit FROM {function}(CAST(:wkb AS text[]))"), {"wkb": list(hexes)}).all()
    return {int(i): str(found) for i, found in rows}


def locate_all(
    session: Session,
    layer: Layer,
    items: Sequence[tuple[int | None, dict[str, Any]]],
    hexes: Sequence[str],
    extent: Sequence[float],
) -> dict[int | None, list[Problem]]:
    """Fill or check, for every item, the codes that must agree with where its geometry lies.

    The unit holding the largest share of a geometry (the one holding a point) is its unit.
    A missing code is filled in from it; a given code that disagrees, or that is given for
    a place outside every unit of a loaded frame, is refused. Items are (feature index,
    properties), their geometries HEXES (hex EWKB) within EXTENT; the properties are
    completed in place.
    """
    problems: dict[int | None, list[Problem]] = {}
    if not items:
        return problems
    for loc in layer.locators:
        parent = REGISTRY[loc.layer]
        found_at = _located_units(session, parent, loc.level, hexes)
        frame_loaded: bool | None = None
        label = layer.field(loc.field).zh
        for position, (index, props) in enumerate(items):
            found, given = found_at.get(position), props.get(loc.field)
            if found is not None and given is None:
                props[loc.field] = found
                continue
            if given is None or given == found:
                continue
            if found is None:
                if frame_loaded is None:
                    frame_loaded = bool(session.execute(text(f"SELECT EXISTS (SELECT 1 FROM {loc.layer})")).scalar())
                if not frame_loaded:
                    continue  # the frame (e.g. the grids) is not loaded yet: nothing to check against
            where = Where(feature_index=index, field=f"properties.{loc.field}")
            if found is None:
                problem = Problem(
                    "location_outside_frame",
                    f"“{label}”为 {given}，但图形不在任何{parent.zh}内",
                    f"{loc.field} is {given} but the geometry lies in no {parent.en}",
                    where,
                )
            else:
                problem = Problem(
                    "location_mismatch",
                    f"“{label}”为 {given}，但图形位于{parent.zh} {found} 内",
                    f"{loc.field} is {given} but the geometry lies in {parent.en} {found}",
                    where,
                )
            problems.setdefault(index, []).append(problem)
    return problems


def shown_value(layer: Layer, name: str) -> Any:
    """Return the SQL expression of field NAME of a row as this user is shown it (a personal one full or masked)."""
    model = layer.model
    if name in {f.name for f in layer.fields if f.personal}:
        # Personal data (PIPL): the app role cannot read it; the owner's function shows it, full or
        # masked by the user's role and area (layers.access).
        return getattr(func, shown_function(layer))(model.id).op("->>")(literal_column(f"'{name}'"))
    return getattr(model, name)


def properties_json(layer: Layer) -> Any:
    """Return a SQL expression building each row's properties (as shown to this user) as a JSON object."""
    names = [*layer.field_names, *(("area_m2", "area_mu") if layer.has_area else ()), "updated_at"]
    pairs: list[Any] = []
    for name in names:
        pairs.extend([literal_column(f"'{name}'"), shown_value(layer, name)])
    return func.json_build_object(*pairs)


def _feature_json_columns(layer: Layer) -> Any:
    """Return a SQL expression building each row's GeoJSON Feature as text."""
    model = layer.model
    feature = func.json_build_object(
        literal_column("'type'"),
        literal_column("'Feature'"),
        literal_column("'id'"),
        model.id,
        literal_column("'version'"),
        model.version,
        literal_column("'geometry'"),
        cast(func.ST_AsGeoJSON(model.geom, 9, 0), JSON),
        literal_column("'properties'"),
        properties_json(layer),
        literal_column(f"'{EXTRA}'"),  # other attributes (其他属性): beside the properties, never sent back as one
        getattr(model, EXTRA),
    )
    return cast(feature, Text)


def parse_bbox(raw: str | None) -> tuple[float, float, float, float] | None:
    """Return the bbox 'minx,miny,maxx,maxy' as floats, or raise with code bbox_invalid."""
    if raw is None or raw == "":
        return None
    try:
        parts = tuple(float(v) for v in raw.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 4 or not all(map(_finite, parts)) or parts[0] > parts[2] or parts[1] > parts[3]:
        raise InvalidInput.one(
            "bbox_invalid",
            "bbox 应为“最小经度,最小纬度,最大经度,最大纬度”",
            "bbox must be minlon,minlat,maxlon,maxlat",
            field="bbox",
        )
    return parts[0], parts[1], parts[2], parts[3]


def _finite(value: float) -> bool:
    return value == value and abs(value) != float("inf")


def list_features(
    session: Session,
    layer: Layer,
    *,
    bbox: tuple[float, float, float, float] | None = None,
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
    narrowed: tuple[list[str], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Return a FeatureCollection (as a dict with pre-serialised features) of LAYER.

    NARROWED: SQL conditions on the layer's columns and their parameters (the map's filter).
    """
    model = layer.model
    where: list[Any] = []
    if bbox:
        where.append(func.ST_Intersects(model.geom, func.ST_MakeEnvelope(*bbox, STORAGE_SRID)))
    if narrowed and narrowed[0]:
        where.append(text(" AND ".join(f"({c})" for c in narrowed[0])).bindparams(**narrowed[1]))
    # One round trip: the window count is taken over every match, before LIMIT.
    query = select(_feature_json_columns(layer), func.count().over()).where(*where)
    result = session.execute(query.order_by(model.id).limit(limit).offset(offset)).all()
    rows = [row[0] for row in result]
    if result:
        matched = result[0][1]
    else:  # nothing on this page: count separately (offset past the end, or no match)
        matched = session.execute(select(func.count()).select_from(model).where(*where)).scalar_one()
    return {"features": rows, "numberMatched": matched, "numberReturned": len(rows)}


def feature_collection_bytes(result: Mapping[str, Any], **extra: Any) -> bytes:
    """Return the GeoJSON bytes of a list_features result, features spliced in as text."""
    head = orjson.dumps(
        {
            "type": "FeatureCollection",
            "numberMatched": result["numberMatched"],
            "numberReturned": result["numberReturned"],
            **extra,
        }
    )
    return head[:-1] + b',"features":[' + ",".join(result["features"]).encode() + b"]}"


def get_feature(session: Session, layer: Layer, fid: int) -> dict[str, Any]:
    """Return feature FID of LAYER as a GeoJSON dict, or raise NotFound."""
    row = session.execute(select(_feature_json_columns(layer)).where(layer.model.id == fid)).scalar()
    if row is None:
        raise _feature_not_found(layer, fid)
    result: dict[str, Any] = orjson.loads(row)
    return result


def _feature_not_found(layer: Layer, fid: int) -> NotFound:
    return NotFound.one(
        "feature_not_found", f"{layer.zh}中没有编号为 {fid} 的要素", f"no feature {fid} in {layer.en}", id=fid
    )


def _key_taken(session: Session, layer: Layer, props: Mapping[str, Any], fid: int | None) -> None:
    model = layer.model
    cond = [getattr(model, k) == props[k] for k in layer.key]
    if fid is not None:
        cond.append(model.id != fid)
    if session.execute(select(select(model.id).where(*cond).exists())).scalar():
        key = ", ".join(f"{k}={props[k]}" for k in layer.key)
        raise Conflict.one(
            "duplicate_key",
            f"{layer.zh}中已存在 {key}",
            f"{layer.en} already has {key}",
            field=f"properties.{layer.key[0]}",
        )


@contextmanager
def _guarded(session: Session, layer: Layer) -> Iterator[None]:
    """Make the block's changes under a savepoint and flush them; a constraint they break is a clear error.

    The savepoint must exist before the first change: SQLAlchemy flushes pending changes when
    it opens one, and a failure there would take the whole transaction down, not just them.
    """
    try:
        with session.begin_nested():
            yield
            session.flush()
    except (IntegrityError, DataError) as exc:
        raise constraint_error(layer, exc) from None


DEPENDENTS = "guatu_has_dependents"
"""The constraint name the database gives when a unit still named by others is deleted or recoded."""


def _dependents_error(layer: Layer, detail: str | None) -> Conflict:
    """Return the 409 for a unit that features of other layers still name, with their counts."""
    try:
        counts = {str(k): int(v) for k, v in orjson.loads(detail or "{}").items()}
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        counts = {}
    per_layer: dict[str, int] = {}
    for where, n in counts.items():
        name = where.split(".")[0]
        per_layer[name] = per_layer.get(name, 0) + n
    said_zh = "、".join(f"{n} 个{REGISTRY[k].zh if k in REGISTRY else k}" for k, n in per_layer.items())
    said_en = ", ".join(f"{n} {REGISTRY[k].en if k in REGISTRY else k}" for k, n in per_layer.items())
    return Conflict(
        Problem(
            "has_dependents",
            f"仍有 {said_zh} 指向该{layer.zh}：请先删除或改挂这些要素，再删除或修改它的编码",
            f"{said_en} still name this {layer.en}: delete or reassign them first",
            Where(field=f"properties.{layer.key[0]}"),
            details={"dependents": counts},
        )
    )


def constraint_error(layer: Layer, exc: IntegrityError | DataError) -> InvalidInput | Conflict:
    """Return the user-facing error for a database constraint violation."""
    if isinstance(exc, DataError):  # a value the column cannot hold; no database text leaks out
        return InvalidInput.one("value_invalid", "数据库无法保存该值", "the database cannot store a value")
    diag = getattr(exc.orig, "diag", None)
    name = getattr(diag, "constraint_name", None) or ""
    if name == DEPENDENTS:
        return _dependents_error(layer, getattr(diag, "message_detail", None))
    field = next((f for f in sorted(layer.field_names, key=len, reverse=True) if f in name), None)
    if name.startswith("uq_"):
        return Conflict.one(
            "duplicate_key",
            f"{layer.zh}中已存在相同编码",
            f"duplicate key in {layer.en}",
            field=f"properties.{layer.key[0]}",
        )
    return InvalidInput.one(
        "constraint_violation",
        f"数据不符合数据库约束 {name}",
        f"violates database constraint {name}",
        field=f"properties.{field}" if field else ("geometry" if "geom" in name else None),
    )


def looks_masked(layer: Layer, props: Mapping[str, Any]) -> list[str]:
    """Return the personal fields of PROPS whose value looks masked (holds a star or a look-alike)."""
    personal = (f.name for f in layer.fields if f.personal)
    return [name for name in personal if isinstance(props.get(name), str) and looks_masked_text(props[name])]


def masked_problem(layer: Layer, name: str, index: int | None = None) -> Problem:
    """Return the problem of a masked value that matches nothing stored: it is never written."""
    label = layer.field(name).zh
    return Problem(
        "masked_value",
        f"“{label}”是打码后的值（含 *），与库中的值不符，不能保存：请填写真实值，或原样保留打码值以保留原值",
        f"{name} holds a masked value (with *) that matches no stored value; it is never stored: "
        "send the real value, or the masked one unchanged to keep what is stored",
        Where(feature_index=index, field=f"properties.{name}"),
    )


def _keep_masked(layer: Layer, props: dict[str, Any], stored: Mapping[str, Any] | None) -> set[str]:
    """Return the personal fields PROPS sends back masked as they were shown: the stored value is kept.

    Any other masked value is refused (it would overwrite a name with stars). STORED holds
    the values as this user is shown them (masked, unless the role sees them in full); masking
    is idempotent, so either compares.
    """
    problems, kept = [], set()
    for name in looks_masked(layer, props):
        shown = stored.get(name) if stored is not None else None
        if shown and as_shown_masked(props[name]) == mask_text(shown):
            kept.add(name)  # the client sent back the masked value it was shown: the stored one stays
        else:
            problems.append(masked_problem(layer, name))
    if problems:
        raise InvalidInput(problems)
    return kept


def parse_if_match(header: str | None) -> int | None:
    """Return the version an If-Match header names (None for ``*``), or raise 412 when absent or unreadable."""
    if header is not None:
        value = header.strip()
        if value == "*":
            return None
        value = value.removeprefix("W/").strip('"')
        if value.isdigit() and len(value) < 10:
            return int(value)
    raise PreconditionFailed.one(
        "if_match_required",
        "修改前请带上所读版本（If-Match 请求头，取自读取时的 ETag），以免覆盖他人的修改",
        "send the version you read (If-Match, from the ETag) so that nobody's change is overwritten",
        field="If-Match",
    )


def _stale(layer: Layer, session: Session, fid: int, sent: int) -> PreconditionFailed:
    current = get_feature(session, layer, fid)
    return PreconditionFailed(
        Problem(
            "version_conflict",
            f"该{layer.zh}已被他人修改（您基于第 {sent} 版，当前为第 {current['version']} 版）：请对照两个版本后再保存",
            f"this feature changed since you read it (you edited version {sent}, it is now {current['version']})",
            Where(field="If-Match"),
            details={"sent": sent, "current": current["version"]},
        ),
        current,
    )


def _outside_area(layer: Layer, actor: Actor, code: str | None) -> Forbidden:
    where = code or "—"
    return Forbidden(
        Problem(
            "outside_area",
            f"该{layer.zh}位于 {where}，不在您的辖区 {actor.area or '—'} 内",
            f"this feature lies in {where}, outside your area {actor.area or '—'}",
            Where(field="geometry"),
        )
    )


def check_area(layer: Layer, actor: Actor | None, props: Mapping[str, Any]) -> None:
    """Refuse a feature that would lie outside ACTOR's area (the database would refuse it too)."""
    if actor is None or actor.is_admin:
        return
    code = area_of(layer, dict(props))
    if not actor.in_area(code):
        raise _outside_area(layer, actor, code)


def note_change(session: Session, note: Any) -> None:
    """State why the transaction's changes are made (kept in the change log with each of them)."""
    if isinstance(note, str) and note.strip():
        text_value = _CONTROL.sub(" ", note.strip())[:NOTE_CHARS]
        session.execute(text("SELECT set_config(:setting, :note, true)"), {"setting": SETTING_NOTE, "note": text_value})


def _split_feature(feature: Any) -> tuple[Any, Any]:
    """Return (FEATURE without the members guatu adds, the note it carries)."""
    if isinstance(feature, Mapping):
        note = feature.get("note")
        return {k: v for k, v in feature.items() if k not in ("note", "version")}, note
    return feature, None


def _values(layer: Layer, props: Mapping[str, Any], kept: set[str]) -> dict[str, Any]:
    return {name: props.get(name) for name in layer.field_names if name not in kept}


def create_feature(session: Session, layer: Layer, feature: Any, actor: Actor | None = None) -> dict[str, Any]:
    """Insert FEATURE into LAYER and return it as stored."""
    feature, note = _split_feature(feature)
    props, geom = check_feature(session, layer, feature)
    _keep_masked(layer, props, None)
    check_area(layer, actor, props)
    _key_taken(session, layer, props, None)
    note_change(session, note)
    table = layer.model.__table__
    values = _values(layer, props, set()) | {"geom": from_shape(geom, srid=STORAGE_SRID)}
    with _guarded(session, layer):
        fid = session.execute(insert(table).values(values).returning(table.c.id)).scalar_one()
    return get_feature(session, layer, fid)


def replace_feature(
    session: Session,
    layer: Layer,
    fid: int,
    feature: Any,
    actor: Actor | None = None,
    if_match: int | None = None,
    *,
    partial: bool = False,
) -> dict[str, Any]:
    """Replace (PUT: every field given) or change (PATCH: the fields given) feature FID; return it as stored.

    IF_MATCH is the version the client read (None: ``If-Match: *``); a stale one is a 412 with
    the stored version. The geometry is rewritten only when one is sent.
    """
    feature, note = _split_feature(feature)
    stored = get_feature(session, layer, fid)
    if if_match is not None and stored["version"] != if_match:
        raise _stale(layer, session, fid, if_match)
    sent_props = feature.get("properties") if isinstance(feature, Mapping) else None
    sent_geometry = isinstance(feature, Mapping) and feature.get("geometry") is not None
    if not partial and isinstance(sent_props, Mapping):
        missing = [name for name in layer.field_names if name not in sent_props]
        if missing:
            raise InvalidInput(
                [
                    Problem(
                        "put_incomplete",
                        f"替换（PUT）须给出全部字段，缺少“{layer.field(name).zh}”；只改部分字段请用 PATCH",
                        f"PUT replaces the whole feature: {name} is missing (use PATCH to change some fields)",
                        Where(field=f"properties.{name}"),
                    )
                    for name in missing
                ]
            )
    if partial and isinstance(feature, Mapping):
        merged = dict(stored["properties"])
        for name in READ_ONLY:
            merged.pop(name, None)
        if isinstance(sent_props, Mapping):
            merged.update(sent_props)
        feature = {**feature, "properties": merged, "geometry": feature.get("geometry") or stored["geometry"]}
    props, geom = check_feature(session, layer, feature)
    kept = _keep_masked(layer, props, stored["properties"])
    check_area(layer, actor, props)
    _key_taken(session, layer, props, fid)
    note_change(session, note)
    table = layer.model.__table__
    values = _values(layer, props, kept) | {"upload_id": None, "updated_at": func.now()}
    if sent_geometry or not partial:
        values["geom"] = from_shape(geom, srid=STORAGE_SRID)
    condition = [table.c.id == fid]
    if if_match is not None:
        condition.append(table.c.version == if_match)  # compare and set: a change in between is never lost
    with _guarded(session, layer):
        done = session.execute(update(table).where(*condition).values(values).returning(table.c.id)).first()
    if done is None:
        raise _stale(layer, session, fid, if_match or 0)
    return get_feature(session, layer, fid)


def delete_feature(
    session: Session, layer: Layer, fid: int, if_match: int | None = None, note: str | None = None
) -> None:
    """Delete feature FID of LAYER (kept in the change log, restorable), or raise NotFound / 409 / 412."""
    table = layer.model.__table__
    stored = get_feature(session, layer, fid)
    if if_match is not None and stored["version"] != if_match:
        raise _stale(layer, session, fid, if_match)
    note_change(session, note)
    condition = [table.c.id == fid] + ([table.c.version == if_match] if if_match is not None else [])
    try:
        with session.begin_nested():
            deleted = session.execute(delete(table).where(*condition).returning(table.c.id)).first()
    except IntegrityError as exc:
        raise constraint_error(layer, exc) from None
    if deleted is None:
        raise _stale(layer, session, fid, if_match or 0)


def upsert_rows(
    session: Session,
    layer: Layer,
    rows: Iterable[tuple[Mapping[str, Any], BaseGeometry]],
    *,
    batch: int = 500,
    upload_id: int | None = None,
) -> int:
    """Insert or update ROWS by natural key in batches; return how many were written.

    Rows are expected to have passed :func:`check_feature` (or to come from code that
    builds them to the same rules): the database constraints still guard every value.
    """
    table = layer.model.__table__
    written = 0
    chunk: list[dict[str, Any]] = []

    def flush_chunk() -> None:
        nonlocal written
        if not chunk:
            return
        # Stored keys are updated, the others inserted. Not ON CONFLICT DO UPDATE: PostgreSQL wants
        # SELECT on every column it sets, and the app role may not read personal fields.
        key = layer.key_field
        stored = {
            str(k)
            for k in session.execute(
                select(table.c[key]).where(table.c[key].in_([row[key] for row in chunk]))
            ).scalars()
        }
        fresh = [row for row in chunk if row[key] not in stored]
        if fresh:  # one statement executed for many rows (psycopg pipelines them)
            session.execute(insert(table).on_conflict_do_nothing(constraint=f"uq_{layer.table}_key"), fresh)
        older = [row for row in chunk if row[key] in stored]
        if older:
            names = [n for n in [*layer.field_names, "geom", "upload_id"] if n not in layer.key]
            session.execute(
                update(table)
                .where(table.c[key] == bindparam("_key"))
                .values({n: bindparam(n) for n in names} | {"updated_at": func.now()}),
                [{"_key": row[key]} | {n: row[n] for n in names} for row in older],
            )
        written += len(chunk)
        chunk.clear()

    for props, geom in rows:
        values = {name: props.get(name) for name in layer.field_names}
        values["geom"] = from_shape(geom, srid=STORAGE_SRID)
        values["upload_id"] = upload_id
        chunk.append(values)
        if len(chunk) >= batch:
            flush_chunk()
    flush_chunk()
    return written


def layer_summary(session: Session, layer: Layer) -> dict[str, Any]:
    """Return the feature count and extent (minx, miny, maxx, maxy) of LAYER."""
    model = layer.model
    count, extent = session.execute(
        select(func.count(), cast(func.ST_Extent(model.geom), Text)).select_from(model)
    ).one()
    bbox = None
    if extent:
        inner = extent[extent.index("(") + 1 : extent.index(")")]
        bbox = [float(v) for pair in inner.split(",") for v in pair.split()]
    return {"count": count, "extent": bbox}


def _props_jsonb_sql(layer: Layer, alias: str = "t") -> str:
    """Return SQL building a stored row's declared properties as jsonb, personal ones as the user is shown them."""
    personal = {f.name for f in layer.fields if f.personal}
    pairs = []
    for name in layer.field_names:
        value = f"{shown_function(layer)}({alias}.id) ->> '{name}'" if name in personal else f"{alias}.{name}"
        pairs.append(f"'{name}', {value}")
    pairs.append(f"'{VERSION}', {alias}.{VERSION}")
    return f"jsonb_build_object({', '.join(pairs)})"


def features_as_of(
    session: Session,
    layer: Layer,
    as_of: Any,
    bbox: tuple[float, float, float, float] | None,
    limit: int = DEFAULT_LIMIT,
) -> dict[str, Any]:
    """Return LAYER's features as they stood at AS_OF (a timestamp), inside BBOX, as a FeatureCollection dict."""
    inner = changes.as_of_sql(layer, _props_jsonb_sql(layer))
    where = "TRUE"
    params: dict[str, Any] = {"layer": layer.id, "as_of": as_of, "limit": min(limit, MAX_LIMIT)}
    if bbox:
        where = "s.geom && ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4490)"
        params |= dict(zip(("x0", "y0", "x1", "y1"), bbox, strict=True))
    rows = session.execute(
        text(
            f"SELECT s.id, s.props, ST_AsGeoJSON(s.geom, 9, 0)::jsonb AS geometry FROM ({inner}) s "
            f"WHERE {where} ORDER BY s.id LIMIT :limit"
        ),
        params,
    ).all()
    features = [
        {
            "type": "Feature",
            "id": fid,
            "version": props.get(VERSION),
            "geometry": geometry,
            "properties": changes.declared_properties(layer, props),
        }
        for fid, props, geometry in rows
    ]
    return {"type": "FeatureCollection", "as_of": str(as_of), "features": features, "numberReturned": len(features)}


def restore_feature(
    session: Session,
    layer: Layer,
    fid: int,
    change_id: int,
    actor: Actor | None,
    note: Any = None,
    if_match: int | None = None,
) -> dict[str, Any]:
    """Bring feature FID back to how it stood after change CHANGE_ID (before it, for a delete); return it.

    The geometry comes back byte for byte (EWKB from the log), the properties as logged; a
    deleted feature comes back with its id, so whatever named it names it again. Personal
    fields are restored only by a role that sees them (others cannot know the stored value):
    for the others they keep their current value, or the restore of a delete is refused.
    """
    state = changes.state_after(session, layer, fid, change_id)
    if state is None:
        raise NotFound.one(
            "version_not_found",
            f"没有可恢复的版本：修改记录 {change_id} 不属于该{layer.zh}，或它就是当前版本",
            f"nothing to restore: change {change_id} is not this feature's, or it is the current version",
            id=change_id,
        )
    logged, wkb = state
    props = {name: logged.get(name) for name in layer.field_names}
    personal = [f.name for f in layer.fields if f.personal]
    sees = actor is None or actor.sees_personal()
    check_area(layer, actor, props)
    table = layer.model.__table__
    geom = func.ST_GeomFromEWKB(func.decode(wkb.hex(), "hex"))
    current = session.execute(select(table.c.version).where(table.c.id == fid)).scalar()
    exists_now = current is not None
    if exists_now and if_match is not None and current != if_match:
        raise _stale(layer, session, fid, if_match)
    note_change(session, note or f"恢复到修改 {change_id} 后的版本 restored to change {change_id}")
    values = {name: value for name, value in props.items() if sees or name not in personal}
    with _guarded(session, layer):
        if exists_now:
            condition = [table.c.id == fid] + ([table.c.version == if_match] if if_match is not None else [])
            done = session.execute(
                update(table)
                .where(*condition)
                .values(values | {"geom": geom, "updated_at": func.now()})
                .returning(table.c.id)
            ).first()
            if done is None:
                raise _stale(layer, session, fid, if_match or 0)
        else:
            if not sees and personal:
                raise Forbidden.one(
                    "personal_restore_forbidden",
                    f"该{layer.zh}含个人信息，只有可查看个人信息的角色能恢复已删除的要素",
                    "only roles that see personal data can restore a deleted feature holding it",
                )
            _key_taken(session, layer, props, None)
            session.execute(insert(table).values(values | {"id": fid, "geom": geom}))
    return get_feature(session, layer, fid)


def _geojson_of(geom: BaseGeometry) -> Any:
    """Return GEOM as a GeoJSON geometry (plain lists, as a client would send it)."""
    return orjson.loads(shapely.to_geojson(geom))


def _polygonal(layer: Layer, what: str) -> None:
    if not set(layer.accepts) & {"Polygon", "MultiPolygon"}:
        raise InvalidInput.one(
            "not_polygonal", f"{layer.zh}不是面图层，不能{what}", f"{layer.en} holds no polygons", field="layer"
        )


def split_feature(session: Session, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """Split a polygon (see :func:`_split`): all of it under one savepoint, so a refused part writes nothing."""
    with session.begin_nested():
        return _split(session, *args, **kwargs)


def merge_features(session: Session, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Merge polygons (see :func:`_merge`): all of it under one savepoint, so a refusal writes nothing."""
    with session.begin_nested():
        return _merge(session, *args, **kwargs)


def _split(
    session: Session,
    layer: Layer,
    fid: int,
    line: Any,
    codes: Sequence[Any],
    actor: Actor | None,
    if_match: int | None,
    note: Any = None,
) -> list[dict[str, Any]]:
    """Split polygon FID along LINE: the first part keeps the feature (and its id), the others become new
    features with the same properties and the codes CODES (one per new part). Each is checked as any write."""
    _polygonal(layer, "分割")
    stored = get_feature(session, layer, fid)
    if if_match is not None and stored["version"] != if_match:
        raise _stale(layer, session, fid, if_match)
    cut = parse_geojson_geometry(line)
    if cut.geom_type not in ("LineString", "MultiLineString"):
        raise InvalidInput.one(
            "split_line_invalid", "分割线应为线（LineString）", "the split line must be a LineString", field="line"
        )
    parts = [
        shapely.from_wkb(bytes(wkb))
        for wkb in session.execute(
            text(
                f"SELECT ST_AsEWKB((ST_Dump(ST_Split(t.geom, ST_GeomFromEWKB(decode(:cut, 'hex'))))).geom) "
                f"FROM {layer.table} t WHERE t.id = :fid"
            ),
            {"cut": shapely.to_wkb(shapely.set_srid(cut, STORAGE_SRID), hex=True, include_srid=True), "fid": fid},
        ).scalars()
    ]
    if len(parts) < 2:
        raise InvalidInput.one(
            "split_failed",
            "分割线没有把该图形分成两块以上：线须完整穿过图形",
            "the line does not cut the shape in two",
            field="line",
        )
    if len(codes) != len(parts) - 1:
        raise InvalidInput(
            Problem(
                "codes_required",
                f"分割得到 {len(parts)} 块：除保留原编码的第一块外，请为其余 {len(parts) - 1} 块各给一个编码",
                f"the cut gives {len(parts)} parts: give a code for each of the {len(parts) - 1} new ones",
                Where(field="codes"),
                details={"parts": len(parts)},
            )
        )
    parts.sort(key=lambda g: -g.area)  # the largest part keeps the feature
    base = {k: v for k, v in stored["properties"].items() if k in layer.field_names}
    first = replace_feature(
        session,
        layer,
        fid,
        {"type": "Feature", "properties": {}, "geometry": _geojson_of(parts[0]), "note": note},
        actor,
        stored["version"],
        partial=True,
    )
    out = [first]
    for index, (part, code) in enumerate(zip(parts[1:], codes, strict=True), start=1):
        props = {**base, layer.key_field: code}
        for loc in layer.locators:  # located afresh from where the part lies
            props.pop(loc.field, None)
        try:
            out.append(
                create_feature(
                    session,
                    layer,
                    {"type": "Feature", "properties": props, "geometry": _geojson_of(part), "note": note},
                    actor,
                )
            )
        except InvalidInput as exc:
            for problem in exc.problems:
                problem.where.feature_index = index
            raise
    return out


def _merge(
    session: Session,
    layer: Layer,
    ids: Sequence[int],
    keep: int,
    versions: Mapping[str, Any],
    actor: Actor | None,
    note: Any = None,
) -> dict[str, Any]:
    """Merge adjacent polygons IDS into KEEP (its properties and id stay; the others are deleted, kept in the log)."""
    _polygonal(layer, "合并")
    stored = {fid: get_feature(session, layer, fid) for fid in dict.fromkeys(ids)}  # 404 for what is not seen
    if keep not in ids or len(set(ids)) < 2:
        raise InvalidInput.one(
            "merge_ids_invalid",
            "至少选择两个要素，且保留的要素须在其中",
            "pick two or more, the kept one among them",
            field="ids",
        )
    for fid, feature in stored.items():
        sent = versions.get(str(fid))
        if not isinstance(sent, int) or feature["version"] != sent:
            raise _stale(layer, session, fid, sent if isinstance(sent, int) else 0)
    merged = session.execute(
        text(f"SELECT ST_AsEWKB(ST_Union(geom)) FROM {layer.table} WHERE id = ANY(:ids)"), {"ids": list(stored)}
    ).scalar_one()
    shape = shapely.from_wkb(bytes(merged))
    if shape.geom_type != "Polygon" and len(getattr(shape, "geoms", [])) > 1:
        raise InvalidInput.one(
            "merge_not_adjacent",
            "所选要素互不相邻，合并后不是一整块",
            "the features do not touch: the union is not one piece",
            field="ids",
        )
    note_change(session, note)
    for fid in stored:
        if fid != keep:
            delete_feature(session, layer, fid, stored[fid]["version"])
    return replace_feature(
        session,
        layer,
        keep,
        {"type": "Feature", "properties": {}, "geometry": _geojson_of(shape), "note": note},
        actor,
        stored[keep]["version"],
        partial=True,
    )
