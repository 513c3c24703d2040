"""Uploads: a surveyor's GeoJSON file, checked feature by feature, diffed, committed in one go.

The raw file is archived by its SHA-256 before anything else happens. The same file with
the same options is answered with the first result (idempotent), concurrent copies of one
upload are serialised on an advisory lock, and a commit is one transaction: all or
nothing by default, or only the valid features when asked.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
from sqlalchemy import DateTime, Integer, String, func, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Mapped, Session, mapped_column

import shapely
from geoalchemy2.shape import to_shape
from shapely.geometry.base import BaseGeometry

from layers.base import Layer
from layers.features import check_feature, locate_all, upsert_rows
from layers.settings import layer_settings
from spatial.crs import Axis, DeclaredCrs, crs_problems, parse_crs, to_storage, wgs84_to_gcj02
from spatial.db import Base
from spatial.errors import GuatuError, InvalidInput, NotFound, Problem, Unavailable
from spatial.geojson_in import read_geojson
from spatial.geometry import geodesic_area

Mode = Literal["all-or-nothing", "valid-only"]
METRES_PER_DEGREE = 111_320.0


class Upload(Base):
    """One upload: who sent which file (by hash), declared how, and what came of it."""

    __tablename__ = "uploads"
    __table_args__ = {"comment": "上传记录 uploads"}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    layer: Mapped[str] = mapped_column(String(40))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    options_key: Mapped[str] = mapped_column(String(64), index=True, comment="hash of the options")
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    filename: Mapped[str | None] = mapped_column(String(300))
    size_bytes: Mapped[int] = mapped_column(Integer)
    uploader: Mapped[str | None] = mapped_column(String(100))
    options: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(20), comment="dry_run, committed, rejected, failed")
    report: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


@dataclass(frozen=True)
class UploadOptions:
    """How the uploader asked for the file to be read and written."""

    crs: str | None = None
    axis: Axis = "xy"
    mode: Mode = "all-or-nothing"
    dry_run: bool = False
    repair: bool = False
    uploader: str | None = None
    filename: str | None = None
    idempotency_key: str | None = None

    def key(self, layer: Layer) -> str:
        """Return the hash of what changes the outcome (not who or under which name)."""
        canon = orjson.dumps(
            {"layer": layer.id, "crs": self.crs, "axis": self.axis, "mode": self.mode, "repair": self.repair},
            option=orjson.OPT_SORT_KEYS,
        )
        return hashlib.sha256(canon).hexdigest()


def archive(raw: bytes, sha: str) -> Path:
    """Keep RAW under its SHA-256 in the archive folder (written once, never changed)."""
    folder = layer_settings().archive_dir / sha[:2]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{sha}.geojson"
    if not path.exists():
        partial = path.with_suffix(".part")
        partial.write_bytes(raw)
        partial.replace(path)
    return path


def _declared(options: UploadOptions, crs_member: str | None) -> DeclaredCrs:
    declared = parse_crs(options.crs or crs_member, options.axis)
    if isinstance(declared, Problem):
        raise InvalidInput(declared)
    return declared


def _raw_bounds(features: list[Any]) -> tuple[float, float, float, float] | None:
    """Return the bounds of every readable coordinate, as given (before any conversion)."""
    boxes = []
    for feature in features:
        geometry = feature.get("geometry") if isinstance(feature, dict) else None
        try:
            geom = shapely.geometry.shape(geometry) if isinstance(geometry, dict) else None
        except Exception:  # noqa: BLE001 - unreadable geometry is reported per feature later
            geom = None
        if geom is not None and not geom.is_empty:
            boxes.append(geom.bounds)
    if not boxes:
        return None
    return min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)


def _existing(session: Session, layer: Layer, keys: list[str]) -> dict[str, tuple[dict[str, Any], BaseGeometry]]:
    """Return the stored properties and geometry of the features with these natural keys."""
    if not keys:
        return {}
    model = layer.model
    column = getattr(model, layer.key[0])
    rows = session.execute(select(model).where(column.in_(keys))).scalars()
    return {
        getattr(row, layer.key[0]): ({name: getattr(row, name) for name in layer.field_names}, to_shape(row.geom))
        for row in rows
    }


def _compare(
    props: dict[str, Any], geom: BaseGeometry, stored: tuple[dict[str, Any], BaseGeometry]
) -> tuple[list[str], float]:
    """Return the fields that differ and how far (metres, roughly) the geometry moved."""
    old_props, old_geom = stored
    changed = [name for name, value in props.items() if old_props.get(name) != value]
    if geom.equals_exact(old_geom, 1e-9):
        return changed, 0.0
    # Hausdorff distance on a local equirectangular scaling: good to a few per cent at street scale.
    scale = np.array([math.cos(math.radians(geom.centroid.y)), 1.0])
    local = [shapely.transform(g, lambda c: c * scale) for g in (geom, old_geom)]
    return changed, round(local[0].hausdorff_distance(local[1]) * METRES_PER_DEGREE, 3)


def run_upload(session: Session, layer: Layer, raw: bytes, options: UploadOptions) -> Upload:
    """Check, diff and (unless a dry run) commit RAW into LAYER; return the upload record.

    The caller commits the session. Malformed files and impossible CRS declarations raise;
    per-feature problems go into the report.
    """
    sha = hashlib.sha256(raw).hexdigest()
    options_key = options.key(layer)
    # One upload of these bytes with these options at a time; the second waits, then replays.
    session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": sha + options_key})
    replay = _replay(session, layer, sha, options_key, options)
    if replay is not None:
        return replay
    archive(raw, sha)
    parsed = read_geojson(raw)
    declared = _declared(options, parsed.crs_name)
    bounds = _raw_bounds(parsed.features)
    if bounds is not None:
        problems = crs_problems(bounds, declared)
        if problems:
            raise InvalidInput(problems)
    report = _check_all(session, layer, parsed.features, declared, repair=options.repair)
    summary = report["summary"]
    if options.dry_run:
        status = "dry_run"
    elif summary["rejected"] and options.mode == "all-or-nothing":
        status = "rejected"
    else:
        status = "committed"
    upload = Upload(
        layer=layer.id,
        sha256=sha,
        options_key=options_key,
        idempotency_key=options.idempotency_key,
        filename=options.filename,
        size_bytes=len(raw),
        uploader=options.uploader,
        options={
            "crs": declared.label,
            "axis": options.axis,
            "mode": options.mode,
            "dry_run": options.dry_run,
            "repair": options.repair,
        },
        status=status,
        report={k: v for k, v in report.items() if k != "rows"},
    )
    session.add(upload)
    session.flush()
    if status == "committed":
        rows = [(props, geom) for props, geom in report["rows"]]
        upsert_rows(session, layer, rows, upload_id=upload.id)
    return upload


def commit_upload(
    session: Session, fresh: Callable[[], Session], layer: Layer, raw: bytes, options: UploadOptions
) -> dict[str, Any]:
    """Run and commit the upload; if the database fails midway, record it as failed and say so.

    Nothing of a failed upload is written (its transaction is lost with the connection); a
    FRESH session records the failure, so the uploader and the upload list can see it.
    """
    try:
        upload = run_upload(session, layer, raw, options)
        session.commit()
        return upload_json(upload)
    except DBAPIError as exc:
        try:
            session.rollback()
        except DBAPIError:
            pass  # the connection is gone; the transaction went with it
        failed = _record_failure(fresh, layer, raw, options, type(exc.orig or exc).__name__)
        raise Unavailable.one(
            "upload_failed",
            f"数据库在提交时出错，本次上传（#{failed}）未写入任何数据，请重新上传",
            f"the database failed during the commit; upload #{failed} wrote nothing, upload it again",
            id=failed,
        ) from None


def _record_failure(fresh: Callable[[], Session], layer: Layer, raw: bytes, options: UploadOptions, why: str) -> int:
    """Store a failed upload record in its own transaction; return its id."""
    with fresh() as session:
        upload = Upload(
            layer=layer.id,
            sha256=hashlib.sha256(raw).hexdigest(),
            options_key=options.key(layer),
            filename=options.filename,
            size_bytes=len(raw),
            uploader=options.uploader,
            options={"crs": options.crs, "axis": options.axis, "mode": options.mode, "dry_run": options.dry_run},
            status="failed",
            report={"error": why},
        )
        session.add(upload)
        session.commit()
        return upload.id


def _replay(session: Session, layer: Layer, sha: str, options_key: str, options: UploadOptions) -> Upload | None:
    """Return the earlier result of the same upload, or refuse a reused idempotency key."""
    if options.idempotency_key:
        earlier = session.execute(
            select(Upload).where(Upload.idempotency_key == options.idempotency_key)
        ).scalar_one_or_none()
        if earlier is not None:
            if (earlier.sha256, earlier.options_key) != (sha, options_key):
                raise InvalidInput.one(
                    "idempotency_key_reused",
                    "该 Idempotency-Key 已用于另一份文件或另一组选项",
                    "this Idempotency-Key was used for a different file or options",
                    field="Idempotency-Key",
                )
            return earlier
    if options.dry_run:
        return None
    return session.execute(
        select(Upload)
        .where(Upload.sha256 == sha, Upload.options_key == options_key, Upload.status == "committed")
        .order_by(Upload.id)
        .limit(1)
    ).scalar_one_or_none()


REPAIR_AREA_TOLERANCE = 0.01
"""A repair may move a feature's area by at most this share; beyond it the feature is rejected."""


class _Repairer:
    """Convert to CGCS2000 and, when asked, make invalid geometry valid, noting what changed."""

    def __init__(self, declared: DeclaredCrs, repair: bool) -> None:
        self.declared, self.repair = declared, repair
        self.note: dict[str, Any] | None = None

    def __call__(self, geom: BaseGeometry) -> BaseGeometry:
        self.note = None
        geom = to_storage(geom, self.declared)
        if not self.repair or shapely.is_valid(geom) or geom.geom_type not in ("Polygon", "MultiPolygon"):
            return geom
        fixed = shapely.make_valid(geom)
        if fixed.geom_type == "GeometryCollection":  # keep the areal parts; lines and points are slivers
            fixed = shapely.union_all([g for g in fixed.geoms if g.geom_type in ("Polygon", "MultiPolygon")])
        before, after = geodesic_area(shapely.orient_polygons(geom)), geodesic_area(fixed)
        change = (after - before) / before if before else 1.0
        if fixed.is_empty or fixed.geom_type not in ("Polygon", "MultiPolygon"):
            raise InvalidInput.one(
                "repair_changed_type",
                f"修复后图形类型变为 {fixed.geom_type}，已拒绝",
                f"repair turned the geometry into {fixed.geom_type}; rejected",
                field="geometry",
            )
        if abs(change) > REPAIR_AREA_TOLERANCE:
            raise InvalidInput.one(
                "repair_area_changed",
                f"修复使面积变化 {change:+.1%}，超过容差 {REPAIR_AREA_TOLERANCE:.0%}，已拒绝",
                f"repair changed the area by {change:+.1%}, beyond {REPAIR_AREA_TOLERANCE:.0%}; rejected",
                field="geometry",
            )
        self.note = {
            "code": "repaired",
            "message": f"图形已修复，面积变化 {change:+.3%} (geometry repaired)",
            "area_before_m2": round(before, 2),
            "area_after_m2": round(after, 2),
            "type_before": geom.geom_type,
            "type_after": fixed.geom_type,
        }
        return fixed


def _check_all(
    session: Session, layer: Layer, features: list[Any], declared: DeclaredCrs, *, repair: bool = False
) -> dict[str, Any]:
    """Check every feature and diff the valid ones against the database by natural key."""
    entries: list[dict[str, Any]] = []
    valid: list[tuple[int, dict[str, Any], BaseGeometry]] = []
    seen: dict[str, int] = {}
    key_field = layer.key[0]
    repairer = _Repairer(declared, repair)
    for index, feature in enumerate(features):
        entry: dict[str, Any] = {"index": index}
        if isinstance(feature, dict) and feature.get("id") is not None:
            entry["id"] = feature["id"]
        raw_props = feature.get("properties") if isinstance(feature, dict) else None
        if isinstance(raw_props, dict) and isinstance(raw_props.get(key_field), str):
            entry["key"] = raw_props[key_field][:60]
        try:
            props, geom = check_feature(session, layer, feature, index=index, transform=repairer, locate=False)
        except GuatuError as exc:
            entry.update(status="rejected", problems=[p.as_dict() for p in exc.problems])
            drawn = _drawable(feature, declared)
            if drawn is not None:
                entry["geometry"] = drawn
            entries.append(entry)
            continue
        key = props[key_field]
        entry["key"] = key
        notes = [repairer.note] if repairer.note else []
        if _has_z(feature):
            notes.append({"code": "z_dropped", "message": "高程（Z）值已舍弃 (Z values dropped)"})
        if notes:
            entry["notes"] = notes
        outside = _outside_extent(geom, index)
        if outside is not None:
            entry.update(status="rejected", problems=[outside.as_dict()])
            entries.append(entry)
            continue
        if key in seen:
            problem = Problem(
                "duplicate_in_file",
                f"编码 {key} 在文件中重复（第一次出现在第 {seen[key]} 个要素）",
                f"{key_field} {key} appears twice in the file (first at feature {seen[key]})",
            )
            problem.where.feature_index, problem.where.field = index, f"properties.{key_field}"
            entry.update(status="rejected", problems=[problem.as_dict()])
            entries.append(entry)
            continue
        seen[key] = index
        valid.append((len(entries), props, geom))
        entries.append(entry)
    # Codes against location for the whole file in one statement per frame layer.
    misplaced = locate_all(session, layer, [(entries[pos]["index"], props, geom) for pos, props, geom in valid])
    if misplaced:
        for position, _, _ in valid:
            entry = entries[position]
            if entry["index"] in misplaced:
                entry.update(status="rejected", problems=[p.as_dict() for p in misplaced[entry["index"]]])
        valid = [item for item in valid if entries[item[0]]["index"] not in misplaced]
    stored = _existing(session, layer, [props[key_field] for _, props, _ in valid])
    rows = []
    for position, props, geom in valid:
        entry = entries[position]
        before = stored.get(props[key_field])
        if before is None:
            entry["status"] = "new"
        else:
            changed, moved = _compare(props, geom, before)
            if changed or moved:
                entry.update(status="changed", changed_fields=changed, moved_m=moved)
            else:
                entry["status"] = "unchanged"
        if entry["status"] != "unchanged":
            rows.append((props, geom))
    counts = {s: sum(1 for e in entries if e["status"] == s) for s in ("new", "changed", "unchanged", "rejected")}
    report: dict[str, Any] = {"summary": {"total": len(entries), **counts}, "features": entries, "rows": rows}
    warning = _gcj02_suspicion(declared, valid, stored, key_field)
    if warning:
        report["warnings"] = [warning]
    return report


def _drawable(feature: Any, declared: DeclaredCrs) -> dict[str, Any] | None:
    """Return a rejected feature's geometry in lon/lat for drawing it, when it can be read at all."""
    try:
        geom = to_storage(shapely.geometry.shape(feature["geometry"]), declared)
        if geom.is_empty or not math.isfinite(geom.bounds[0]):
            return None
        drawn: dict[str, Any] = orjson.loads(shapely.to_geojson(geom))
        return drawn
    except Exception:  # noqa: BLE001 - unreadable geometry simply is not drawn
        return None


def _has_z(feature: Any) -> bool:
    """Tell whether FEATURE's geometry carries a third coordinate."""
    try:
        return bool(shapely.has_z(shapely.geometry.shape(feature["geometry"])))
    except Exception:  # noqa: BLE001 - it has passed check_feature; this is only a note
        return False


def _outside_extent(geom: BaseGeometry, index: int) -> Problem | None:
    """Return the problem for a feature lying outside the deployment's extent, if it does."""
    minx, miny, maxx, maxy = layer_settings().extent
    x0, y0, x1, y1 = geom.bounds
    if minx <= x0 and x1 <= maxx and miny <= y0 and y1 <= maxy:
        return None
    problem = Problem(
        "outside_extent",
        f"要素位于本系统范围（经度 {minx}–{maxx}，纬度 {miny}–{maxy}）之外：坐标系或轴顺序是否声明错了？",
        "the feature lies outside this deployment's extent: is the CRS or the axis order declared wrongly?",
    )
    problem.where.feature_index, problem.where.field = index, "geometry"
    problem.where.location = [round(x0, 7), round(y0, 7)]
    return problem


def _gcj02_suspicion(
    declared: DeclaredCrs,
    valid: list[tuple[int, dict[str, Any], BaseGeometry]],
    stored: dict[str, tuple[dict[str, Any], BaseGeometry]],
    key_field: str,
) -> dict[str, Any] | None:
    """Warn when features declared WGS84/CGCS2000 all sit a GCJ-02 offset from their stored selves."""
    if declared.kind != "epsg" or declared.epsg not in (4326, 4490):
        return None
    shifts = []
    for _, props, geom in valid:
        before = stored.get(props[key_field])
        if before is not None:
            now, then = geom.centroid, before[1].centroid
            shifts.append((now.x - then.x, now.y - then.y, then.x, then.y))
    if len(shifts) < 3:
        return None
    moves = np.array(shifts)
    expected_lon, expected_lat = wgs84_to_gcj02(moves[:, 2], moves[:, 3])
    expected = np.column_stack([expected_lon - moves[:, 2], expected_lat - moves[:, 3]])
    error = np.hypot(*(moves[:, :2] - expected).T) * METRES_PER_DEGREE
    offset = float(np.median(np.hypot(*expected.T)) * METRES_PER_DEGREE)
    if float(np.median(error)) > 0.1 * offset:
        return None
    return {
        "code": "likely_gcj02",
        "message": f"这些要素整体偏离已有数据约 {offset:.0f} 米，方向与 GCJ-02（火星坐标）偏移一致："
        f"数据可能来自高德/腾讯地图，请声明坐标系为 GCJ-02 "
        f"(features sit ~{offset:.0f} m off their stored selves, as GCJ-02 does: declare GCJ-02)",
    }


def get_upload(session: Session, uid: int) -> Upload:
    """Return upload UID or raise NotFound."""
    upload = session.get(Upload, uid)
    if upload is None:
        raise NotFound.one("upload_not_found", f"没有编号为 {uid} 的上传记录", f"no upload {uid}", id=uid)
    return upload


def upload_json(upload: Upload) -> dict[str, Any]:
    """Return the public record of UPLOAD."""
    return {
        "id": upload.id,
        "layer": upload.layer,
        "status": upload.status,
        "sha256": upload.sha256,
        "filename": upload.filename,
        "size_bytes": upload.size_bytes,
        "uploader": upload.uploader,
        "options": upload.options,
        "created_at": upload.created_at.isoformat() if upload.created_at else None,
        "report": upload.report,
    }
