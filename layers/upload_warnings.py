"""Warnings a surveyor needs before committing an upload: a likely GCJ-02/BD-09 shift, overlaps.

Both are warnings, never refusals: the surveyor decides. Both do bounded work whatever the
file's size: the CRS suspicion looks at a deterministic sample of the features (at most
:data:`SAMPLE` of them) against the frame layers the declaration names (its locators and
Within rules: communities, grids), in SQL with their spatial indexes; the overlaps are one
indexed join of the upload's features with the stored ones and with each other, cut off
after a number of candidate pairs linear in the upload's size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from sqlalchemy import text
from sqlalchemy.orm import Session

import shapely

from layers import hierarchy, staging
from layers.base import REGISTRY, Layer, NoOverlap, Within, match_sql
from spatial.crs import DeclaredCrs, bd09_to_wgs84, gcj02_to_bd09, gcj02_to_wgs84, wgs84_to_gcj02
from spatial.geometry import STORAGE_SRID, mu_from_m2
from spatial.topology import Tolerance

Note = Callable[[int, list[dict[str, Any]]], None]
"""How a warning is attached to a feature's report entry (``_Report.note``)."""

SAMPLE = 2_000
"""At most this many features (every k-th, in file order: deterministic) are fitted to the frame."""
MIN_FEATURES = 5
"""Fewer new features than this (with a frame near them) are too weak an evidence for a CRS warning."""
GOOD_FIT = 0.97
"""A declaration under which this share of the features' extent lies in one unit each fits: no CRS warning."""
FITS = 0.95
"""A feature with at least this share of its extent in one unit fits it; below, it straddles or lies outside."""
BETTER = 4.0
"""A correction is markedly better when it leaves at most 1/BETTER of the misfit as declared…"""
MIN_GAIN = 3
"""…and at least this many fewer features straddle or lie outside."""
MOVES_AGREE = 0.1
"""Matched features' moves agree with an offset when their median error is under this share of it."""

OVERLAP_TOLERANCE = Tolerance()
"""Overlaps under 1 m² (geodesic) or narrower than 5 cm on average (2·area/perimeter: a shared edge's
float noise) are not listed: the boundary checks' own tolerance. Real data has 0.28 m² micro-overlaps."""
CANDIDATES_PER_FEATURE = 16
"""The overlap search stops after this many candidate pairs (bounding boxes meeting) per feature
(plus CANDIDATES_BASE): a tiling has about six; a pile of copies of one shape stops early and says so."""
CANDIDATES_BASE = 10_000
LISTED_PAIRS = 5_000
"""At most this many overlapping pairs are listed per kind (all are counted up to the candidates' cap)."""
DRAWN_PAIRS = 500
"""At most this many overlaps carry their geometry (for the upload page to draw)…"""
DRAWN_BYTES = 6_000
"""…each only if its GeoJSON is at most this long (the report stays a few MB at most)."""
NOTES_PER_FEATURE = 10
"""At most this many overlap notes per feature (the count says how many more)."""

FIT = "guatu_fit"
MINE = "guatu_mine"

_CORRECTIONS: dict[str, tuple[str, Callable[[Any, Any], tuple[Any, Any]], Callable[[Any, Any], tuple[Any, Any]]]] = {
    # kind: (label, declared → where it fits (to WGS84), WGS84 → the offset form)
    "gcj02": ("GCJ-02", gcj02_to_wgs84, wgs84_to_gcj02),
    "bd09": ("BD-09", bd09_to_wgs84, lambda x, y: gcj02_to_bd09(*wgs84_to_gcj02(x, y))),
}
_APPS = {"gcj02": "高德/腾讯地图", "bd09": "百度地图"}
_APPS_EN = {"gcj02": "Amap/Tencent", "bd09": "Baidu"}


@dataclass
class Watch:
    """Collects what the warnings need while an upload is checked, then states them."""

    session: Session
    layer: Layer
    declared: DeclaredCrs
    total: int
    upload_id: int | None
    stride: int = 1
    sample: list[tuple[int, str, str]] = field(default_factory=list)  # index, key, hex EWKB

    def __post_init__(self) -> None:
        self.stride = max(1, math.ceil(self.total / SAMPLE))

    @property
    def suspect_crs(self) -> bool:
        """Tell whether the declaration is one a GCJ-02/BD-09 file is wrongly given (WGS84/CGCS2000)."""
        return self.declared.kind == "epsg" and self.declared.epsg in (4326, STORAGE_SRID)

    def add(self, rows: Sequence[tuple[int, dict[str, Any]]], hexes: Any) -> None:
        """Keep every STRIDE-th checked row (index, properties) with its geometry for the CRS fit."""
        if not self.suspect_crs:
            return
        key = self.layer.key_field
        for (index, props), wkb in zip(rows, hexes, strict=True):
            if index % self.stride == 0 and len(self.sample) < SAMPLE:
                self.sample.append((index, str(props[key]), str(wkb)))

    def finish(self, shifts: Any, keys: dict[int, str], note: Note) -> list[dict[str, Any]]:
        """Return the upload's warnings; note the overlaps on their features.

        SHIFTS: the matched features' centroid moves (staging.Diff.shifts); KEYS: the accepted
        features' keys by index (to name the rows written straight into the layer).
        """
        out = [w for w in (crs_suspicion(self, shifts),) if w]
        if any(isinstance(rule, NoOverlap) for rule in self.layer.rules):
            out += overlaps(self.session, self.layer, self.upload_id, keys, note)
        return out


# --------------------------------------------------------------------------- the CRS suspicion


def _metres(dx: Any, dy: Any, lat: Any) -> tuple[Any, Any]:
    """Return degree offsets (DX, DY) at latitude LAT as metres east and north."""
    return dx * np.cos(np.radians(lat)) * staging.METRES_PER_DEGREE, dy * staging.METRES_PER_DEGREE


_COMPASS = ("北", "东北", "东", "东南", "南", "西南", "西", "西北")
_COMPASS_EN = ("north", "north-east", "east", "south-east", "south", "south-west", "west", "north-west")


def _bearing(east: float, north: float) -> int:
    return round(math.degrees(math.atan2(east, north))) % 360


def _moves_evidence(shifts: Any) -> dict[str, Any] | None:
    """Return which offset the matched features' moves agree with, and how far they moved (measured)."""
    if len(shifts) < 3:
        return None
    x, y = shifts[:, 2], shifts[:, 3]
    east, north = _metres(shifts[:, 0], shifts[:, 1], y)
    for kind, (_, _, forward) in _CORRECTIONS.items():
        fx, fy = forward(x, y)
        ex, ey = _metres(fx - x, fy - y, y)
        offset = float(np.median(np.hypot(ex, ey)))
        error = float(np.median(np.hypot(east - ex, north - ey)))
        if error <= MOVES_AGREE * offset:
            e, n = float(np.median(east)), float(np.median(north))
            return {
                "kind": kind,
                "features": len(shifts),
                "offset_m": round(float(np.median(np.hypot(east, north))), 1),
                "expected_m": round(offset, 1),
                "bearing_deg": _bearing(e, n),
            }
    return None


@dataclass(frozen=True)
class _Frame:
    layer: Layer
    level: str | None

    @property
    def zh(self) -> str:
        return hierarchy.level(self.level).label() if self.level else self.layer.zh

    @property
    def en(self) -> str:
        return hierarchy.level(self.level).label_en().lower() if self.level else self.layer.en


def _frames(layer: Layer) -> list[_Frame]:
    """Return the layers (and unit levels) a feature of LAYER must lie in: its locators and Within rules."""
    found = [(loc.layer, loc.level) for loc in layer.locators]
    for rule in layer.rules:
        if isinstance(rule, Within):
            frame = REGISTRY[rule.frame]
            held = frame.units.levels if frame.units else ()
            level = next((lv for lv in held if (rule.frame, lv) in found), held[0] if len(held) == 1 else None)
            found.append((rule.frame, level))
    unique = list(dict.fromkeys(found))
    return [_Frame(REGISTRY[name], level) for name, level in unique]


def _new_sample(watch: Watch) -> list[tuple[int, str, str]]:
    """Return the sampled features whose key is not stored already (by anyone but this upload)."""
    layer, sample = watch.layer, watch.sample
    if not sample:
        return []
    stored = set(
        watch.session.execute(
            text(
                f"SELECT t.{layer.key_field} FROM unnest(CAST(:keys AS text[])) AS k(v) "
                f"JOIN {layer.table} t ON t.{layer.key_field} = k.v "
                "WHERE CAST(:upload AS integer) IS NULL OR t.upload_id IS DISTINCT FROM CAST(:upload AS integer)"
            ),
            {"keys": [k for _, k, _ in sample], "upload": watch.upload_id},
        ).scalars()
    )
    return [s for s in sample if s[1] not in stored]


def _fit(session: Session, frame: _Frame) -> dict[int, tuple[float, int, int]]:
    """Return, per variant of the staged sample, (share of extent in one unit, features not fitting, features near)."""
    conditions, params = match_sql(frame.layer.level_match(frame.level) if frame.level else (), alias="u")
    conditions += frame.layer.in_force(alias="u")
    extra = "".join(f" AND {c}" for c in conditions)
    # Extent: area for polygons, length for lines, 1 for points; the share of it inside each unit.
    rows = session.execute(
        text(
            f"""
            SELECT f.variant, f.size, max(p.part) AS best, count(p.part) AS units
            FROM {FIT} f
            LEFT JOIN LATERAL (
              SELECT CASE ST_Dimension(f.geom)
                       WHEN 2 THEN ST_Area(ST_Intersection(f.geom, u.geom)) / NULLIF(f.size, 0)
                       WHEN 1 THEN ST_Length(ST_Intersection(f.geom, u.geom)) / NULLIF(f.size, 0)
                       ELSE 1.0 END AS part
              FROM {frame.layer.table} u
              WHERE u.geom && f.geom AND ST_Intersects(u.geom, f.geom){extra}
            ) p ON true
            GROUP BY f.variant, f.idx, f.size
            """
        ),
        params,
    ).all()
    sums: dict[int, list[float]] = {}
    for variant, size, best, units in rows:
        acc = sums.setdefault(int(variant), [0.0, 0.0, 0, 0])
        best = min(float(best or 0.0), 1.0)
        acc[0] += best * float(size or 0.0)
        acc[1] += float(size or 0.0)
        acc[2] += best < FITS
        acc[3] += units > 0
    return {v: (a[0] / a[1] if a[1] else 0.0, int(a[2]), int(a[3])) for v, a in sums.items()}


def _applied(correct: Callable[[Any, Any], tuple[Any, Any]]) -> Callable[[Any], Any]:
    return lambda c: np.column_stack(correct(c[:, 0], c[:, 1]))


def _stage_variants(session: Session, geoms: Any) -> None:
    """Stage GEOMS as declared (variant 0) and corrected as each kind (1, 2…) for the fit, indexed."""
    session.execute(text(f"DROP TABLE IF EXISTS {FIT}"))
    session.execute(
        text(f"CREATE TEMPORARY TABLE {FIT} (variant smallint, idx integer, size float8, geom geometry) ON COMMIT DROP")
    )
    rows = []
    for variant, correct in enumerate([None, *(c[1] for c in _CORRECTIONS.values())]):
        moved = geoms if correct is None else shapely.transform(geoms, _applied(correct))
        rows += [(variant, i, w) for i, w in enumerate(staging.ewkb(moved))]
    staging.copy_rows(session, FIT, ["variant", "idx", "geom"], rows)
    session.execute(
        text(
            f"UPDATE {FIT} SET size = CASE ST_Dimension(geom) WHEN 2 THEN ST_Area(geom) "
            "WHEN 1 THEN ST_Length(geom) ELSE 1.0 END"
        )
    )
    session.execute(text(f"CREATE INDEX ON {FIT} USING gist (geom)"))
    session.execute(text(f"ANALYZE {FIT}"))


def _fit_evidence(watch: Watch) -> dict[str, Any] | None:
    """Return the best correction (kind, figures) when the new features fit the frame markedly better with it."""
    sample = _new_sample(watch)
    frames = _frames(watch.layer)
    if len(sample) < MIN_FEATURES or not frames:
        return None
    geoms = shapely.from_wkb(np.array([h for _, _, h in sample], dtype=object))
    session = watch.session
    _stage_variants(session, geoms)
    per_frame = []
    for frame in frames:
        fit = _fit(session, frame)
        declared = fit.get(0, (0.0, len(sample), 0))
        if max(f[2] for f in fit.values()) < MIN_FEATURES:
            continue  # no data near this upload in that frame (as declared or corrected)
        per_frame.append((frame, declared, fit))
    session.execute(text(f"DROP TABLE IF EXISTS {FIT}"))
    if not per_frame:
        return None
    best: dict[str, Any] | None = None
    for variant, kind in enumerate(_CORRECTIONS, start=1):
        misfit_declared = sum(1 - d[0] for _, d, _ in per_frame) / len(per_frame)
        misfit = sum(1 - f.get(variant, (0.0, 0, 0))[0] for _, _, f in per_frame) / len(per_frame)
        count_declared = sum(d[1] for _, d, _ in per_frame)
        count = sum(f.get(variant, (0.0, len(sample), 0))[1] for _, _, f in per_frame)
        good = all(d[0] >= GOOD_FIT for _, d, _ in per_frame)
        if good or misfit > misfit_declared / BETTER or count_declared - count < MIN_GAIN:
            continue
        if best is not None and misfit >= best["misfit"]:
            continue
        best = {"kind": kind, "variant": variant, "misfit": misfit}
    if best is None:
        return None
    variant, kind = best["variant"], best["kind"]
    centroids = shapely.centroid(geoms)
    x, y = shapely.get_x(centroids), shapely.get_y(centroids)
    cx, cy = _CORRECTIONS[kind][1](x, y)
    east, north = _metres(x - cx, y - cy, y)
    e, n = float(np.median(east)), float(np.median(north))
    return {
        "kind": kind,
        "features": len(sample),
        "offset_m": round(math.hypot(e, n), 1),
        "bearing_deg": _bearing(e, n),
        "frames": [
            {
                "layer": frame.layer.id,
                "level": frame.level,
                "zh": frame.zh,
                "en": frame.en,
                "declared": {"fit": round(declared[0], 3), "misfit": declared[1]},
                "corrected": {"fit": round(fit[variant][0], 3), "misfit": fit[variant][1]},
            }
            for frame, declared, fit in per_frame
        ],
    }


def _direction(bearing: int) -> tuple[str, str]:
    sector = round(bearing / 45) % 8
    return _COMPASS[sector], _COMPASS_EN[sector]


def crs_suspicion(watch: Watch, shifts: Any) -> dict[str, Any] | None:
    """Return one `likely_gcj02`/`likely_bd09` warning when the features look GCJ-02/BD-09 declared as WGS84.

    Two evidences, either enough: features already stored (matched by key) all moved by the
    offset; new features fit the frame's units markedly better once corrected.
    """
    if not watch.suspect_crs:
        return None
    moves = _moves_evidence(shifts)
    fit = _fit_evidence(watch)
    if moves is None and fit is None:
        return None
    kind = (fit or moves or {})["kind"]
    label = _CORRECTIONS[kind][0]
    said_zh: list[str] = []
    said_en: list[str] = []
    evidence: dict[str, Any] = {}
    if fit is not None and fit["kind"] == kind:
        evidence["fit"] = fit
        for f in fit["frames"]:
            d, c = f["declared"], f["corrected"]
            said_zh.append(
                f"按声明的坐标系，要素范围的 {d['fit']:.0%} 落在单个{f['zh']}内、"
                f"{d['misfit']} 个要素跨{f['zh']}边界或在{f['zh']}外；"
                f"按 {label} 纠偏后：{c['fit']:.0%}、{c['misfit']} 个"
            )
            said_en.append(
                f"as declared {d['fit']:.0%} of the features' extent lies in one {f['en']} and {d['misfit']} features "
                f"straddle {f['en']} boundaries or lie outside; corrected as {label}: {c['fit']:.0%}, {c['misfit']}"
            )
        zh, en = _direction(fit["bearing_deg"])
        said_zh.append(f"{fit['features']} 个新要素整体偏{zh}约 {fit['offset_m']:.0f} 米（方位 {fit['bearing_deg']}°）")
        said_en.append(
            f"the {fit['features']} new features sit ~{fit['offset_m']:.0f} m {en} "
            f"(bearing {fit['bearing_deg']}°) of where they fit"
        )
    if moves is not None and moves["kind"] == kind:
        evidence["moves"] = moves
        zh, en = _direction(moves["bearing_deg"])
        said_zh.append(
            f"{moves['features']} 个已有要素整体向{zh}移动了约 {moves['offset_m']:.0f} 米"
            f"（{label} 在此处的偏移约 {moves['expected_m']:.0f} 米）"
        )
        said_en.append(
            f"{moves['features']} stored features moved ~{moves['offset_m']:.0f} m {en} "
            f"({label} offsets ~{moves['expected_m']:.0f} m here)"
        )
    offset = (evidence.get("fit") or evidence["moves"])["offset_m"]
    bearing = (evidence.get("fit") or evidence["moves"])["bearing_deg"]
    return {
        "code": f"likely_{kind}",
        "message": "；".join(said_zh) + f"。与 {label} 偏移一致：数据可能来自{_APPS[kind]}，请声明坐标系为 {label} "
        f"({'; '.join(said_en)}. This is the {label} offset: the data may come from {_APPS_EN[kind]}; "
        f"declare crs={label})",
        "suggested_crs": label,
        "offset_m": offset,
        "bearing_deg": bearing,
        "evidence": evidence,
    }


# --------------------------------------------------------------------------- overlaps


def _mine(session: Session, layer: Layer, upload_id: int | None) -> int:
    """Gather the upload's accepted features (staged, and written straight in) into one indexed table."""
    key = layer.key_field
    session.execute(text(f"DROP TABLE IF EXISTS {MINE}"))
    direct = (
        f" UNION ALL SELECT NULL::integer, t.{key}, t.geom FROM {layer.table} t WHERE t.upload_id = :upload"
        if upload_id is not None
        else ""
    )
    session.execute(
        text(
            f"CREATE TEMPORARY TABLE {MINE} ON COMMIT DROP AS "
            f"SELECT s.idx, s.{key} AS k, s.geom FROM {staging.STAGE} s{direct}"
        ),
        {"upload": upload_id},
    )
    session.execute(text(f"CREATE INDEX ON {MINE} USING gist (geom)"))
    session.execute(text(f"CREATE INDEX ON {MINE} (k)"))
    session.execute(text(f"ANALYZE {MINE}"))
    return int(session.execute(text(f"SELECT count(*) FROM {MINE}")).scalar() or 0)


SLAB = 50_000
"""The upload's features are swept west to east this many at a time for the in-file overlap search."""
SLAB_MARGIN = 1e-4
"""Degrees a feature's box must reach short of the next slab to be kept for it (the database orders by its
float4 boxes; keeping more than needed costs a few more candidates, never a missed or doubled pair)."""


def _file_candidates(session: Session, cap: int) -> tuple[list[tuple[str, str]], int] | None:
    """Return the pairs of the upload's features (keys, smaller first) whose interiors meet, and the box pairs.

    What the indexed self-join of the staged features found, pair by pair in PostGIS (an index
    probe, ST_Intersects and ST_Touches each: seconds for 100,000 features), done here with
    shapely's bulk tree query and vectorised relate: the features are read back sorted by
    their west edge, SLAB at a time; each slab meets itself and the earlier features whose box
    still reaches into it, so every pair is met once and memory holds a slab, not the file.
    None when the box pairs reach CAP: the search that stops after CAP candidates decides then.
    """
    raw: Any = session.connection().connection.driver_connection
    keys = np.array([], dtype=object)
    geoms = np.array([], dtype=object)
    reach = np.array([], dtype=np.float64)  # the east edge of each carried feature
    found: list[tuple[str, str]] = []
    met = 0
    with raw.cursor(name="guatu_mine_sweep") as cursor:
        cursor.itersize = SLAB
        cursor.execute(f"SELECT k, ST_AsBinary(geom) FROM {MINE} ORDER BY ST_XMin(geom)")
        while True:
            rows = cursor.fetchmany(SLAB)
            if not rows:
                break
            slab_keys = np.array([r[0] for r in rows], dtype=object)
            slab = shapely.from_wkb(np.array([bytes(r[1]) for r in rows], dtype=object))
            bounds = shapely.bounds(slab)
            keep = reach >= bounds[:, 0].min() - SLAB_MARGIN
            keys = np.concatenate([keys[keep], slab_keys])
            geoms = np.concatenate([geoms[keep], slab])
            reach = np.concatenate([reach[keep], bounds[:, 2]])
            carried = int(keep.sum())
            here, there = shapely.STRtree(geoms).query(slab)  # box pairs: slab × (carried + slab)
            here = here + carried
            ordered = np.array(keys[here] < keys[there], dtype=bool)  # each pair once, named a.k < b.k
            other = np.array(keys[here] != keys[there], dtype=bool)
            single = ((there < carried) & other) | ordered  # a carried feature meets each slab feature once
            here, there = here[single], there[single]
            here, there = np.where(ordered[single], here, there), np.where(ordered[single], there, here)
            met += len(here)
            if met >= cap:
                return None
            box = shapely.bounds(geoms[here]), shapely.bounds(geoms[there])  # boxes that only touch: edges shared
            deep = (np.minimum(box[0][:, 2], box[1][:, 2]) > np.maximum(box[0][:, 0], box[1][:, 0])) & (
                np.minimum(box[0][:, 3], box[1][:, 3]) > np.maximum(box[0][:, 1], box[1][:, 1])
            )
            here, there = here[deep], there[deep]
            inside = shapely.relate_pattern(geoms[here], geoms[there], "T********")  # interiors meet
            found += zip(keys[here[inside]].tolist(), keys[there[inside]].tolist(), strict=True)
    return found, met


def _pairs(session: Session, layer: Layer, upload_id: int | None, in_file: bool, cap: int) -> tuple[list[Any], bool]:
    """Return overlapping pairs (index, key, other index, other key, m², geojson) and whether the search stopped.

    In the file: pairs of the upload's features. Stored: an upload's feature and a stored one
    of another key that this upload does not replace (an update is not an overlap with itself).
    """
    key = layer.key_field
    params: dict[str, Any] = {"cap": cap, "upload": upload_id}
    swept = _file_candidates(session, cap) if in_file else None
    if swept is not None:  # the pairs whose interiors meet, found here: only they are measured
        candidates = f"""
            SELECT a.idx AS ai, a.k AS ak, b.idx AS bi, b.k AS bk, a.geom AS ag, b.geom AS bg
            FROM unnest(CAST(:ak AS text[]), CAST(:bk AS text[])) AS p(ak, bk)
            JOIN {MINE} a ON a.k = LEAST(p.ak, p.bk) JOIN {MINE} b ON b.k = GREATEST(p.ak, p.bk)
        """
        params |= {"ak": [a for a, _ in swept[0]], "bk": [b for _, b in swept[0]]}
    elif in_file:
        candidates = f"""
            SELECT a.idx AS ai, a.k AS ak, b.idx AS bi, b.k AS bk, a.geom AS ag, b.geom AS bg
            FROM {MINE} a JOIN {MINE} b ON a.geom && b.geom
             AND a.k < b.k
        """
    else:
        candidates = f"""
            SELECT a.idx AS ai, a.k AS ak, NULL::integer AS bi, b.{key} AS bk, a.geom AS ag, b.geom AS bg
            FROM {MINE} a JOIN {layer.table} b ON a.geom && b.geom
            WHERE (CAST(:upload AS integer) IS NULL OR b.upload_id IS DISTINCT FROM CAST(:upload AS integer))
              AND NOT EXISTS (SELECT 1 FROM {MINE} r WHERE r.k = b.{key})
        """
    if swept is not None and not swept[0]:
        return [], False
    # The candidates stream through the filter (no sort, no materialised pairs): LIMIT bounds the work.
    # OFFSET 0 keeps each intersection computed once (a flattened subquery repeats it in every use);
    # interiors meet: intersects and does not only touch (twice as fast as ST_Relate with a pattern).
    rows = session.execute(
        text(
            f"""
            SELECT ai, ak, bi, bk, m2, ST_AsGeoJSON(x, 7) FROM (
              SELECT ai, ak, bi, bk, x, ST_Area(x::geography) AS m2, ST_Perimeter(x::geography) AS p FROM (
                SELECT ai, ak, bi, bk, ST_CollectionExtract(ST_Intersection(ag, bg), 3) AS x
                FROM ({candidates} LIMIT :cap) c WHERE ST_Intersects(ag, bg) AND NOT ST_Touches(ag, bg) OFFSET 0
              ) o OFFSET 0
            ) m
            WHERE m2 >= :min_m2 AND 2 * m2 / NULLIF(p, 0) >= :snap
            ORDER BY m2 DESC, ak, bk
            """
        ),
        {**params, "min_m2": OVERLAP_TOLERANCE.min_area_m2, "snap": OVERLAP_TOLERANCE.snap_m},
    ).all()
    if swept is not None:
        return list(rows), False  # fewer box pairs than the cap: the search went through
    met = session.execute(text(f"SELECT count(*) FROM ({candidates} LIMIT :cap) c"), params).scalar()
    stopped = int(met or 0) >= cap
    return list(rows), stopped


def _area_text(m2: float) -> tuple[str, str]:
    mu = mu_from_m2(m2)
    return f"{m2:,.1f} 平方米（{mu:,.2f} 亩）", f"{m2:,.1f} m² ({mu:,.2f} mu)"


def overlaps(
    session: Session, layer: Layer, upload_id: int | None, keys: dict[int, str], note: Note
) -> list[dict[str, Any]]:
    """Note on each feature the stored features and the file's other features it overlaps; return the summaries."""
    count = _mine(session, layer, upload_id)
    if not count:
        return []
    cap = CANDIDATES_PER_FEATURE * count + CANDIDATES_BASE
    index_of: dict[str, int] | None = None

    def index(found: Any, key: str) -> int | None:
        nonlocal index_of
        if found is not None:
            return int(found)
        if index_of is None:
            index_of = {k: i for i, k in keys.items()}
        return index_of.get(key)

    out: list[dict[str, Any]] = []
    per_feature: dict[int, list[dict[str, Any]]] = {}
    more: dict[int, int] = {}

    def attach(at: int | None, item: dict[str, Any]) -> None:
        if at is None:
            return
        listed = per_feature.setdefault(at, [])
        if len(listed) < NOTES_PER_FEATURE:
            listed.append(item)
        else:
            more[at] = more.get(at, 0) + 1

    unit = f"{layer.zh}"
    for in_file in (False, True):
        rows, stopped = _pairs(session, layer, upload_id, in_file, cap)
        total_m2 = sum(float(r[4]) for r in rows)
        for n, (ai, ak, bi, bk, m2, shape) in enumerate(rows[:LISTED_PAIRS]):
            zh_area, en_area = _area_text(float(m2))
            drawn = orjson.loads(shape) if n < DRAWN_PAIRS and shape and len(shape) <= DRAWN_BYTES else None
            area = {"area_m2": round(float(m2), 2), "area_mu": round(mu_from_m2(float(m2)), 4)}
            a = index(ai, ak)
            if in_file:
                b = index(bi, bk)
                for here, there, other in ((a, b, bk), (b, a, ak)):
                    item = {
                        "code": "overlaps_in_file",
                        "message": f"与文件中第 {there} 个要素（{other}）重叠 {zh_area} "
                        f"(overlaps feature #{there} ({other}) of the file by {en_area})",
                        "other": other,
                        "other_index": there,
                        **area,
                    }
                    attach(here, {**item, "geometry": drawn} if drawn else item)
            else:
                item = {
                    "code": "overlaps_stored",
                    "message": f"与已有{unit} {bk} 重叠 {zh_area} "
                    f"(overlaps stored {layer.en.lower()} {bk} by {en_area})",
                    "other": bk,
                    **area,
                }
                attach(a, {**item, "geometry": drawn} if drawn else item)
        if not rows and not stopped:
            continue
        zh_total, en_total = _area_text(total_m2)
        code = "overlaps_in_file" if in_file else "overlaps_stored"
        if in_file:
            zh = f"文件中有 {len(rows)} 对要素相互重叠，共 {zh_total}"
            en = f"{len(rows)} pairs of the file's features overlap each other, {en_total} in all"
        else:
            zh = f"有 {len(rows)} 处与已有{unit}重叠，共 {zh_total}：提交后面积（亩）会重复计算"
            en = (
                f"{len(rows)} overlaps with stored {layer.en.lower()}, {en_total} in all: "
                "the area totals would count them twice"
            )
        summary: dict[str, Any] = {
            "code": code,
            "message": f"{zh}（小于 {OVERLAP_TOLERANCE.min_area_m2:g} 平方米或平均宽度不足 "
            f"{OVERLAP_TOLERANCE.snap_m * 100:g} 厘米的重叠不计）"
            + ("；重叠对太多，检查已在中途停止" if stopped else "")
            + f" ({en}; overlaps under {OVERLAP_TOLERANCE.min_area_m2:g} m² or narrower than "
            f"{OVERLAP_TOLERANCE.snap_m * 100:g} cm are ignored"
            + ("; too many candidate pairs: the search stopped early" if stopped else "")
            + ")",
            "pairs": len(rows),
            "features": len({r[1] for r in rows} | ({r[3] for r in rows} if in_file else set())),
            "area_m2": round(total_m2, 2),
            "area_mu": round(mu_from_m2(total_m2), 4),
        }
        if stopped:
            summary["stopped"] = True
        if len(rows) > LISTED_PAIRS:
            summary["listed"] = LISTED_PAIRS
        out.append(summary)
    for at, items in per_feature.items():
        if at in more:
            items.append(
                {
                    "code": "overlaps_more",
                    "message": f"另有 {more[at]} 处重叠未列出 ({more[at]} more overlaps not listed)",
                }
            )
        note(at, items)
    session.execute(text(f"DROP TABLE IF EXISTS {MINE}"))
    return out
