"""Boundary checks: run the topology rules each layer declares (``Layer.rules``) on the stored data.

Scope is a street, community or grid code (or everything); the frame in force on a date
(grids have valid_from / valid_to) is the one checked. The engine is
:mod:`spatial.topology`; this module only knows which layer is checked against which.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

import shapely
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from layers import hierarchy
from layers.access import personal_fields, shown_function
from layers.base import (
    REGISTRY,
    Coverage,
    EveryTargetHasOne,
    Layer,
    Match,
    Near,
    NoOverlap,
    Within,
    mask_text,
    match_sql,
)
from layers.scopes import scope_unit, unit_layers
from spatial.errors import InvalidInput
from spatial.geometry import STORAGE_SRID
from spatial.topology import Checker, Finding, LocalMetric, Tolerance

RULES = {
    "coverage": "覆盖（缝隙、重叠、越界、碎片、编码）coverage: gaps, overlaps, outside, slivers, codes",
    "numbering": "编号顺序（警告）numbering order (warning)",
    "within": "落在所属网格内（跨网格、越界、属性与位置不符）within the frame: straddling, outside, mismatch",
    "overlap": "同层要素不重叠 features of a layer do not overlap",
    "near": "责任区与宅基地相接 zone touches its homestead",
    "households": "每户都有责任区 every household has a zone",
}


@dataclass(frozen=True)
class Row:
    """A stored feature as the checks see it."""

    code: str
    values: dict[str, Any]
    geom: BaseGeometry


def _load(
    session: Session,
    layer: Layer,
    *,
    where: Match = (),
    prefix: str | None = None,
    near: BaseGeometry | None = None,
    link_in: tuple[str, list[str]] | None = None,
    codes: list[str] | None = None,
    as_of: dt.date,
    limit: int | None = None,
) -> list[Row]:
    """Return LAYER's features matching WHERE (of CODES), whose code starts with PREFIX or that lie NEAR a shape."""
    conditions, params = match_sql(where)
    params["as_of"] = as_of
    if link_in is not None:
        conditions.append(f"{link_in[0]} = ANY(CAST(:links AS text[]))")
        params["links"] = link_in[1]
    if codes is not None:
        conditions.append(f"{layer.key_field} = ANY(CAST(:codes AS text[]))")
        params["codes"] = codes
    conditions += layer.in_force(on=":as_of")
    scoped = []
    if prefix:
        scoped.append(f"{layer.key_field} LIKE :prefix")
        params["prefix"] = prefix + "%"
    if near is not None:
        scoped.append(f"geom && ST_Expand(ST_GeomFromWKB(:near, {STORAGE_SRID}), 0.002)")
        params["near"] = shapely.to_wkb(near)
    if scoped:
        conditions.append("(" + " OR ".join(scoped) + ")")
    # Personal fields are not readable by the app role: the owner's function shows them (findings mask
    # them again); an old version's are left out.
    personal = set(personal_fields(layer))
    ordered = [layer.key_field, *(n for n in layer.field_names if n != layer.key_field)]
    shown = [f"({shown_function(layer)}(id) ->> '{n}') AS {n}" if n in personal else n for n in ordered]
    kept = [f"NULL::text AS {n}" if n in personal else n for n in ordered]
    where_sql = (" WHERE " + " AND ".join(conditions)) if conditions else ""
    query = f"SELECT {', '.join(shown)}, ST_AsBinary(geom) FROM {layer.table}{where_sql}"
    if layer.history_table:  # the versions in force then, replaced since
        query += f" UNION ALL SELECT {', '.join(kept)}, ST_AsBinary(geom) FROM {layer.history_table}{where_sql}"
    if limit is not None:
        query += " ORDER BY 1 LIMIT :limit"
        params["limit"] = limit
    else:
        query += " ORDER BY 1"
    rows = session.execute(text(query), params).all()
    return [Row(row[0], dict(zip(ordered, row[:-1], strict=True)), shapely.from_wkb(row[-1])) for row in rows]


def _frame_extent(session: Session) -> BaseGeometry:
    """Return the extent of the units (where the metric's zone is chosen), in one query."""
    tables = " UNION ALL ".join(f"SELECT geom FROM {layer.table}" for layer in unit_layers())
    found = session.execute(
        text(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) "
            f"FROM (SELECT ST_Extent(geom) AS e FROM ({tables}) g) x"
        )
    ).one()
    if found[0] is None:
        return shapely.Point(120.4, 36.3)
    return shapely.box(*found)


def run_checks(
    session: Session,
    *,
    scope: str | None = None,
    rules: Iterable[str] | None = None,
    as_of: dt.date | None = None,
    tolerance: Tolerance | None = None,
) -> list[Finding]:
    """Run every rule the layers declare on SCOPE (a code, or everything) as of a date; return the findings."""
    chosen = set(rules) if rules else set(RULES)
    unknown = chosen - set(RULES)
    if unknown:
        raise InvalidInput.one(
            "rule_unknown",
            f"未知的检查规则 {', '.join(sorted(unknown))}（可用：{', '.join(RULES)}）",
            f"unknown rules {', '.join(sorted(unknown))} (known: {', '.join(RULES)})",
            field="rules",
        )
    as_of = as_of or dt.date.today()
    shape = scope_unit(session, scope, as_of)[0] if scope else None
    # one metric (and snapping grid) for every scope in the zone: a defect is found the same way from any scope
    checker = Checker(LocalMetric.zone([shape if shape is not None else _frame_extent(session)]), tolerance)
    findings: list[Finding] = []
    for layer in sorted(REGISTRY.values(), key=lambda lay: lay.order):
        for rule in layer.rules:
            findings += _run(session, checker, layer, rule, scope, shape, as_of, chosen)
    order = {"error": 0, "warning": 1}
    return sorted(findings, key=lambda f: (order[f.severity], f.scope or "", f.rule, f.codes))


def _run(
    session: Session,
    checker: Checker,
    layer: Layer,
    rule: Any,
    scope: str | None,
    shape: BaseGeometry | None,
    as_of: dt.date,
    chosen: set[str],
) -> list[Finding]:
    findings: list[Finding] = []
    if isinstance(rule, Coverage) and chosen & {"coverage", "numbering"}:
        parent_layer = REGISTRY[rule.parent]
        child_level = rule.child_level or (layer.units.levels[0] if layer.units else None)
        scope_level = hierarchy.level_of(scope) if scope else None
        # the parents inside the scope; for a unit of another layer's children (a grid), the unit it lies in
        own_parent = (
            scope
            and scope_level
            and scope_level.id == child_level
            and rule.parent != layer.id
            and hierarchy.parent_of(scope)
        )
        parents = [
            p
            for p in _load(session, parent_layer, where=rule.parent_where, as_of=as_of)
            if scope is None or p.code.startswith(scope) or p.code == own_parent
        ]
        # every parent's children in one query, then grouped
        children_of: dict[str, list[Row]] = {}
        if parents:
            in_parents = (rule.link, [p.code for p in parents])
            for child in _load(session, layer, where=rule.child_where(layer), link_in=in_parents, as_of=as_of):
                children_of.setdefault(str(child.values.get(rule.link)), []).append(child)
        for parent in parents:
            children = children_of.get(parent.code, [])
            units = [(c.code, c.geom) for c in children]
            if "coverage" in chosen:
                of_parent = hierarchy.level_of(parent.code) if rule.parent_level else None
                of_child = hierarchy.level(child_level) if child_level else None
                findings += checker.coverage(
                    units,
                    (parent.code, parent.geom),
                    child_zh=of_child.label() if of_child else layer.zh,
                    child_en=of_child.label_en().lower() if of_child else layer.en,
                    parent_zh=of_parent.label() if of_parent else parent_layer.zh,
                    parent_en=of_parent.label_en().lower() if of_parent else parent_layer.en,
                )
            if "numbering" in chosen and rule.numbered:
                findings += checker.numbering(units, parent.code, layer.zh, layer.en)
    elif isinstance(rule, Within) and "within" in chosen:
        features = _scoped(session, layer, shape, as_of)
        frame = REGISTRY[rule.frame]
        frames = _load(session, frame, near=shape, as_of=as_of)
        held = frame.units.levels if frame.units else ()
        frame_level = hierarchy.level(held[0]) if len(held) == 1 else None  # "grid", not the layer's "Grids"
        findings += checker.within(
            [(f.code, f.geom, f.values.get(rule.link)) for f in features],
            [(u.code, u.geom) for u in frames],
            zh=layer.zh,
            en=layer.en,
            frame_zh=frame_level.label() if frame_level else frame.zh,
            frame_en=frame_level.label_en().lower() if frame_level else frame.en,
            attribute=layer.field(rule.link).zh,
            scope=scope,
            own_frame_only=rule.own_only,
        )
    elif isinstance(rule, NoOverlap) and "overlap" in chosen:
        features = _scoped(session, layer, shape, as_of)
        codes, lonlat, geoms, _ = checker.prepare([(f.code, f.geom) for f in features], layer.zh, layer.en, scope)
        findings += checker.overlaps(codes, lonlat, geoms, layer.zh, layer.en, scope)
    elif isinstance(rule, Near) and "near" in chosen:
        features = _scoped(session, layer, shape, as_of)
        target = REGISTRY[rule.target]
        links = {f.values.get(rule.link) for f in features} - {None}
        targets = {t.code: t.geom for t in _scoped(session, target, shape, as_of) if t.code in links}
        findings += checker.near(
            [(f.code, f.geom, f.values.get(rule.link)) for f in features],
            targets,
            within_m=rule.within_m,
            zh=layer.zh,
            en=layer.en,
            target_zh=target.zh,
            target_en=target.en,
            scope=scope,
        )
    elif isinstance(rule, EveryTargetHasOne) and "households" in chosen:
        features = _scoped(session, layer, shape, as_of)
        named = {f.values.get(rule.link) for f in features}
        target = REGISTRY[rule.target]
        for t in _scoped(session, target, shape, as_of, where=rule.where):
            if t.code not in named:
                findings.append(
                    checker.finding(
                        "household_without_zone",
                        "warning",
                        [t.code],
                        t.geom,
                        f"{target.zh} {t.code} 没有对应的{layer.zh}",
                        f"{target.en} {t.code} has no {layer.en}",
                        scope,
                    )
                )
    return findings


def _scoped(session: Session, layer: Layer, shape: BaseGeometry | None, as_of: dt.date, where: Match = ()) -> list[Row]:
    rows = _load(session, layer, where=where, near=shape, as_of=as_of)
    return [r for r in rows if shape is None or r.geom.intersects(shape)]


def findings_geojson(findings: list[Finding]) -> dict[str, Any]:
    """Return the findings as a GeoJSON FeatureCollection of their problem geometries."""
    features = []
    for finding in findings:
        record = finding.as_dict()
        geometry = record.pop("geometry")
        features.append({"type": "Feature", "id": record["id"], "geometry": geometry, "properties": record})
    return {"type": "FeatureCollection", "features": features}


CONTEXT_UNITS = 2_000
"""At most this many units (the scope's communities, grids…) come with a context."""
CONTEXT_FEATURES = 1_000
"""At most this many features named by findings come with a context."""


def _units_of(session: Session, level_id: str, prefix: str, as_of: dt.date, limit: int) -> list[tuple[Layer, Row]]:
    """Return the units of level LEVEL_ID whose codes start with PREFIX, in force on AS_OF (at most LIMIT)."""
    found: list[tuple[Layer, Row]] = []
    for layer in unit_layers():
        if layer.units is None or level_id not in layer.units.levels:
            continue
        rows = _load(session, layer, where=layer.level_match(level_id), prefix=prefix, as_of=as_of, limit=limit)
        found += [(layer, row) for row in rows if hierarchy.level_of(row.code) == hierarchy.level(level_id)]
    return found[:limit]


def _context_units(session: Session, scope: str | None, as_of: dt.date) -> list[tuple[Layer, Row]]:
    """Return the units a findings map of SCOPE shows: the scope and the units right below it.

    For a unit of the narrowest level held (a grid), its siblings in its parent unit instead;
    for no scope, the widest units stored and the level below them.
    """
    if scope is None:
        for widest in hierarchy.levels():
            top = _units_of(session, widest.id, "", as_of, CONTEXT_UNITS)
            if top:
                under = hierarchy.below(widest)
                return top + (_units_of(session, under.id, "", as_of, CONTEXT_UNITS) if under else [])
        return []
    lv = hierarchy.level_of(scope)
    if lv is None:
        return []
    below = hierarchy.below(lv)
    children = _units_of(session, below.id, hierarchy.code_prefix(scope), as_of, CONTEXT_UNITS) if below else []
    if children:
        return _units_of(session, lv.id, scope, as_of, 1) + children
    parent = hierarchy.parent_of(scope)
    siblings = _units_of(session, lv.id, parent, as_of, CONTEXT_UNITS) if parent else []
    return siblings or _units_of(session, lv.id, scope, as_of, 1)


def _feature(layer: Layer, row: Row, **extra: Any) -> dict[str, Any]:
    """Return ROW as a GeoJSON feature: its layer, code, name (for a unit) and popup fields, personal ones masked."""
    shown = []
    for f in layer.fields:
        value = row.values.get(f.name)
        if not f.popup or value is None or value == "" or f.name == layer.key_field:
            continue
        text_value = value.isoformat() if isinstance(value, dt.date) else str(value)
        shown.append({"zh": f.zh, "en": f.en, "value": mask_text(text_value) if f.personal else text_value})
    name = row.values.get(layer.units.name_field) if layer.units else None
    label_at = row.geom.point_on_surface() if row.geom.geom_type not in ("Point", "MultiPoint") else row.geom.centroid
    return {
        "type": "Feature",
        "geometry": mapping(row.geom),
        "properties": {
            "layer": layer.id,
            "code": row.code,
            "name": None if name is None else str(name),
            "fields": shown,
            "label_at": [round(label_at.x, 7), round(label_at.y, 7)],
            **extra,
        },
    }


def checks_context(
    session: Session, *, scope: str | None, codes: Iterable[str] = (), as_of: dt.date | None = None
) -> dict[str, Any]:
    """Return what a findings map of SCOPE draws around the findings: units, and the features CODES name.

    Units (the scope and the units right below it, or a grid's siblings) carry their level;
    features are any layer's features coded one of CODES (a parcel, a zone, a grid named by a
    finding), personal fields masked. Both are capped; ``truncated`` says when some were left out.
    """
    as_of = as_of or dt.date.today()
    if scope:
        scope_unit(session, scope, as_of)  # an unknown scope is a 404, not an empty map
    units = _context_units(session, scope or None, as_of)
    unit_codes = {row.code for _, row in units}
    wanted = sorted(set(codes) - unit_codes)
    features: list[tuple[Layer, Row]] = []
    for layer in sorted(REGISTRY.values(), key=lambda lay: lay.order):
        if not wanted or len(features) > CONTEXT_FEATURES:
            break
        features += [(layer, r) for r in _load(session, layer, codes=wanted, as_of=as_of, limit=CONTEXT_FEATURES + 1)]
    truncated = len(units) >= CONTEXT_UNITS or len(features) > CONTEXT_FEATURES
    used = {layer.id: layer for layer, _ in units + features}
    return {
        "scope": scope or None,
        "as_of": as_of.isoformat(),
        "layers": {
            lid: {"zh": lay.zh, "en": lay.en, "color": lay.style.default, "fill": lay.style.fill}
            for lid, lay in used.items()
        },
        "units": {
            "type": "FeatureCollection",
            "features": [
                _feature(layer, row, level=getattr(hierarchy.level_of(row.code), "id", None)) for layer, row in units
            ],
        },
        "features": {
            "type": "FeatureCollection",
            "features": [_feature(layer, row) for layer, row in features[:CONTEXT_FEATURES]],
        },
        "truncated": truncated,
    }
