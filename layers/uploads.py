"""Uploads: a surveyor's GeoJSON file, checked feature by feature, diffed, committed in one go.

The file is read from disk (mapped, never copied whole into memory) and archived by its
SHA-256 once it parses. The same file with the same options is answered with the first
result (idempotent), concurrent copies of one upload are serialised on an advisory lock,
and a commit is one transaction: all or nothing by default, or only the valid features
when asked. The upload record keeps a capped report; the full one is kept as a file.
"""

from __future__ import annotations

import datetime as dt
import functools
import gc
import hashlib
import json
import logging
import math
import mmap
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np
import orjson
import psycopg
import pydantic
from sqlalchemy import DateTime, Integer, String, UniqueConstraint, func, inspect, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Mapped, Session, mapped_column

import shapely
from shapely.geometry.base import BaseGeometry

from layers import archive, staging, upload_warnings, workbook
from layers.access import area_of, key_taken_problem, outside_area_problem, stated_allows, taken_function
from layers.base import EXTRA, READ_ONLY, Layer, declared_layer
from layers.features import check_feature, locate_all, looks_masked, masked_problem
from layers.mapping import Mapper, Unmapped, masked_fields
from layers.settings import layer_settings
from spatial import formats
from spatial.crs import (
    Axis,
    DeclaredCrs,
    convert_coordinates,
    crs_problems,
    parse_crs,
    to_storage,
)
from spatial.db import SETTINGS_KEY, Base
from spatial.errors import GuatuError, InvalidInput, NotFound, Problem, Unavailable, Where
from spatial.geojson_in import Buffer, FeatureSource, member_count, open_geojson, repeated_members
from spatial.geometry import Built, build_many, geodesic_area
from spatial.work import submit

Mode = Literal["all-or-nothing", "valid-only"]


log = logging.getLogger("guatu.uploads")


class Upload(Base):
    """One upload: who sent which file (by hash), declared how, and what came of it."""

    __tablename__ = "uploads"
    __table_args__ = (
        # an Idempotency-Key is the uploader's own: another's same key is another upload
        UniqueConstraint("uploader", "idempotency_key", name="uq_uploads_uploader_idempotency_key"),
        {"comment": "上传记录 uploads"},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    layer: Mapped[str] = mapped_column(String(40))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    options_key: Mapped[str] = mapped_column(String(64), index=True, comment="hash of the options")
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
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
    import_mode: workbook.ImportMode | None = None
    """For a workbook: add (新增导入) or update (更新导入); None: add if it has geometry, else update."""
    source_layer: str | None = None
    """The layer of a file holding several (a GeoPackage's table, a zip's Shapefile, a KML folder)."""
    encoding: str | None = None
    """The text encoding of a Shapefile or CSV, overriding its .cpg and the detection."""
    mapping: dict[str, str | None] | None = None
    """File field → layer field (``mapping.KEEP``: kept as an other attribute; None: dropped), as the
    uploader confirmed it (layers.mapping.check_mapping); None: proposed from the names."""
    unmapped: Unmapped = "keep"
    """What becomes of a file field no layer field takes: kept as an other attribute, or dropped."""
    remembered: dict[str, str | None] | None = None
    """The uploader's mapping remembered from an earlier upload, preferred when none is given."""
    remember: Callable[[Session, dict[str, str | None]], None] | None = field(default=None, compare=False)
    """Called with the mapping when an upload with one is committed or dry-run (kept as the uploader's preference)."""

    def mapper(self, layer: Layer) -> Mapper:
        """Return the mapper applying these options' mapping to LAYER's features."""
        return Mapper.of(layer, self.mapping, self.remembered, self.unmapped)

    def key(self, layer: Layer) -> str:
        """Return the hash of what changes the outcome (not who or under which name)."""
        outcome: dict[str, Any] = {
            "layer": layer.id,
            "crs": self.crs,
            "axis": self.axis,
            "mode": self.mode,
            "repair": self.repair,
        }
        if self.import_mode is not None:  # absent otherwise: earlier uploads keep their keys
            outcome["import_mode"] = self.import_mode
        if self.source_layer is not None:
            outcome["source_layer"] = self.source_layer
        if self.encoding is not None:
            outcome["encoding"] = self.encoding
        if self.mapping is not None:  # so are these
            outcome["mapping"] = self.mapping
        if self.remembered:
            outcome["remembered"] = self.remembered
        if self.unmapped != "keep":
            outcome["unmapped"] = self.unmapped
        canon = orjson.dumps(outcome, option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(canon).hexdigest()


Body = bytes | Path
"""An upload's file: its bytes, or its path (mapped from disk, never read whole into memory)."""


@dataclass
class _Mapped:
    """An upload's bytes, and how to let go of the pages of it already read."""

    data: Buffer
    mapped: mmap.mmap | None = None

    def release(self) -> None:
        """Drop the file's pages from this process's memory (read again from the page cache when needed).

        A 200 MB file read through once would otherwise stay resident for the whole upload.
        """
        if self.mapped is not None:
            with suppress(OSError, ValueError):
                self.mapped.madvise(mmap.MADV_DONTNEED)


@contextmanager
def _mapped(body: Body) -> Iterator[_Mapped]:
    """Yield BODY's bytes: as they are, or a read-only map of the file."""
    if isinstance(body, bytes):
        yield _Mapped(body)
        return
    with body.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else None
    if mapped is None:
        yield _Mapped(b"")
        return
    view = memoryview(mapped)
    try:
        yield _Mapped(view, mapped)
    finally:
        with suppress(BufferError):  # features read from it may still hold views; freed with them
            view.release()
            mapped.close()


def _sha256(buffer: Buffer) -> str:
    digest = hashlib.sha256()
    for start in range(0, len(buffer), 1 << 24):
        digest.update(buffer[start : start + (1 << 24)])
    return digest.hexdigest()


def _declared(options: UploadOptions, crs_member: str | None) -> DeclaredCrs:
    declared = parse_crs(options.crs or crs_member, options.axis)
    if isinstance(declared, Problem):
        raise InvalidInput(declared)
    return declared


def _read_file(body: Body, fmt: str, options: UploadOptions) -> formats.ReadFile:
    """Read an upload of format FMT (neither GeoJSON nor a ledger) into GeoJSON, from a file of the server's own."""
    scratch = archive.spool_dir()  # the spooled upload's own disk: GDAL's copy of it is a link
    read = functools.partial(
        formats.read_vector, fmt=fmt, layer=options.source_layer, encoding=options.encoding, scratch=scratch
    )
    if isinstance(body, Path):
        return read(body)
    spooled = archive.spool_file()  # GDAL reads files: the bytes are written to one of the spool's
    try:
        spooled.write_bytes(body)
        return read(spooled)
    finally:
        spooled.unlink(missing_ok=True)


TEXT_FORMATS = ("csv", "kml", "kmz")
"""Formats whose values are all text: a value is read as a number where the layer's field is one."""


def _fit_types(layer: Layer, read: formats.ReadFile, options: UploadOptions) -> bytes:
    """Return READ's features with text read as numbers where a column maps to one of the layer's number fields.

    A CSV or KML holds text only; "1201" is a land-use code in one field and a count in
    another, which only the layer knows — and a column reaches its field by the mapping (its
    name, its Chinese label, an alias). Text that is no number is left for the checks to refuse.
    """
    numbers = {f.name: f.kind for f in layer.fields if f.kind in ("int", "float")}
    mapper = options.mapper(layer)
    kinds = {c.name: numbers[t] for c in read.fields if (t := mapper.target(c.name)) in numbers}
    if not kinds:
        return read.geojson  # no number field is fed: nothing to convert, nothing to parse again
    collection = orjson.loads(read.geojson)
    for feature in collection["features"]:
        props = feature["properties"]
        for name in kinds.keys() & props.keys():
            value = props[name]
            if isinstance(value, str):
                with suppress(ValueError):
                    number = float(value)
                    if math.isfinite(number):
                        props[name] = int(number) if kinds[name] == "int" and number.is_integer() else number
    fitted: bytes = orjson.dumps(collection)
    return fitted


def _file_options(read: formats.ReadFile) -> dict[str, Any]:
    """Return what the upload record keeps of how a file was read: format, layer, encoding and its source."""
    out: dict[str, Any] = {"format": read.format}
    if read.layer is not None:
        out["layer"] = read.layer
    if read.encoding is not None:
        out["encoding"], out["encoding_source"] = read.encoding, read.encoding_source
    return out


def _crs_conflict(options: UploadOptions, stated: str | None, declared: DeclaredCrs) -> list[dict[str, Any]]:
    """Note that the user's crs= overrides a different CRS the file states (the user wins, but is told)."""
    if not options.crs or stated is None:
        return []
    in_file = parse_crs(stated)
    if isinstance(in_file, Problem) or (in_file.kind, in_file.epsg) == (declared.kind, declared.epsg):
        return []
    return [
        formats.note(
            "crs_conflict",
            f"文件声明坐标系为 {stated}，但上传时指定了 {declared.label}：已按指定的 {declared.label} 读取",
            f"the file states {stated} but {declared.label} was declared: read as {declared.label}",
            file_crs=stated,
            declared=declared.label,
        )
    ]


def run_upload(
    session: Session,
    layer: Layer,
    body: Body,
    options: UploadOptions,
    progress: Progress | None = None,
    *,
    workers: int = 0,
) -> Upload:
    """Check, diff and (unless a dry run) commit BODY into LAYER; return the upload record.

    The caller commits the session. Malformed files and impossible CRS declarations raise;
    per-feature problems go into the report (the record keeps it capped; :func:`full_report`
    gives all of it). With WORKERS, the features are checked in that many worker processes
    (a server: the checking never holds its interpreter); without, in this thread.
    """
    with _mapped(body) as raw:
        return _run(session, layer, body, raw, options, progress, workers)


def _run(
    session: Session,
    layer: Layer,
    body: Body,
    file: _Mapped,
    options: UploadOptions,
    progress: Progress | None,
    workers: int,
) -> Upload:
    raw = file.data
    sha = _sha256(raw)
    options_key = options.key(layer)
    # One upload of these bytes with these options at a time; the second waits, then replays.
    session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": sha + options_key})
    replay = _replay(session, layer, sha, options_key, options)
    if replay is not None:
        return replay
    ledger = read = None
    fmt = formats.sniff(bytes(raw[: formats.HEAD]), options.filename)
    if fmt == "zip":
        fmt = formats.zip_format(body)  # a path, or the bytes themselves (never copied)
    if fmt == "xlsx":
        ledger = workbook.read_ledger(session, layer, body, options.import_mode)
        source = open_geojson(ledger.geojson)
        workers = 0  # a ledger is a few thousand rows, read and matched here: checked in this thread
    elif fmt == "geojson":
        source = open_geojson(raw)
    else:
        read = _read_file(body, fmt, options)
        source = open_geojson(_fit_types(layer, read, options) if read.format in TEXT_FORMATS else read.geojson)
    file.release()  # read through once: the chunks fault back in what they need, a few at a time
    archive.keep(body, sha, formats.SUFFIXES.get(read.format if read else fmt, ".geojson"))  # only a file that parses
    declared = _declared(options, source.crs_name)
    if read is not None:
        read.notes.extend(_crs_conflict(options, read.crs, declared))
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
            **({"format": "xlsx", "import_mode": ledger.mode, "sheet": ledger.sheet} if ledger else {}),
            **(_file_options(read) if read else {}),
            **({"mapping": options.mapping} if options.mapping is not None else {}),
            **({"unmapped": options.unmapped} if options.unmapped != "keep" else {}),
        },
        status="running",
        report={},
    )
    session.add(upload)
    session.flush()
    writes = session.begin_nested()  # everything this upload writes, undone at once if it ends rejected
    try:
        with _no_cyclic_gc():
            report, to_write = _check_all(
                session,
                layer,
                source,
                declared,
                repair=options.repair,
                upload_id=None if options.dry_run else upload.id,
                stop_on_reject=options.mode == "all-or-nothing",
                progress=progress,
                workers=workers,
                release=file.release,
                prejudged=ledger.rejected if ledger else None,
                mapper=options.mapper(layer),
            )
        if ledger is not None:
            ledger.annotate(layer, report)
        if read is not None:
            described = read.describe()  # kept: the samples of personal fields masked
            described["fields"] = masked_fields(layer, described["fields"], options.mapping or options.remembered)
            report["file"] = described
        summary = report["summary"]
        if options.dry_run:
            status = "dry_run"
        elif summary["rejected"] and options.mode == "all-or-nothing":
            status = "rejected"
        else:
            status = "committed"
        if status == "committed":
            write_staged(session, layer, to_write, upload.id)
            writes.commit()
        else:
            writes.rollback()
        if options.remember is not None and options.mapping is not None and status in ("committed", "dry_run"):
            options.remember(session, options.mapping)
    except BaseException:
        if writes.is_active:
            writes.rollback()
        raise
    del source  # the features' views into the mapped file
    upload.status, upload.report = status, _capped(report, upload.id)
    session.flush()
    inspect(upload).info["full_report"] = report
    if len(upload.report.get("features", ())) < len(report["features"]):
        archive.save_report(upload.id, report)
    return upload


STORED_ENTRIES = 200
"""Report entries the upload record keeps; the full report (up to 10,000) is kept as a file."""
STORED_BYTES = 256 * 1024
"""Beyond this size the stored entries lose their geometry (the page draws from the answer, not the record)."""


def _capped(report: dict[str, Any], upload_id: int) -> dict[str, Any]:
    """Return REPORT as the upload record keeps it: the first STORED_ENTRIES entries and every figure."""
    entries = report["features"]
    stored = {**report, "features": entries[:STORED_ENTRIES]}
    if len(entries) > STORED_ENTRIES:
        stored["entries_stored"] = STORED_ENTRIES
        stored["entries_total"] = len(entries)
        stored["full_report"] = f"/api/uploads/{upload_id}/report"
    if len(orjson.dumps(stored)) > STORED_BYTES:
        stored["features"] = [{k: v for k, v in e.items() if k != "geometry"} for e in stored["features"]]
    clean: dict[str, Any] = _jsonb_safe(stored)
    return clean


def _jsonb_safe(value: Any) -> Any:
    """Return VALUE with every NUL in its text (names included) shown escaped: JSONB cannot hold NUL."""
    if isinstance(value, str):
        return value.replace("\x00", "\\u0000")
    if isinstance(value, dict):
        return {_jsonb_safe(k): _jsonb_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonb_safe(v) for v in value]
    return value


def full_report(upload: Upload) -> dict[str, Any]:
    """Return UPLOAD's whole report, as far as this process or the archive still has it."""
    found: dict[str, Any] | None = inspect(upload).info.get("full_report")
    if found is not None:
        return found
    kept = archive.load_report(upload.id) if upload.report.get("full_report") else None
    return orjson.loads(kept) if kept is not None else upload.report


def write_staged(session: Session, layer: Layer, indexes: list[int], upload_id: int) -> int:
    """Write the staged features INDEXES (new or changed) as upload UPLOAD_ID; the test seam for faults."""
    return staging.write(session, layer, indexes, upload_id)


def commit_upload(
    session: Session,
    fresh: Callable[[], AbstractContextManager[Session]],
    layer: Layer,
    body: Body,
    options: UploadOptions,
    progress: Progress | None = None,
    *,
    workers: int = 0,
) -> dict[str, Any]:
    """Run and commit the upload; if the database fails midway, record it as failed and say so.

    Nothing of a failed upload is written (its transaction is lost with the connection); a
    FRESH session records the failure, so the uploader and the upload list can see it.
    """
    try:
        upload = run_upload(session, layer, body, options, progress, workers=workers)
        session.commit()
        archive.prune_now_and_then()
        return upload_json(upload, full=True)
    except (DBAPIError, psycopg.Error) as exc:  # the writer's COPY raises psycopg's own errors
        orig = getattr(exc, "orig", None) or exc  # its SQLSTATE and first line: never the values sent
        log.warning("upload failed in the database: %s %s", getattr(orig, "sqlstate", ""), str(orig).split("\n")[0])
        try:
            session.rollback()
        except (DBAPIError, psycopg.Error):
            pass  # the connection is gone; the transaction went with it
        failed = _record_failure(fresh, layer, body, options, type(getattr(exc, "orig", None) or exc).__name__)
        raise Unavailable.one(
            "upload_failed",
            f"数据库在提交时出错，本次上传（#{failed}）未写入任何数据，请重新上传",
            f"the database failed during the commit; upload #{failed} wrote nothing, upload it again",
            id=failed,
        ) from None


def _record_failure(
    fresh: Callable[[], AbstractContextManager[Session]], layer: Layer, body: Body, options: UploadOptions, why: str
) -> int:
    """Store a failed upload record in its own transaction; return its id."""
    with _mapped(body) as file:
        sha, size = _sha256(file.data), len(file.data)
    with fresh() as session:
        upload = Upload(
            layer=layer.id,
            sha256=sha,
            options_key=options.key(layer),
            filename=options.filename,
            size_bytes=size,
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
            select(Upload).where(  # each uploader's keys are their own
                Upload.idempotency_key == options.idempotency_key, Upload.uploader == options.uploader
            )
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


SLIVER_SHARE = 0.01
"""A part a repair splits off holding less than this share of the area is a sliver: dropped and reported."""


class _Repairer:
    """Convert to CGCS2000 and, when asked, make invalid geometry valid, noting what changed.

    The repair (GEOS make_valid) keeps the areal parts; parts holding under 1% of the area
    are slivers (a dent where the closing edge crossed the first) and are dropped. A
    polygon that would become several substantial ones (a bowtie: two vertices swapped?)
    is refused: which shape was meant cannot be known. So is a change of area beyond 1%.
    """

    def __init__(self, declared: DeclaredCrs, repair: bool) -> None:
        self.declared, self.repair = declared, repair
        self.note: dict[str, Any] | None = None

    def __call__(self, geom: BaseGeometry) -> BaseGeometry:
        self.note = None
        geom = to_storage(geom, self.declared)
        if not self.repair or shapely.is_valid(geom) or geom.geom_type not in ("Polygon", "MultiPolygon"):
            return geom
        fixed = shapely.make_valid(geom)
        areal = [g for g in getattr(fixed, "geoms", [fixed]) if g.geom_type in ("Polygon", "MultiPolygon")]
        parts = [p for g in areal for p in getattr(g, "geoms", [g])]
        if not parts:
            raise InvalidInput.one(
                "repair_changed_type",
                f"修复后图形类型变为 {fixed.geom_type}，已拒绝",
                f"repair turned the geometry into {fixed.geom_type}; rejected",
                field="geometry",
            )
        areas = [geodesic_area(p) for p in parts]
        total = sum(areas)
        kept = [p for p, a in zip(parts, areas, strict=True) if a >= SLIVER_SHARE * total]
        dropped = total - sum(a for a in areas if a >= SLIVER_SHARE * total)
        parts_before = len(getattr(geom, "geoms", [geom]))
        if len(kept) > parts_before:
            shown = "、".join(f"{a:,.1f}" for a in sorted(areas, reverse=True) if a >= SLIVER_SHARE * total)
            raise InvalidInput.one(
                "repair_changed_type",
                f"修复会把 {parts_before} 个面拆成 {len(kept)} 个面（面积 {shown} 平方米），无法判断原意"
                f"（是否有两个顶点顺序颠倒？），已拒绝",
                f"repair would split {parts_before} polygon(s) into {len(kept)} ({shown} m²): "
                f"the intended shape cannot be known (two vertices swapped?); rejected",
                field="geometry",
            )
        fixed = kept[0] if len(kept) == 1 else shapely.MultiPolygon(kept)
        before, after = geodesic_area(shapely.orient_polygons(geom)), geodesic_area(fixed)
        change = (after - before) / before if before else 1.0
        if abs(change) > REPAIR_AREA_TOLERANCE:
            raise InvalidInput.one(
                "repair_area_changed",
                f"修复使面积变化 {change:+.1%}，超过容差 {REPAIR_AREA_TOLERANCE:.0%}，已拒绝",
                f"repair changed the area by {change:+.1%}, beyond {REPAIR_AREA_TOLERANCE:.0%}; rejected",
                field="geometry",
            )
        self.note = {
            "code": "repaired",
            "message": f"图形已修复，面积变化 {change:+.3%}"
            + (f"，去除碎片 {dropped:.2f} 平方米" if dropped else "")
            + " (geometry repaired)",
            "area_before_m2": round(before, 2),
            "area_after_m2": round(after, 2),
            "slivers_dropped_m2": round(dropped, 2),
            "type_before": geom.geom_type,
            "type_after": fixed.geom_type,
        }
        return fixed


CHUNK = 2_000
"""Features parsed and checked at a time: memory holds a few chunks, not the file."""

WRITE_BATCH = 10_000
"""Checked features written at a time (fewer round trips for the writer thread)."""

REPORT_LIST_LIMIT = 10_000
"""Up to this many features the report lists every one; beyond it, only those with something to say."""

PREVIEW_LIMIT = 2_000
"""Up to this many features every report entry carries its geometry (CGCS2000), so the page can draw it."""

REPORT_ENTRY_LIMIT = 10_000
"""At most this many features with something to say are listed; the rest are counted (report["omitted"])."""


class _Geometry(msgspec.Struct):
    type: str
    coordinates: msgspec.Raw
    bbox: list[float] | None = None


class _Feature(msgspec.Struct):
    type: Literal["Feature"]
    properties: dict[str, Any] | None
    geometry: _Geometry
    id: str | int | float | None = None
    bbox: list[float] | None = None


_FEATURES = msgspec.json.Decoder(list[_Feature])
_FEATURE = msgspec.json.Decoder(_Feature)
_READ_ONLY = frozenset(READ_ONLY)


def _bbox_ok(bbox: list[float] | None) -> bool:
    return bbox is None or len(bbox) in (4, 6)


@dataclass
class _Checked:
    """The outcome for the features of one chunk."""

    ok: list[tuple[int, dict[str, Any], list[dict[str, Any]]]]  # index, properties, notes
    geoms: list[BaseGeometry]  # empty once handed back by a worker process: the rest is what is needed
    rejected: list[dict[str, Any]]  # report entries
    unlisted: int = 0  # refused by the schema once the report lists no more rejections: counted only
    hexes: Any = None  # the accepted geometries as hex EWKB (what COPY and the locators take)
    boxes: Any = None  # their bounds, n × 4
    previews: dict[int, Any] = field(default_factory=dict)  # index: GeoJSON geometry, for a small upload's page

    def finish(self, preview: bool) -> None:
        """Add what the writer and the report need of the geometries, so they need the geometries no more."""
        array = np.asarray(self.geoms, dtype=object)
        self.hexes = staging.ewkb(self.geoms) if self.geoms else np.array([], dtype=object)
        self.boxes = shapely.bounds(array) if self.geoms else np.zeros((0, 4))
        if preview and self.geoms:
            shown = shapely.to_geojson(array)
            self.previews = {i: orjson.loads(g) for (i, _, _), g in zip(self.ok, shown, strict=True)}


_Part = tuple[_Checked, dict[int, Any], list[tuple[float, float, float, float]], int, int, int, Any]
"""A worker's outcome for one chunk: the checked features, their ids and raw bounds, its counts."""


def check_part(
    layer_ref: tuple[str, str],
    declared: DeclaredCrs,
    repair: bool,
    part: FeatureSource,
    listing_full: bool,
    preview: bool,
    mapper: Mapper | None = None,
) -> _Part:
    """Check one chunk of an upload (in a worker process: plain data in, plain data out).

    The geometries go back as hex EWKB, bounds and (for a small upload) GeoJSON: the server
    never rebuilds them, so the chunk costs its interpreter next to nothing.
    """
    import layers  # noqa: F401 - every layer module of the package registered in the worker too

    checker = _Checker(None, declared_layer(*layer_ref), declared, repair, mapper)
    checker.listing_full = lambda: listing_full
    with _no_cyclic_gc():
        checked = checker.chunk(part, part.offset, part.count)
        checked.finish(preview)
        checked.geoms = []
    observed = checker.mapper.observed() if checker.mapper is not None else None
    return checked, checker.ids, checker.bounds, checker.fast, checker.slow, checker.counted_only, observed


class _Checker:
    """Checks the features of an upload chunk by chunk: vectorised where it can, one by one where it must."""

    def __init__(
        self,
        session: Session | None,
        layer: Layer,
        declared: DeclaredCrs,
        repair: bool,
        mapper: Mapper | None = None,
    ) -> None:
        self.session, self.layer, self.declared = session, layer, declared
        self.mapper = mapper
        """Maps each feature's properties to the layer's fields (None: the file names them as declared)."""
        self.repairer = _Repairer(declared, repair)
        self.key_field = layer.key[0]
        self.bounds: list[tuple[float, float, float, float]] = []
        self.fast = self.slow = self.counted_only = 0
        self.ids: dict[int, Any] = {}
        self.validate = layer.schema.__pydantic_validator__.validate_python
        self.listing_full: Callable[[], bool] = lambda: False
        """Whether the report lists no more rejections (then a feature the schema refuses is only counted)."""
        self.workers = 0
        """Worker processes that check the chunks (0: this thread checks them)."""
        self.preview = False
        """Whether every accepted feature's geometry goes into the report (a small upload, drawn on its page)."""
        self.prejudged: dict[int, dict[str, Any]] = {}
        """Report entries of features refused before the checks (a workbook's rows): passed on, never checked."""

    def chunks(self, source: FeatureSource) -> Iterator[tuple[int, int, _Checked]]:
        """Yield (first, stop, outcome) for every chunk of SOURCE, in order.

        With workers, each chunk is checked in a worker process while the next is already on
        its way: this thread only waits (holding no lock the server needs) and gathers.
        """
        if not self.workers:
            for first, stop in source.spans(CHUNK):
                checked = self.chunk(source, first, stop)
                checked.finish(self.preview)
                yield first, stop, checked
            return
        spans = iter(source.spans(CHUNK))
        pending: deque[tuple[int, int, Future[_Part]]] = deque()
        try:
            for _ in range(2):
                self._send(source, spans, pending)
            while pending:
                first, stop, future = pending.popleft()
                part = future.result()
                self._send(source, spans, pending)
                yield first, stop, self._merge(part)
        finally:
            for _, _, future in pending:
                future.cancel()

    def _send(self, source: FeatureSource, spans: Iterator[tuple[int, int]], pending: deque[Any]) -> None:
        span = next(spans, None)
        if span is not None:
            first, stop = span
            part = source.part(first, stop)
            layer_ref = (self.layer.id, self.layer.module)
            job = (layer_ref, self.declared, self.repairer.repair, part, self.listing_full(), self.preview, self.mapper)
            pending.append((first, stop, submit(check_part, *job, pool="uploads", workers=self.workers)))

    def _merge(self, part: _Part) -> _Checked:
        """Take in what a worker learnt checking a chunk; return its outcome."""
        checked, ids, bounds, fast, slow, counted_only, observed = part
        if observed is not None and self.mapper is not None:
            self.mapper.take(observed)
        self.ids.update(ids)
        self.bounds.extend(bounds)
        self.fast += fast
        self.slow += slow
        self.counted_only += counted_only
        return checked

    def convert(self, coords: Any) -> Any:
        return convert_coordinates(coords, self.declared)

    def chunk(self, source: FeatureSource, first: int, stop: int) -> _Checked:
        """Check features FIRST..STOP-1 of SOURCE."""
        raws = source.raw_features(first, stop)
        joined = b"[" + b",".join(raws) + b"]"
        # colons per feature, against which the members it parses to are counted (repeated names)
        colons = np.flatnonzero(np.frombuffer(joined, np.uint8) == 0x3A)
        ends = np.cumsum([len(raw) + 1 for raw in raws])
        colon_counts = np.diff(np.searchsorted(colons, ends), prepend=0).tolist()
        try:
            typed: list[_Feature | None] = list(_FEATURES.decode(joined))
        except (msgspec.ValidationError, msgspec.DecodeError):
            typed = []
            for raw in raws:
                try:
                    typed.append(_FEATURE.decode(raw))
                except (msgspec.ValidationError, msgspec.DecodeError):
                    typed.append(None)
        pending: dict[int, dict[str, Any]] = {}
        groups: dict[str, list[int]] = {}
        slow: list[int] = []
        unlisted = 0
        rejected: list[dict[str, Any]] = []
        for offset, feature in enumerate(typed):
            index = first + offset
            if index in self.prejudged:
                rejected.append(dict(self.prejudged[index]))
                continue
            if source.repeated:  # a held file repeating a member: only the one-by-one checks can say so
                slow.append(index)
                continue
            props, refused = self._properties(feature, raws[offset], colon_counts[offset])
            if props is None or feature is None:
                if refused and self.listing_full():
                    unlisted += 1  # its exact problems would not be listed: no need to find them one by one
                else:
                    slow.append(index)
                continue
            pending[index] = props
            if feature.id is not None:
                self.ids[index] = feature.id
            groups.setdefault(feature.geometry.type, []).append(index)
        ok: list[tuple[int, dict[str, Any], list[dict[str, Any]]]] = []
        geoms: list[BaseGeometry] = []
        for gtype, indexes in groups.items():
            built = self._build(gtype, [typed[i - first].geometry.coordinates for i in indexes])  # type: ignore[union-attr]
            if built is None:
                slow.extend(indexes)
                continue
            if built.raw_bounds is not None:
                self.bounds.append(built.raw_bounds)
            for position, index in enumerate(indexes):
                geom = built.geoms[position]
                if geom is None:
                    slow.append(index)
                    continue
                notes = [Z_DROPPED] if built.had_z[position] else []
                ok.append((index, pending[index], notes))
                geoms.append(geom)
        self.fast += len(ok)
        self.slow += len(slow)
        for index in sorted(slow):
            outcome = self._one(source, index)
            if isinstance(outcome, dict):
                rejected.append(outcome)
            else:
                props, geom, notes = outcome
                ok.append((index, props, notes))
                geoms.append(geom)
        self.counted_only += unlisted
        return _Checked(ok, geoms, rejected, unlisted)

    def _properties(self, feature: _Feature | None, raw: bytes, colons: int) -> tuple[dict[str, Any] | None, bool]:
        """Return the clean properties of a typed FEATURE, or None when it needs the one-by-one path.

        RAW is the feature's JSON and COLONS how many colons it holds: more than the member
        names it parsed to, and it may repeat one (or a value holds a colon), so look closer.
        The flag says the properties are refused for certain (the schema or a rule across fields).
        """
        if feature is None or not (_bbox_ok(feature.bbox) and _bbox_ok(feature.geometry.bbox)):
            return None, False
        raw_props = feature.properties or {}
        members = 3 + (feature.id is not None) + (feature.bbox is not None) + 2 + (feature.geometry.bbox is not None)
        members += len(raw_props)
        if colons > members:
            members += sum(member_count(v) for v in raw_props.values() if isinstance(v, (dict, list)))
            if colons > members and repeated_members(raw):
                return None, True
        extra = None
        if self.mapper is not None:
            raw_props, extra = self.mapper.apply(raw_props)
        if not _READ_ONLY.isdisjoint(raw_props):
            raw_props = {k: v for k, v in raw_props.items() if k not in _READ_ONLY}
        try:
            props: dict[str, Any] = self.validate(raw_props).__dict__
        except pydantic.ValidationError:
            return None, True
        for rule in self.layer.cross_rules:
            if rule(props):
                return None, True
        if extra is not None:
            props[EXTRA] = extra
        return props, False

    def _build(self, gtype: str, raws: list[msgspec.Raw]) -> Built | None:
        if gtype not in self.layer.accepts:
            return None
        return build_many(
            gtype,
            [bytes(r) for r in raws],
            convert=self.convert,
            allowed=self.layer.accepts,
            stored=self.layer.stored,
        )

    def _one(
        self, source: FeatureSource, index: int
    ) -> dict[str, Any] | tuple[dict[str, Any], BaseGeometry, list[dict[str, Any]]]:
        """Check feature INDEX with every rule, one by one; return its rejection entry or its clean parts."""
        raw = source.feature_bytes(index)
        if source.held is not None:
            feature = source.held[index]
        else:
            try:
                feature = orjson.loads(raw)
            except orjson.JSONDecodeError:  # a number beyond a double (1e400): read as ±inf, refused as such
                try:
                    feature = json.loads(raw)
                except ValueError:  # an integer of thousands of digits: Python will not even read it
                    return {"index": index, "status": "rejected", "problems": [_number_too_long(index).as_dict()]}
        entry: dict[str, Any] = {"index": index, "status": "rejected"}
        if isinstance(feature, dict) and feature.get("id") is not None:
            entry["id"] = feature["id"]
        raw_props = feature.get("properties") if isinstance(feature, dict) else None
        extra = None
        if self.mapper is not None and isinstance(raw_props, dict):
            raw_props, extra = self.mapper.apply(raw_props)
            feature = {**feature, "properties": raw_props}
        if isinstance(raw_props, dict) and isinstance(raw_props.get(self.key_field), str):
            entry["key"] = raw_props[self.key_field][:60]
        repeated = source.repeated if source.held is not None else repeated_members(raw)
        problems = [_repeated_problem(name, index) for name in repeated]
        bounds = _raw_bounds(feature)
        if bounds is not None:
            self.bounds.append(bounds)
        try:
            props, geom = check_feature(
                self.session, self.layer, feature, index=index, transform=self.repairer, locate=False
            )
        except GuatuError as exc:
            problems.extend(exc.problems)
        if problems:
            entry["problems"] = [p.as_dict() for p in problems]
            drawn = None if self.listing_full() else _drawable(feature, self.declared)
            if drawn is not None:
                entry["geometry"] = drawn
            return entry
        notes = [self.repairer.note] if self.repairer.note else []
        if _has_z(feature):
            notes.append(Z_DROPPED)
        if extra is not None:
            props[EXTRA] = extra
        return props, geom, notes


def _number_too_long(index: int) -> Problem:
    return Problem(
        "number_too_long",
        "要素中有一个数字长达数千位，无法读取（坐标、编号和属性值都应是普通数字）",
        "the feature holds a number of thousands of digits that cannot be read",
        Where(feature_index=index),
    )


Z_DROPPED = {"code": "z_dropped", "message": "高程（Z）值已舍弃 (Z values dropped)"}


def _repeated_problem(name: str, index: int) -> Problem:
    return Problem(
        "duplicate_member",
        f"成员 “{name[:40]}” 在同一对象中重复出现（JSON 只保留最后一个值，数据可能被悄悄改变）",
        f"member {name[:40]!r} appears twice in one object (JSON keeps only the last value)",
        Where(feature_index=index, field=name[:40]),
    )


def _raw_bounds(feature: Any) -> tuple[float, float, float, float] | None:
    """Return the bounds of a feature's readable coordinates, as given (before any conversion)."""
    geometry = feature.get("geometry") if isinstance(feature, dict) else None
    try:
        geom = shapely.geometry.shape(geometry) if isinstance(geometry, dict) else None
    except Exception:  # noqa: BLE001 - unreadable geometry is reported per feature
        return None
    if geom is None or geom.is_empty:
        return None
    bounds = geom.bounds
    return bounds if all(math.isfinite(v) for v in bounds) else None


def _union_bounds(boxes: list[tuple[float, float, float, float]]) -> tuple[float, float, float, float] | None:
    if not boxes:
        return None
    return min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)


def _check_crs(checker: _Checker) -> None:
    """Refuse the whole upload when its coordinates cannot be in the declared CRS."""
    bounds = _union_bounds(checker.bounds)
    if bounds is not None:
        problems = crs_problems(bounds, checker.declared)
        if problems:
            raise InvalidInput(problems)


_GC_LOCK = threading.Lock()
_GC_HOLDERS = 0


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while a big upload allocates its many small objects.

    Nothing an upload builds forms reference cycles that must die early; with the collector
    running, CPython rescans the young objects every few hundred allocations (a third of
    the checking time on 100,000 features). Nested and concurrent uploads share the pause.
    """
    global _GC_HOLDERS
    with _GC_LOCK:
        _GC_HOLDERS += 1
        if _GC_HOLDERS == 1:
            gc.disable()
    try:
        yield
    finally:
        with _GC_LOCK:
            _GC_HOLDERS -= 1
            if _GC_HOLDERS == 0:
                gc.enable()


class _Writer(threading.Thread):
    """Writes checked chunks on the upload's connection while the main thread checks the next one.

    Each chunk is located against the frame layers (codes filled or checked), then its new
    features are copied straight into the layer's table and the ones whose key is already
    stored into the staging table, to be diffed at the end. In a dry run (no UPLOAD_ID),
    or once an all-or-nothing upload has a rejected feature, everything goes to staging.
    """

    def __init__(self, session: Session, layer: Layer, upload_id: int | None) -> None:
        super().__init__(name="guatu-upload-writer", daemon=True)
        self.session, self.layer, self.upload_id = session, layer, upload_id
        self.direct = upload_id is not None
        self.chunks: queue.Queue[tuple[list[tuple[int, dict[str, Any]]], Any, Any] | None]
        self.chunks = queue.Queue(maxsize=2)  # bounded: memory holds a few chunks, never the file
        self.rows: list[tuple[int, dict[str, Any]]] = []
        self.hexes: list[Any] = []
        self.boxes: list[Any] = []
        self.new: list[int] = []
        self.misplaced: dict[int, list[Problem]] = {}
        self.error: BaseException | None = None

    def put(self, rows: list[tuple[int, dict[str, Any]]], hexes: Any, boxes: Any) -> None:
        """Hand checked rows over with their geometries as hex EWKB and bounds (written in batches).

        Raise the writer's error if it has failed.
        """
        if self.error is not None:
            raise self.error
        self.rows.extend(rows)
        self.hexes.append(hexes)
        self.boxes.append(boxes)
        if len(self.rows) >= WRITE_BATCH:
            self._hand_over()

    def _hand_over(self) -> None:
        if self.rows:
            self.chunks.put((self.rows, np.concatenate(self.hexes), np.concatenate(self.boxes)))
            self.rows, self.hexes, self.boxes = [], [], []

    def finish(self) -> None:
        """Wait for every chunk to be written; raise the writer's error if it has failed."""
        if self.error is None:
            self._hand_over()
        self.chunks.put(None)
        self.join()
        if self.error is not None:
            raise self.error

    def run(self) -> None:
        """Write chunks until told to stop; on failure keep draining so the checker never blocks."""
        try:
            for item in iter(self.chunks.get, None):
                self._write(*item)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which raises it
            self.error = exc
            while self.chunks.get() is not None:
                pass

    def _write(self, rows: list[tuple[int, dict[str, Any]]], hexes: Any, boxes: Any) -> None:
        layer, session = self.layer, self.session
        if not rows:
            return
        extent = (boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max())
        misplaced = locate_all(session, layer, rows, hexes, extent)
        stated = session.info.get(SETTINGS_KEY)
        for index, props in rows:  # outside the uploader's area: refused here, feature by feature
            code = area_of(layer, props)
            if index not in misplaced and not stated_allows(stated, code):
                misplaced[index] = [outside_area_problem(layer, code, index)]
        key = layer.key_field
        taken = set(
            session.execute(
                text(f"SELECT {taken_function(layer)}(CAST(:keys AS text[]))"), {"keys": [p[key] for _, p in rows]}
            ).scalars()
        )
        for index, props in rows:  # a key held outside the area: never reported new, never overwritten
            if index not in misplaced and props[key] in taken:
                misplaced[index] = [key_taken_problem(layer, props[key], index)]
        if misplaced:
            self.misplaced.update({i: p for i, p in misplaced.items() if i is not None})
            keep = [n for n, (index, _) in enumerate(rows) if index not in misplaced]
            rows, hexes = [rows[n] for n in keep], hexes[keep]
            if not rows:
                return
        if not self.direct or self.upload_id is None:
            staging.stage_rows(session, layer, rows, hexes)
            return
        key = layer.key[0]
        stored = staging.existing_keys(session, layer, [props[key] for _, props in rows])
        masked = {n: looks_masked(layer, props) for n, (_, props) in enumerate(rows) if props[key] not in stored}
        for n, names in masked.items():  # a new feature has no stored value a masked one could stand for
            if names:
                self.misplaced[rows[n][0]] = [masked_problem(layer, name, rows[n][0]) for name in names]
        fresh = [n for n, names in masked.items() if not names]
        if len(fresh) < len(rows):
            older = [n for n, (_, props) in enumerate(rows) if props[key] in stored]
            staging.stage_rows(session, layer, [rows[n] for n in older], hexes[older])
        if fresh:
            # Another upload may be writing the same new keys right now: its COPY wins, ours is
            # taken back to the savepoint and staged instead (written with ON CONFLICT at the end).
            session.execute(text("SAVEPOINT guatu_batch"))
            try:
                staging.insert_rows(session, layer, [rows[n] for n in fresh], hexes[fresh], self.upload_id)
            except psycopg.errors.UniqueViolation:
                session.execute(text("ROLLBACK TO SAVEPOINT guatu_batch"))
                staging.stage_rows(session, layer, [rows[n] for n in fresh], hexes[fresh])
            else:
                session.execute(text("RELEASE SAVEPOINT guatu_batch"))
                self.new.extend(rows[n][0] for n in fresh)


Progress = Callable[[int, int], None]
"""Told (features checked, total) after every chunk."""


def _check_all(
    session: Session,
    layer: Layer,
    source: FeatureSource,
    declared: DeclaredCrs,
    *,
    repair: bool = False,
    upload_id: int | None = None,
    stop_on_reject: bool = False,
    progress: Progress | None = None,
    workers: int = 0,
    release: Callable[[], None] | None = None,
    prejudged: dict[int, dict[str, Any]] | None = None,
    mapper: Mapper | None = None,
) -> tuple[dict[str, Any], list[int]]:
    """Check every feature and write or stage the valid ones; diff the staged ones by natural key.

    With UPLOAD_ID, new features are written as they come (the caller rolls back when the
    upload ends rejected); without, everything is staged (a dry run). STOP_ON_REJECT stops
    writing at the first rejected feature (all-or-nothing). PREJUDGED: report entries of
    features refused before the checks (a workbook's rows), never checked. Returns the report
    and the staged features still to write (new or changed).
    """
    checker = _Checker(session, layer, declared, repair, mapper)
    checker.prejudged = prejudged or {}
    checker.workers = workers if source.raws is not None else 0
    checker.preview = source.count <= PREVIEW_LIMIT
    report = _Report(checker, source.count)
    checker.listing_full = report.full
    seen: dict[str, int] = {}
    extent = layer_settings().extent
    key_field = checker.key_field
    staging.create_stage(session, layer)
    writer = _Writer(session, layer, upload_id)
    watch = upload_warnings.Watch(session, layer, declared, source.count, upload_id)
    writer.start()
    try:
        for first, stop, checked in checker.chunks(source):
            if first == 0:
                _check_crs(checker)  # a wrong declaration shows in the first chunk: refuse early
            for entry in checked.rejected:
                report.reject(entry)
            report.reject_unlisted(checked.unlisted)
            rows: list[tuple[int, dict[str, Any]]] = []
            kept: list[int] = []  # positions in the chunk of the rows handed to the writer
            report.previews.update(checked.previews)
            if checked.ok:
                order = np.argsort([index for index, _, _ in checked.ok], kind="stable")
                boxes = checked.boxes
                inside = (boxes[:, 0] >= extent[0]) & (boxes[:, 2] <= extent[2])
                inside &= (boxes[:, 1] >= extent[1]) & (boxes[:, 3] <= extent[3])
            for position in order if checked.ok else []:
                index, props, notes = checked.ok[position]
                key = props[key_field]
                problem = None
                if not inside[position]:
                    problem = _outside_extent(checked.boxes[position], index)
                elif key in seen:
                    problem = Problem(
                        "duplicate_in_file",
                        f"编码 {key} 在文件中重复（第一次出现在第 {seen[key]} 个要素）",
                        f"{key_field} {key} appears twice in the file (first at feature {seen[key]})",
                        Where(feature_index=index, field=f"properties.{key_field}"),
                    )
                if problem is not None:
                    entry = report.plain(index, key)
                    entry.update(status="rejected", problems=[problem.as_dict()])
                    if notes:
                        entry["notes"] = notes
                    report.reject(entry)
                    continue
                seen[key] = index
                report.keys[index] = key
                if notes:
                    report.note(index, notes)
                rows.append((index, props))
                kept.append(int(position))
            if stop_on_reject and report.rejected:
                writer.direct = False  # all-or-nothing and something is rejected: nothing will be written
            writer.put(rows, checked.hexes[kept], checked.boxes[kept])
            watch.add(rows, checked.hexes[kept])
            if release is not None:
                release()
            if progress is not None:
                progress(stop, source.count)
    finally:
        writer.finish()
    _check_crs(checker)
    masked = staging.keep_masked(session, layer)
    for index, names in masked.refused.items():
        writer.misplaced[index] = [masked_problem(layer, name, index) for name in names]
    for index, problems in writer.misplaced.items():
        report.misplaced(index, [p.as_dict() for p in problems])
    for index, names in masked.kept.items():
        report.note(index, [_kept_note(layer, names)])
    found = staging.diff(session, layer)
    warnings = watch.finish(found.shifts, report.keys, report.note)  # likely GCJ-02/BD-09, overlaps
    out = report.build(set(writer.new) | set(found.new), found)
    warnings += [w for w in (_personal_warning(layer, found),) if w]
    if warnings:
        out["warnings"] = warnings
    fields = mapper.report(layer) if mapper is not None else None
    if fields is not None:
        out["fields"] = fields
    return out, sorted([*found.new, *found.changed])


def _kept_note(layer: Layer, names: list[str]) -> dict[str, Any]:
    labels = "、".join(layer.field(n).zh for n in names)
    return {
        "code": "masked_kept",
        "message": f"{labels}为打码值，已保留库中原值 (masked value sent back: the stored value is kept)",
        "fields": names,
    }


def _personal_warning(layer: Layer, found: staging.Diff) -> dict[str, Any] | None:
    """Say that personal fields sent are written as sent, never compared (a diff would confirm a guess)."""
    personal = {f.name for f in layer.fields if f.personal}
    listed = sorted({name for fields, _ in found.changed.values() for name in fields if name in personal})
    if not listed:
        return None
    labels = "、".join(layer.field(n).zh for n in listed)
    return {
        "code": "personal_not_compared",
        "message": f"{labels}属于个人信息，按上传的值写入，不与库中的值比对，因此总列为“修改” "
        "(personal fields are written as sent and never compared with the stored value: "
        "they always show as changed)",
        "fields": listed,
    }


class _Report:
    """The per-feature report of an upload, bounded however big the file.

    Up to REPORT_LIST_LIMIT features every one is listed; beyond, only those with something
    to say, rejected first, then changed, then those with notes, at most REPORT_ENTRY_LIMIT;
    the rest are counted in "omitted". Up to PREVIEW_LIMIT features entries carry geometry.
    """

    def __init__(self, checker: _Checker, total: int) -> None:
        self.checker, self.total = checker, total
        self.keys: dict[int, str] = {}
        self.rejected_entries: dict[int, dict[str, Any]] = {}
        self.noted: dict[int, list[dict[str, Any]]] = {}
        self.rejected = 0
        self.omitted = {"rejected": 0, "changed": 0, "with_notes": 0}
        self.previews: dict[int, Any] = {}

    def plain(self, index: int, key: str | None) -> dict[str, Any]:
        entry: dict[str, Any] = {"index": index}
        if index in self.checker.ids:
            entry["id"] = _jsonb_safe(self.checker.ids[index])
        entry["key"] = _jsonb_safe(key)
        return entry

    def full(self) -> bool:
        """Whether no more rejected features will be listed (the rest are only counted)."""
        return len(self.rejected_entries) >= REPORT_ENTRY_LIMIT

    def reject_unlisted(self, count: int) -> None:
        """Count COUNT rejected features the report does not list."""
        self.rejected += count
        self.omitted["rejected"] += count

    def reject(self, entry: dict[str, Any]) -> None:
        self.rejected += 1
        for name in ("id", "key"):
            if name in entry:
                entry[name] = _jsonb_safe(entry[name])
        if len(self.rejected_entries) < REPORT_ENTRY_LIMIT:
            self.rejected_entries[entry["index"]] = entry
        else:
            self.omitted["rejected"] += 1

    def note(self, index: int, notes: list[dict[str, Any]]) -> None:
        if index in self.noted:
            self.noted[index].extend(notes)
        elif len(self.noted) < REPORT_ENTRY_LIMIT or self.total <= REPORT_LIST_LIMIT:
            self.noted[index] = list(notes)
        else:
            self.omitted["with_notes"] += 1

    def misplaced(self, index: int, problems: list[dict[str, Any]]) -> None:
        entry = self.plain(index, self.keys.pop(index, None))
        entry.update(status="rejected", problems=problems)
        notes = self.noted.pop(index, None)
        if notes:
            entry["notes"] = notes
        self.reject(entry)

    def build(self, new: set[int], found: staging.Diff) -> dict[str, Any]:
        summary = {
            "total": self.total,
            "new": len(new),
            "changed": len(found.changed),
            "unchanged": found.unchanged,
            "rejected": self.rejected,
        }

        def accepted(index: int) -> dict[str, Any]:
            entry = self.plain(index, self.keys.get(index))
            if index in found.changed:
                fields, moved = found.changed[index]
                entry.update(status="changed", changed_fields=fields, moved_m=moved)
            else:
                entry["status"] = "new" if index in new else "unchanged"
            if index in self.noted:
                entry["notes"] = self.noted[index]
            return entry

        if self.total <= REPORT_LIST_LIMIT:
            entries = [self.rejected_entries.get(i) or accepted(i) for i in range(self.total)]
            listed = "all"
        else:
            room = REPORT_ENTRY_LIMIT - len(self.rejected_entries)
            changed = sorted(found.changed)
            noted = sorted(i for i in self.noted if i not in found.changed)
            self.omitted["changed"] += max(0, len(changed) - room)
            room = max(0, room - len(changed))
            self.omitted["with_notes"] += max(0, len(noted) - room)
            picked = changed[: max(0, REPORT_ENTRY_LIMIT - len(self.rejected_entries))] + noted[:room]
            entries = sorted([*self.rejected_entries.values(), *map(accepted, picked)], key=lambda e: e["index"])
            listed = "problems"
        for entry in entries:
            if entry["index"] in self.previews and "geometry" not in entry:
                entry["geometry"] = self.previews[entry["index"]]
        out: dict[str, Any] = {"summary": summary, "features": entries, "listed": listed}
        if any(self.omitted.values()):
            out["omitted"] = {k: v for k, v in self.omitted.items() if v}
        out["checked"] = {
            "vectorised": self.checker.fast,
            "one_by_one": self.checker.slow,
            "refused_unlisted": self.checker.counted_only,
        }
        return out


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


def _outside_extent(bounds: Any, index: int) -> Problem | None:
    """Return the problem for a feature (of these BOUNDS) lying outside the deployment's extent, if it does."""
    minx, miny, maxx, maxy = layer_settings().extent
    x0, y0, x1, y1 = (float(v) for v in bounds)
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


def get_upload(session: Session, uid: int) -> Upload:
    """Return upload UID or raise NotFound."""
    upload = session.get(Upload, uid)
    if upload is None:
        raise NotFound.one("upload_not_found", f"没有编号为 {uid} 的上传记录", f"no upload {uid}", id=uid)
    return upload


def upload_json(upload: Upload, *, full: bool = False) -> dict[str, Any]:
    """Return the public record of UPLOAD (with its FULL report: the answer to the upload itself)."""
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
        "report": full_report(upload) if full else upload.report,
    }
