"""Topology checks on sets of polygons: coverage of a parent by its children, containment, nearness.

Generic: units are (code, geometry) pairs in CGCS2000 lon/lat; what a layer must obey is
declared in ``layers/``. Defects are found in a transverse Mercator (metres, snapped to a
grid) so that tolerances are in metres; the shape a finding reports is then cut again from
the stored, unsnapped lon/lat geometries where the defect was found, and measured on the
GRS80 (CGCS2000) ellipsoid, so the same defect has the same area whatever the scope checked
(as PostGIS ``ST_Area(geog, true)`` gives it). Every finding carries a Chinese and an
English message and a stable id (the same defect keeps its id across runs).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

import shapely
from pyproj import Transformer
from shapely.geometry.base import BaseGeometry

from spatial.geometry import STORAGE_SRID, geodesic_area, validity_problem

Severity = Literal["error", "warning"]
Unit = tuple[str, BaseGeometry]


@dataclass(frozen=True)
class Tolerance:
    """How small a defect may be before it is not one."""

    snap_m: float = 0.05
    """Vertices closer than this are the same point (boundaries are snapped to this grid)."""
    min_area_m2: float = 1.0
    """Gaps, overlaps and parts outside smaller than this are not reported."""
    sliver_width_m: float = 1.0
    """A unit (or a gap, an overlap) narrower than this on average is a sliver."""


@dataclass
class Finding:
    """One defect: which rule, how bad, which features, where (the problem geometry), how big."""

    rule: str
    severity: Severity
    codes: tuple[str, ...]
    geometry: BaseGeometry
    area_m2: float | None
    message_zh: str
    message_en: str
    scope: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """Return a stable id: the rule, the features and where (to about 10 m)."""
        centre = self.geometry.centroid if not self.geometry.is_empty else None
        where = f"{centre.x:.4f},{centre.y:.4f}" if centre is not None and not centre.is_empty else ""
        text = "|".join([self.rule, ",".join(sorted(self.codes)), where])
        return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:16]

    def as_dict(self) -> dict[str, Any]:
        """Return the JSON form (geometry as GeoJSON)."""
        return {
            "id": self.id,
            "rule": self.rule,
            "severity": self.severity,
            "codes": list(self.codes),
            "area_m2": None if self.area_m2 is None else round(self.area_m2, 2),
            "message": f"{self.message_zh} ({self.message_en})",
            "message_zh": self.message_zh,
            "message_en": self.message_en,
            "scope": self.scope,
            "details": self.details,
            # 1e-9° (0.1 mm): coarser rounding would move a thin gap's area by tenths of a m²
            "geometry": json.loads(shapely.to_geojson(shapely.set_precision(self.geometry, 1e-9))),
        }


T_JUNCTION_DEG = 1e-7
"""How near (in degrees, ~1 cm) a vertex must lie to a neighbour's edge to be put into it."""


def _share_vertices(children: Sequence[Unit], parent: Unit | None) -> tuple[list[Unit], Unit | None]:
    """Return CHILDREN and PARENT with every vertex lying on another's edge inserted into that edge.

    A village's corner in the middle of its township's long edge (a T-junction) is on that
    edge in lon/lat, but an edge straight in lon/lat bows in a metric (0.2 m over 3.6 km): the
    two boundaries would part and leave a sliver hundreds of m² large. With the vertex in both,
    they bow alike. Each unit is snapped only to the vertices near its own boundary.
    """
    units = [*children, *([parent] if parent is not None else [])]
    shapes = [g for _, g in units if g is not None and not g.is_empty]
    if len(shapes) < 2:
        return list(children), parent
    coords = np.unique(np.vstack([shapely.get_coordinates(g) for g in shapes]), axis=0)
    points = shapely.points(coords)
    tree = shapely.STRtree(points)
    shared: list[Unit] = []
    for code, geom in units:
        if geom is None or geom.is_empty:
            shared.append((code, geom))
            continue
        near = tree.query(geom.boundary, predicate="dwithin", distance=T_JUNCTION_DEG)
        snapped = shapely.snap(geom, shapely.multipoints(points[near]), T_JUNCTION_DEG) if len(near) else geom
        shared.append((code, snapped if snapped.is_valid or not geom.is_valid else geom))
    return shared[: len(children)], (shared[-1] if parent is not None else None)


class LocalMetric:
    """A transverse Mercator on GRS80 centred on the data: lon/lat to metres and back."""

    def __init__(self, lon0: float, lat0: float = 0.0) -> None:
        proj = f"+proj=tmerc +lat_0={lat0:.4f} +lon_0={lon0:.4f} +k=1 +x_0=0 +y_0=0 +ellps=GRS80 +units=m +no_defs"
        self._to_m = Transformer.from_crs(STORAGE_SRID, proj, always_xy=True)
        self._to_deg = Transformer.from_crs(proj, STORAGE_SRID, always_xy=True)

    @classmethod
    def around(cls, geoms: Sequence[BaseGeometry]) -> LocalMetric:
        """Return the local metric centred on GEOMS."""
        x0, y0, x1, y1 = shapely.total_bounds(np.asarray(geoms, dtype=object))
        if not all(map(math.isfinite, (x0, y0, x1, y1))):
            return cls(120.0)
        return cls((x0 + x1) / 2, (y0 + y1) / 2)

    @classmethod
    def zone(cls, geoms: Sequence[BaseGeometry]) -> LocalMetric:
        """Return the 3° Gauss-Krüger zone's metric (central meridian a multiple of 3°) holding GEOMS.

        Every scope inside the zone gets the same metric, hence the same snapping grid: a
        defect is found the same way whether its street, its community or its grid is checked.
        Scale error stays below 3e-4 inside a zone.
        """
        x0, _, x1, _ = shapely.total_bounds(np.asarray(geoms, dtype=object))
        if not all(map(math.isfinite, (x0, x1))):
            return cls(120.0)
        return cls(3.0 * round((x0 + x1) / 6.0))

    def to_m(self, geoms: Any) -> Any:
        """Return GEOMS in metres."""
        return shapely.transform(geoms, lambda c: np.column_stack(self._to_m.transform(c[:, 0], c[:, 1])))

    def to_deg(self, geoms: Any) -> Any:
        """Return GEOMS (in metres) in lon/lat."""
        return shapely.transform(geoms, lambda c: np.column_stack(self._to_deg.transform(c[:, 0], c[:, 1])))


def _areal(geom: BaseGeometry) -> BaseGeometry:
    """Return only the polygonal parts of GEOM (an intersection may add lines and points)."""
    if geom.is_empty or geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [p for p in shapely.get_parts(geom) if p.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def _polygons(geom: BaseGeometry) -> list[BaseGeometry]:
    """Return the single polygons of GEOM."""
    return [p for p in shapely.get_parts(_areal(geom)) if not p.is_empty]


def _coverage_union(geoms: Any, overlapping: set[int]) -> BaseGeometry:
    """Return the union of GEOMS, fast where they form a coverage.

    GEOS's coverage union is linear but needs polygons that do not overlap and share their
    edges exactly: the units involved in overlaps are added afterwards with an ordinary union,
    and if the rest still is no clean coverage (edges that almost match), everything is
    unioned the ordinary way.
    """
    rest = np.asarray([g for i, g in enumerate(geoms) if i not in overlapping], dtype=object)
    try:
        union = shapely.coverage_union_all(rest) if rest.size else shapely.Polygon()
    except shapely.errors.GEOSException:
        union = None
    if (
        union is None
        or not union.is_valid
        or abs(union.area - float(shapely.area(rest).sum())) > 1e-6 * max(union.area, 1.0)
    ):
        return shapely.union_all(geoms)
    if overlapping:
        union = shapely.union_all([union, *[geoms[i] for i in sorted(overlapping)]])
    return union


def code_prefix(code: str) -> str:
    """Return the part of a division code its children's codes start with.

    GB/T 2260 pads a city or province code with zeros (临沂 371300: its counties are 3713xx);
    street (9-digit) and community (12-digit) codes are prefixes as they stand.

    Examples
    --------
    >>> code_prefix("371300"), code_prefix("370000"), code_prefix("370214001")
    ('3713', '37', '370214001')
    """
    if len(code) == 6:
        while code.endswith("00") and len(code) > 2:
            code = code[:-2]
    return code


def _width(area: float, perimeter: float) -> float:
    """Return the mean width of a shape (2·area/perimeter: a strip's width)."""
    return 2 * area / perimeter if perimeter else 0.0


class Checker:
    """Runs the topology rules on units: found in a metric around them, reported in lon/lat."""

    def __init__(self, metric: LocalMetric, tolerance: Tolerance | None = None) -> None:
        self.metric = metric
        self.tol = tolerance or Tolerance()

    # -- preparation -------------------------------------------------------------------

    def prepare(
        self, units: Sequence[Unit], label_zh: str, label_en: str, scope: str | None
    ) -> tuple[list[str], Any, Any, list[Finding]]:
        """Return codes, the geometries in lon/lat (valid), in metres (valid, snapped) and invalid-geometry findings."""
        findings: list[Finding] = []
        codes = [code for code, _ in units]
        geoms = []
        for code, geom in units:
            problem = validity_problem(geom) if geom is not None and not geom.is_empty else None
            if problem is not None:
                reason_code, reason, location = problem
                where = shapely.Point(location) if location else geom.representative_point()
                findings.append(
                    self.finding(
                        "invalid_geometry",
                        "error",
                        (code,),
                        where,
                        f"{label_zh} {code} 的图形无效：{reason}",
                        f"{label_en} {code}: invalid geometry: {reason}",
                        scope,
                        reason=reason_code,
                    )
                )
                geom = _areal(shapely.make_valid(geom))
            geoms.append(geom if geom is not None else shapely.Polygon())
        lonlat = np.asarray(geoms, dtype=object)
        metres = shapely.set_precision(self.metric.to_m(lonlat), self.tol.snap_m)
        return codes, lonlat, metres, findings

    def finding(
        self,
        rule: str,
        severity: Severity,
        codes: Iterable[str],
        lonlat: BaseGeometry,
        zh: str,
        en: str,
        scope: str | None,
        **details: Any,
    ) -> Finding:
        """Return a finding whose geometry (in lon/lat) is measured on the GRS80 ellipsoid."""
        area = geodesic_area(lonlat) if lonlat.geom_type in ("Polygon", "MultiPolygon") else None
        if area is not None:
            zh = zh.replace("{area}", f"{area:,.2f}")
            en = en.replace("{area}", f"{area:,.2f}")
        return Finding(rule, severity, tuple(codes), lonlat, area, zh, en, scope, details)

    def exact(self, found: BaseGeometry, cut: Any) -> BaseGeometry:
        """Return the shape of a defect FOUND (metres, snapped) as CUT (lon/lat, unsnapped) draws it.

        CUT computes the defect from the stored geometries inside a window (lon/lat) a little
        wider than FOUND; only its parts lying mostly in FOUND are kept, so hairlines that
        snapping closed elsewhere along a boundary are not added. Snapping decides *whether*
        there is a defect; the stored geometries decide its shape and area.
        """
        rough = self.metric.to_deg(found)
        window = self.metric.to_deg(found.buffer(self.tol.snap_m * 2, join_style="mitre"))
        try:
            shape = _areal(cut(window))
        except shapely.errors.GEOSException:
            return rough
        parts = [p for p in _polygons(shape) if p.intersection(rough).area > 0.25 * p.area]
        return shapely.union_all(parts) if parts else rough

    # -- rules -------------------------------------------------------------------------

    def coverage(
        self,
        children: Sequence[Unit],
        parent: Unit | None,
        *,
        child_zh: str,
        child_en: str,
        parent_zh: str = "",
        parent_en: str = "",
        fillers: Sequence[BaseGeometry] = (),
    ) -> list[Finding]:
        """Check that CHILDREN tile PARENT: no gaps, no overlaps, nothing outside, no slivers.

        Without a parent, gaps are the holes in the children's union. A hole filled by a
        unit of the same level (among the children, or in FILLERS: units of the same level
        from elsewhere, declared exclusions) is no gap: real enclaves exist.
        """
        scope = parent[0] if parent else None
        children, parent = _share_vertices(children, parent)
        codes, lonlat, geoms, findings = self.prepare(children, child_zh, child_en, scope)
        parent_ll = _areal(shapely.make_valid(parent[1])) if parent is not None else None
        if not codes:
            if parent is not None and parent_ll is not None:  # nothing tiles it yet (or nothing in force then)
                findings.append(
                    self.finding(
                        "no_children",
                        "warning",
                        [parent[0]],
                        parent_ll,
                        f"{parent_zh} {parent[0]} 没有任何{child_zh}",
                        f"{parent_en} {parent[0]} has no {child_en}",
                        scope,
                    )
                )
            return findings
        tol = self.tol
        for code, count in Counter(codes).items():
            if count > 1:
                same = [g for c, g in zip(codes, lonlat, strict=True) if c == code]
                findings.append(
                    self.finding(
                        "duplicate_code",
                        "error",
                        [code],
                        shapely.union_all(same),
                        f"{child_zh}编码 {code} 出现 {count} 次",
                        f"{child_en} code {code} is used {count} times",
                        scope,
                    )
                )
        if parent is not None:
            prefix = code_prefix(parent[0])
            for code, geom in zip(codes, lonlat, strict=True):
                if not code.startswith(prefix):
                    findings.append(
                        self.finding(
                            "code_parent_mismatch",
                            "error",
                            [code, parent[0]],
                            geom,
                            f"{child_zh} {code} 的编码不以所属{parent_zh}编码 {parent[0]} 开头",
                            f"{child_en} {code}: the code does not start with its {parent_en}'s code {parent[0]}",
                            scope,
                        )
                    )
        overlapping: set[int] = set()
        findings += self.overlaps(codes, lonlat, geoms, child_zh, child_en, scope, overlapping)
        findings += self._slivers(codes, lonlat, geoms, child_zh, child_en, scope)
        union = _coverage_union(geoms, overlapping)
        filled = shapely.union_all(self.metric.to_m(np.asarray(list(fillers), dtype=object))) if fillers else None
        if parent is not None and parent_ll is not None:
            parent_m = shapely.set_precision(self.metric.to_m(parent_ll), tol.snap_m)
            shapely.prepare(parent_m)
            beyond = np.flatnonzero(~shapely.within(geoms, parent_m))  # the few that are not inside
            outside = shapely.difference(geoms[beyond], parent_m)
            for i, part in zip(beyond, outside, strict=True):
                part = _areal(part)
                if part.is_empty or part.area < tol.min_area_m2:
                    continue
                child = lonlat[i]
                findings.append(
                    self.finding(
                        "outside_parent",
                        "error",
                        [codes[i], parent[0]],
                        self.exact(part, lambda w, c=child: shapely.difference(shapely.intersection(c, w), parent_ll)),
                        f"{child_zh} {codes[i]} 有 {{area}} 平方米在所属{parent_zh} {parent[0]} 之外",
                        f"{child_en} {codes[i]}: {{area}} m² lie outside its {parent_en} {parent[0]}",
                        scope,
                    )
                )
            uncovered = shapely.difference(parent_m, union)
        else:
            holes = [shapely.Polygon(ring) for poly in _polygons(union) for ring in poly.interiors]
            uncovered = shapely.union_all(holes) if holes else shapely.Polygon()
        if filled is not None and not uncovered.is_empty:
            uncovered = shapely.difference(uncovered, filled)
        tree = shapely.STRtree(geoms)
        for gap in _polygons(uncovered):
            if gap.area < tol.min_area_m2 or _width(gap.area, gap.length) < tol.snap_m:
                continue  # too small, or narrower than the snapping tolerance
            near = tree.query(gap.buffer(tol.snap_m * 4), predicate="intersects")
            around = sorted({codes[i] for i in near})
            width = _width(gap.area, gap.length)
            between = "、".join(around) if around else "—"

            def cut(window: BaseGeometry, near: Any = near) -> BaseGeometry:
                inside = shapely.intersection(window, parent_ll) if parent_ll is not None else window
                return shapely.difference(inside, shapely.union_all([*lonlat[near], *fillers]))

            findings.append(
                self.finding(
                    "gap",
                    "error",
                    around,
                    self.exact(gap, cut),
                    f"缝隙：{{area}} 平方米不属于任何{child_zh}（位于 {between} 之间）"
                    + (f"，在{parent_zh} {parent[0]} 内" if parent else ""),
                    f"gap: {{area}} m² lie in no {child_en} (between {', '.join(around) or '—'})"
                    + (f" within {parent_en} {parent[0]}" if parent else ""),
                    scope,
                    width_m=round(width, 2),
                    sliver=width < tol.sliver_width_m,
                )
            )
        return findings

    def overlaps(
        self,
        codes: list[str],
        lonlat: Any,
        geoms: Any,
        zh: str,
        en: str,
        scope: str | None,
        involved: set[int] | None = None,
        pairs: Callable[[Any, Any], Any] | None = None,
    ) -> list[Finding]:
        """Return the overlaps between GEOMS (metres; LONLAT as stored); units whose interiors meet go into INVOLVED.

        PAIRS, when given, tells (as a boolean array) which of the index pairs (left, right) to look at:
        a piece of a bigger check reports only the pairs it owns.
        """
        tree = shapely.STRtree(geoms)
        left, right = tree.query(geoms, predicate="intersects")
        keep = left < right
        left, right = left[keep], right[keep]
        if pairs is not None and left.size:
            mine = np.asarray(pairs(left, right), dtype=bool)
            left, right = left[mine], right[mine]
        if left.size:  # neighbours in a tiling touch: only pairs whose interiors meet are intersected
            inner = shapely.relate_pattern(geoms[left], geoms[right], "2********")
            left, right = left[inner], right[inner]
        if involved is not None:
            involved.update(left.tolist(), right.tolist())
        if not left.size:
            return []
        shared = shapely.intersection(geoms[left], geoms[right])
        areas = shapely.area(shared)
        findings = []
        for i, j, part, area in zip(left, right, shared, areas, strict=True):
            if area < self.tol.min_area_m2 or codes[i] == codes[j]:
                continue
            part = _areal(part)
            width = _width(part.area, part.length)
            if width < self.tol.snap_m:
                continue  # narrower than the snapping tolerance
            a, b = lonlat[i], lonlat[j]
            findings.append(
                self.finding(
                    "overlap",
                    "error",
                    [codes[i], codes[j]],
                    self.exact(part, lambda w, a=a, b=b: shapely.intersection(shapely.intersection(a, w), b)),
                    f"重叠：{zh} {codes[i]} 与 {codes[j]} 重叠 {{area}} 平方米",
                    f"overlap: {en} {codes[i]} and {codes[j]} overlap by {{area}} m²",
                    scope,
                    width_m=round(width, 2),
                    sliver=width < self.tol.sliver_width_m,
                )
            )
        return findings

    def _slivers(self, codes: list[str], lonlat: Any, geoms: Any, zh: str, en: str, scope: str | None) -> list[Finding]:
        areas, perimeters = shapely.area(geoms), shapely.length(geoms)
        findings = []
        for code, geom, area, perimeter in zip(codes, lonlat, areas, perimeters, strict=True):
            width = _width(area, perimeter)
            if area >= self.tol.min_area_m2 and width >= self.tol.sliver_width_m:
                continue
            findings.append(
                self.finding(
                    "sliver",
                    "warning",
                    [code],
                    geom,
                    f"碎片：{zh} {code} 面积 {{area}} 平方米、平均宽度 {width:.2f} 米，可能是数字化残留",
                    f"sliver: {en} {code} is {{area}} m², {width:.2f} m wide on average: a digitising leftover?",
                    scope,
                    width_m=round(width, 2),
                )
            )
        return findings

    def numbering(self, children: Sequence[Unit], scope: str, zh: str, en: str) -> list[Finding]:
        """Warn where sequence numbers do not run west→east, north→south.

        Read row by row (rows north→south) or column by column (columns west→east), the unit
        numbered next lies east of the previous one or south of it; a next unit neither east
        nor south (beyond a tenth of a unit's size) is reported.
        """
        if len(children) < 2:
            return []
        ordered = sorted(children, key=lambda unit: unit[0])
        codes = [c for c, _ in ordered]
        lonlat = np.asarray([g for _, g in ordered], dtype=object)
        geoms = self.metric.to_m(lonlat)
        centres = shapely.centroid(geoms)
        xs, ys = shapely.get_x(centres), shapely.get_y(centres)
        margin = 0.1 * float(np.median(np.sqrt(np.maximum(shapely.area(geoms), 1.0))))
        east = xs[1:] > xs[:-1] + margin
        south = ys[1:] < ys[:-1] - margin
        backwards = [int(i) + 1 for i in np.flatnonzero(~(east | south))]
        if not backwards:
            return []
        pairs = [f"{codes[i - 1]}→{codes[i]}" for i in backwards]
        shown = "、".join(pairs[:6]) + ("…" if len(pairs) > 6 else "")
        involved = sorted({codes[j] for i in backwards for j in (i - 1, i)})
        return [
            self.finding(
                "numbering_order",
                "warning",
                involved,
                shapely.union_all([lonlat[j] for i in backwards for j in (i - 1, i)]),
                f"编号顺序：{zh}编号应自西向东、自北向南，后一个却既不在前一个以东也不在其以南（{shown}）",
                f"numbering: {en} numbers should run west to east, north to south; the next lies neither east "
                f"nor south of the previous ({', '.join(pairs[:6])})",
                scope,
            )
        ]

    def within(
        self,
        features: Sequence[tuple[str, BaseGeometry, str | None]],
        frames: Sequence[Unit],
        *,
        zh: str,
        en: str,
        frame_zh: str,
        frame_en: str,
        attribute: str,
        scope: str | None = None,
        own_frame_only: bool = False,
    ) -> list[Finding]:
        """Check that each feature lies in exactly one frame unit, the one its ATTRIBUTE names.

        FEATURES are (code, geometry, frame code given). Reported: the part outside every
        frame unit, a feature straddling units (with the split areas), the part outside the
        unit it names (OWN_FRAME_ONLY: the 一户一区 rule), and a given code that disagrees
        with where the feature lies (the unit holding its largest share).
        """
        findings: list[Finding] = []
        if not features:
            return findings
        tol = self.tol
        frame_codes = [c for c, _ in frames]
        frame_ll = np.asarray([g for _, g in frames], dtype=object)
        frame_geoms = self.metric.to_m(frame_ll)
        tree = shapely.STRtree(frame_geoms)
        union = shapely.union_all(frame_geoms) if frames else shapely.Polygon()
        union_ll = shapely.union_all(frame_ll) if frames else shapely.Polygon()
        lonlat = np.asarray([g for _, g, _ in features], dtype=object)
        geoms = self.metric.to_m(lonlat)
        feat, frame = tree.query(geoms, predicate="intersects")
        # a feature inside one frame unit (most of them) needs no cutting: its share is its area, nothing is outside
        shapely.prepare(frame_geoms)
        within_one = shapely.covers(frame_geoms[frame], geoms[feat]) if feat.size else np.zeros(0, dtype=bool)
        shares = shapely.area(geoms[feat])
        cut = ~within_one
        if cut.any():
            shares[cut] = shapely.area(shapely.intersection(geoms[feat[cut]], frame_geoms[frame[cut]]))
        covered = set(feat[within_one].tolist())
        by_feature: dict[int, list[tuple[str, float]]] = {}
        for i, j, area in zip(feat, frame, shares, strict=True):
            by_feature.setdefault(int(i), []).append((frame_codes[j], float(area)))
        points = shapely.get_type_id(geoms) == 0
        for i, (code, _, given) in enumerate(features):
            geom = geoms[i]
            hits = sorted(by_feature.get(i, []), key=lambda h: -h[1])
            if points[i]:
                located = hits[0][0] if hits else None
            else:
                hits = [h for h in hits if h[1] >= tol.min_area_m2]
                located = hits[0][0] if hits else None
                if i in covered:
                    outside = shapely.Polygon()
                else:
                    outside = _areal(shapely.difference(geom, union)) if hits else geom
                if not outside.is_empty and outside.area >= tol.min_area_m2:
                    findings.append(
                        self.finding(
                            "outside_frame",
                            "error",
                            [code],
                            _areal(shapely.difference(lonlat[i], union_ll)) if hits else lonlat[i],
                            f"{zh} {code} 有 {{area}} 平方米不在任何{frame_zh}内",
                            f"{en} {code}: {{area}} m² lie in no {frame_en}",
                            scope,
                        )
                    )
                if own_frame_only and given is not None and len(hits) > 1:
                    own = next((j for j, c in enumerate(frame_codes) if c == given), None)
                    if own is not None:
                        beyond = _areal(shapely.difference(shapely.intersection(geom, union), frame_geoms[own]))
                        others = [c for c, _ in hits if c != given]
                        if not beyond.is_empty and beyond.area >= tol.min_area_m2:
                            findings.append(
                                self.finding(
                                    "outside_own_frame",
                                    "error",
                                    [code, given, *others],
                                    _areal(
                                        shapely.difference(shapely.intersection(lonlat[i], union_ll), frame_ll[own])
                                    ),
                                    f"{zh} {code} 越出所属{frame_zh} {given}，{{area}} 平方米伸入{frame_zh} "
                                    + "、".join(others),
                                    f"{en} {code} sticks out of its {frame_en} {given}: {{area}} m² lie in "
                                    + ", ".join(others),
                                    scope,
                                )
                            )
                            continue
                elif len(hits) > 1:
                    split = {c: round(self._share(lonlat[i], frame_ll, frame_codes, c), 2) for c, _ in hits}
                    hits = [(c, split[c]) for c, _ in hits]
                    shown = "、".join(f"{c} {a:,.1f} 平方米" for c, a in hits)
                    findings.append(
                        self.finding(
                            "straddles_frames",
                            "warning",
                            [code, *split],
                            lonlat[i],
                            f"{zh} {code} 跨越 {len(hits)} 个{frame_zh}：{shown}",
                            f"{en} {code} straddles {len(hits)} {frame_en}s: "
                            + ", ".join(f"{c} {a:,.1f} m²" for c, a in hits),
                            scope,
                            split_m2=split,
                        )
                    )
            if points[i] and located is None and frames:
                findings.append(
                    self.finding(
                        "outside_frame",
                        "error",
                        [code],
                        lonlat[i],
                        f"{zh} {code} 不在任何{frame_zh}内",
                        f"{en} {code} lies in no {frame_en}",
                        scope,
                    )
                )
            if given is not None and located is not None and given != located and not own_frame_only:
                findings.append(
                    self.finding(
                        "attribute_location_mismatch",
                        "error",
                        [code, given, located],
                        lonlat[i],
                        f"{zh} {code} 的“{attribute}”为 {given}，但图形大部分位于{frame_zh} {located}",
                        f"{en} {code}: {attribute} is {given} but it lies mostly in {frame_en} {located}",
                        scope,
                    )
                )
        return findings

    @staticmethod
    def _share(feature: BaseGeometry, frames: Any, codes: list[str], code: str) -> float:
        """Return the geodesic area of FEATURE lying in the frame unit(s) coded CODE."""
        inside = [shapely.intersection(feature, g) for c, g in zip(codes, frames, strict=True) if c == code]
        return sum(geodesic_area(_areal(part)) for part in inside)

    def near(
        self,
        features: Sequence[tuple[str, BaseGeometry, str | None]],
        targets: dict[str, BaseGeometry],
        *,
        within_m: float,
        zh: str,
        en: str,
        target_zh: str,
        target_en: str,
        scope: str | None = None,
    ) -> list[Finding]:
        """Check that each feature touches (within WITHIN_M) the target its link names."""
        findings = []
        for code, geom, link in features:
            target = targets.get(link) if link else None
            if target is None:
                findings.append(
                    self.finding(
                        "link_missing",
                        "warning",
                        [code, *([link] if link else [])],
                        geom,
                        f"{zh} {code} 关联的{target_zh} {link or '（未填写）'} 不存在",
                        f"{en} {code}: its {target_en} {link or '(none given)'} does not exist",
                        scope,
                    )
                )
                continue
            a, b = self.metric.to_m(geom), self.metric.to_m(target)
            distance = float(shapely.distance(a, b))
            if distance > within_m:
                findings.append(
                    self.finding(
                        "not_near_link",
                        "warning",
                        [code, link or ""],
                        self.metric.to_deg(shapely.shortest_line(a, b)),
                        f"{zh} {code} 离所属{target_zh} {link} 有 {distance:.1f} 米（应相接，容差 {within_m:g} 米）",
                        f"{en} {code} is {distance:.1f} m from its {target_en} {link} (should touch, "
                        f"tolerance {within_m:g} m)",
                        scope,
                        distance_m=round(distance, 2),
                    )
                )
        return findings
