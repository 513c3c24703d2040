"""Boundary checks: run the topology rules each layer declares (``Layer.rules``) on the stored data.

Scope is a street, community or grid code (or everything); the frame in force on a date
(grids have valid_from / valid_to) is the one checked. The engine is
:mod:`spatial.topology`; this module only knows which layer is checked against which.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext, suppress
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
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
    Rule,
    Within,
    mask_text,
    match_sql,
)
from layers.scopes import scope_unit, unit_layers
from spatial.db import query_canceller
from spatial.errors import InvalidInput
from spatial.geometry import STORAGE_SRID
from spatial.topology import Checker, Finding, LocalMetric, Tolerance
from spatial.work import CancelToken

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
    fields: Sequence[str] | None = None,
    sql: Sequence[str] = (),
    sql_params: dict[str, Any] | None = None,
) -> list[Row]:
    """Return LAYER's features matching WHERE (of CODES), whose code starts with PREFIX or that lie NEAR a shape.

    FIELDS: only these (and the key) are read, the checks' way of reading little; SQL: more
    conditions (with SQL_PARAMS) such as a piece of a county-wide check.
    """
    conditions, params = match_sql(where)
    params["as_of"] = as_of
    params.update(sql_params or {})
    conditions += list(sql)
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
    names = layer.field_names if fields is None else [n for n in layer.field_names if n in fields]
    ordered = [layer.key_field, *(n for n in names if n != layer.key_field)]
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
    geoms = shapely.from_wkb([row[-1] for row in rows])
    return [Row(row[0], dict(zip(ordered, row[:-1], strict=True)), g) for row, g in zip(rows, geoms, strict=True)]


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


# -- a check in pieces -----------------------------------------------------------------------------------------

TILE_DEG = 0.05
"""A feature naming no community is checked with those whose bounding box starts in the same tile this size (°)."""
COVERAGE_BATCH = 25
"""Parent units (communities, streets) checked in one piece of a coverage rule."""
DEFAULT_LIMIT = 10_000
"""Findings listed by default (the counts are always exact): a county's can run to hundreds of thousands."""
Progress = Callable[[int, int], None]
"""Told (features checked so far, features to check) after each piece."""


def default_workers() -> int:
    """Return how many pieces run at once by default: ``GUATU_CHECK_PARALLEL``, else the machine's cores."""
    given = os.environ.get("GUATU_CHECK_PARALLEL", "").strip()
    return max(1, int(given)) if given.isdigit() else max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Piece:
    """One piece of a check: a rule on a community's features (or a tile's), or on a few parents' children."""

    layer: Layer
    rule: Rule
    part: str
    """The community code, ``tile:x:y`` (features naming no community), or the parents' first code."""
    weight: int
    parents: tuple[str, ...] = ()
    index: int = 0
    """Where the piece comes in the check (ties between findings keep this order)."""


@dataclass
class Checked:
    """What a check found: the first LIMIT findings in report order, and exact counts of all of them."""

    findings: list[Finding]
    counts: Counter[tuple[str, str]]
    limit: int | None
    pieces: int = 0
    features: int = 0

    @property
    def total(self) -> int:
        """Return how many findings there are in all (listed or not)."""
        return sum(self.counts.values())

    @property
    def errors(self) -> int:
        """Return the number of errors (listed or not)."""
        return sum(n for (severity, _), n in self.counts.items() if severity == "error")

    @property
    def warnings(self) -> int:
        """Return the number of warnings (listed or not)."""
        return self.total - self.errors

    @property
    def truncated(self) -> bool:
        """Tell whether some findings were counted but not listed."""
        return len(self.findings) < self.total

    def by_rule(self) -> dict[str, int]:
        """Return the number of findings of each rule."""
        out: Counter[str] = Counter()
        for (_, rule_id), n in self.counts.items():
            out[rule_id] += n
        return dict(sorted(out.items()))


SEVERITY_ORDER = {"error": 0, "warning": 1}


def _order(f: Finding) -> tuple[int, str, str, tuple[str, ...]]:
    return (SEVERITY_ORDER[f.severity], f.scope or "", f.rule, f.codes)


class _Merge:
    """Findings of many pieces merged: all counted, at most LIMIT kept (the first in report order)."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.kept: list[tuple[tuple[int, str, str, tuple[str, ...]], int, int, Finding]] = []
        self.counts: Counter[tuple[str, str]] = Counter()

    def add(self, found: list[Finding], piece: int) -> None:
        """Count FOUND (of the PIECE-th piece) and keep them; past twice the limit, keep only the first LIMIT."""
        for n, f in enumerate(found):
            self.counts[(f.severity, f.rule)] += 1
            self.kept.append((_order(f), piece, n, f))  # ties in the order of the pieces: as one pass found them
        if self.limit is not None and len(self.kept) > 2 * self.limit + 1000:
            self._trim()

    def _trim(self) -> None:
        self.kept.sort(key=lambda k: k[:3])
        if self.limit is not None:
            del self.kept[self.limit :]

    def result(self) -> list[Finding]:
        """Return the findings kept, in report order."""
        self._trim()
        return [k[3] for k in self.kept]


def chosen_rules(rules: Iterable[str] | None) -> set[str]:
    """Return the rule names asked for (all by default); an unknown one is refused."""
    chosen = set(rules) if rules else set(RULES)
    unknown = chosen - set(RULES)
    if unknown:
        raise InvalidInput.one(
            "rule_unknown",
            f"未知的检查规则 {', '.join(sorted(unknown))}（可用：{', '.join(RULES)}）",
            f"unknown rules {', '.join(sorted(unknown))} (known: {', '.join(RULES)})",
            field="rules",
        )
    return chosen


def _wanted(rule: Any, chosen: set[str]) -> bool:
    """Tell whether RULE is among the CHOSEN rule names."""
    if isinstance(rule, Coverage):
        return bool(chosen & {"coverage", "numbering"})
    names = {Within: "within", NoOverlap: "overlap", Near: "near", EveryTargetHasOne: "households"}
    return names.get(type(rule), "") in chosen


def run_checks(
    session: Session,
    *,
    scope: str | None = None,
    rules: Iterable[str] | None = None,
    as_of: dt.date | None = None,
    tolerance: Tolerance | None = None,
) -> list[Finding]:
    """Run every rule the layers declare on SCOPE (a code, or everything) as of a date; return the findings."""
    return check_all(
        lambda: nullcontext(session), scope=scope, rules=rules, as_of=as_of, tolerance=tolerance, workers=1, limit=None
    ).findings


@dataclass(frozen=True)
class _Plan:
    checker: Checker
    scope: str | None
    shape: BaseGeometry | None
    as_of: dt.date
    chosen: frozenset[str]


def check_all(
    sessions: Callable[[], AbstractContextManager[Session]],
    *,
    scope: str | None = None,
    rules: Iterable[str] | None = None,
    as_of: dt.date | None = None,
    tolerance: Tolerance | None = None,
    workers: int | None = None,
    limit: int | None = DEFAULT_LIMIT,
    progress: Progress | None = None,
    token: CancelToken | None = None,
) -> Checked:
    """Run every rule the layers declare on SCOPE (a code, or everything) as of a date, in pieces.

    A rule on a layer's features runs per community (features naming none: per tile of
    TILE_DEG), a coverage rule per few parents; WORKERS pieces at once (default: the
    cores), each worker on a session of its own from SESSIONS (a factory that hands out one
    shared session gets one worker). Memory holds the pieces under way and at most LIMIT
    findings (None: all); every finding is counted. PROGRESS is told after each piece;
    TOKEN stops the check between pieces and cancels a worker's running query.
    """
    chosen = chosen_rules(rules)
    as_of = as_of or dt.date.today()
    token = token or CancelToken()
    with sessions() as session:
        shape = scope_unit(session, scope, as_of)[0] if scope else None
        # one metric (and snapping grid) for every scope in the zone: a defect is found the same way from any scope
        checker = Checker(LocalMetric.zone([shape if shape is not None else _frame_extent(session)]), tolerance)
        plan = _Plan(checker, scope, shape, as_of, frozenset(chosen))
        with token.hook(query_canceller(session)), _cancelled_as_such(token):
            pieces = _pieces(session, plan)
    total = sum(p.weight for p in pieces)
    merged = _Merge(limit)
    done = 0
    if progress is not None:
        progress(0, total)
    for found, piece in _run_pieces(sessions, plan, pieces, workers or default_workers(), token):
        merged.add(found, piece.index)
        done += piece.weight
        if progress is not None:
            progress(done, total)
    return Checked(merged.result(), merged.counts, limit, len(pieces), total)


@contextmanager
def _cancelled_as_such(token: CancelToken) -> Iterator[None]:
    """Raise Cancelled, not the database's error, for a query cancelled because TOKEN was."""
    try:
        yield
    except DBAPIError:
        token.check()
        raise


def _run_pieces(
    sessions: Callable[[], AbstractContextManager[Session]],
    plan: _Plan,
    pieces: list[Piece],
    workers: int,
    token: CancelToken,
) -> Iterator[tuple[list[Finding], Piece]]:
    """Yield each piece's findings as it is done: in this thread, or on WORKERS threads with a session each."""
    workers = min(workers, len(pieces))
    if workers <= 1:
        with sessions() as session, token.hook(query_canceller(session)), _cancelled_as_such(token):
            for piece in pieces:
                token.check()
                yield _piece(session, plan, piece), piece
        return
    todo: queue.SimpleQueue[Piece | None] = queue.SimpleQueue()
    for piece in pieces:
        todo.put(piece)
    done: queue.Queue[tuple[list[Finding], Piece] | BaseException | None] = queue.Queue(maxsize=2 * workers)
    stop = threading.Event()
    with ExitStack() as opened:
        held: list[Session] = []
        for _ in range(workers):
            session = opened.enter_context(sessions())
            if any(session is s for s in held):
                break  # one shared session (a test's): one worker
            held.append(session)
        if len(held) == 1:
            with token.hook(query_canceller(held[0])), _cancelled_as_such(token):
                for piece in pieces:
                    token.check()
                    yield _piece(held[0], plan, piece), piece
            return

        def work(session: Session) -> None:
            try:
                with token.hook(query_canceller(session)):
                    while not stop.is_set():
                        try:
                            piece = todo.get_nowait()
                        except queue.Empty:
                            break
                        if piece is None:
                            break
                        found = _piece(session, plan, piece)
                        while not stop.is_set():
                            try:
                                done.put((found, piece), timeout=0.2)
                                break
                            except queue.Full:
                                continue
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, who raises it
                stop.set()
                done.put(exc)
            finally:
                done.put(None)

        threads = [threading.Thread(target=work, args=(s,), name=f"guatu-check-{n}") for n, s in enumerate(held)]
        for thread in threads:
            thread.start()
        try:
            running = len(threads)
            while running:
                try:
                    item = done.get(timeout=0.25)
                except queue.Empty:
                    token.check()
                    continue
                if item is None:
                    running -= 1
                elif isinstance(item, BaseException):
                    token.check()  # a query cancelled because the client left is that, not a database error
                    raise item
                else:
                    yield item
            token.check()
        finally:
            stop.set()
            while any(t.is_alive() for t in threads):  # a worker blocked on a full queue: let it go
                with suppress(queue.Empty):
                    done.get(timeout=0.05)
            for thread in threads:
                thread.join()


def _community_field(layer: Layer) -> str | None:
    """Return the field naming a feature's community (how a county's check is split), if the layer has one."""
    locator = layer.locator_for("community")
    return locator.field if locator is not None else None


def _scope_sql(plan: _Plan) -> tuple[list[str], dict[str, Any]]:
    """Return the condition keeping the features lying in the scope (none for everything)."""
    if plan.shape is None:
        return [], {}
    return [f"ST_Intersects(geom, ST_GeomFromWKB(:scope_shape, {STORAGE_SRID}))"], {
        "scope_shape": shapely.to_wkb(plan.shape)
    }


def _tile_sql(value: str, size: str) -> str:
    """Return SQL rounding VALUE / SIZE down to a whole number, as math.floor does in Python (-ceil(-x) = floor x)."""
    return f"(-ceil(-({value} / {size})))"


def _part_sql(layer: Layer, part: str) -> tuple[str, dict[str, Any]]:
    """Return the condition keeping the features of piece PART (a community, or a tile of those naming none)."""
    field_ = _community_field(layer)
    if not part.startswith("tile:"):
        return f"{field_} = :part", {"part": part}
    tx, ty = (int(v) for v in part.split(":")[1:])
    x0, y0 = tx * TILE_DEG, ty * TILE_DEG
    none = f"{field_} IS NULL AND " if field_ else ""
    return (
        f"({none}geom && ST_MakeEnvelope(:tx0, :ty0, :tx1, :ty1, {STORAGE_SRID})"
        f" AND {_tile_sql('ST_XMin(geom)', repr(TILE_DEG))} = :tx"
        f" AND {_tile_sql('ST_YMin(geom)', repr(TILE_DEG))} = :ty)",
        {"tx": tx, "ty": ty, "tx0": x0, "ty0": y0, "tx1": x0 + TILE_DEG, "ty1": y0 + TILE_DEG},
    )


def _part_of(layer: Layer, row: Row) -> str:
    """Return the piece ROW belongs to (as _part_sql splits the features)."""
    field_ = _community_field(layer)
    named = row.values.get(field_) if field_ else None
    if named is not None:
        return str(named)
    x0, y0, _, _ = row.geom.bounds
    return f"tile:{math.floor(x0 / TILE_DEG)}:{math.floor(y0 / TILE_DEG)}"


def _feature_parts(session: Session, layer: Layer, plan: _Plan, where: Match = ()) -> list[tuple[str, int]]:
    """Return the pieces LAYER's features in scope fall into, with how many features each holds, in part order."""
    field_ = _community_field(layer)
    conditions, params = match_sql(where)
    scoped, scope_params = _scope_sql(plan)
    conditions += scoped + layer.in_force(on=":as_of")
    params |= scope_params | {"as_of": plan.as_of}
    where_sql = (" WHERE " + " AND ".join(conditions)) if conditions else ""
    named = field_ or "NULL::text"
    source = f"SELECT {named} AS part, geom FROM {layer.table}{where_sql}"
    if layer.history_table:
        source += f" UNION ALL SELECT {named}, geom FROM {layer.history_table}{where_sql}"
    rows = session.execute(
        text(
            f"SELECT part, CASE WHEN part IS NULL THEN {_tile_sql('ST_XMin(geom)', ':t')}::bigint END,"
            f" CASE WHEN part IS NULL THEN {_tile_sql('ST_YMin(geom)', ':t')}::bigint END, count(*)"
            f" FROM ({source}) f GROUP BY 1, 2, 3"
        ),
        params | {"t": TILE_DEG},
    ).all()
    parts = [(str(p) if p is not None else f"tile:{tx}:{ty}", int(n)) for p, tx, ty, n in rows]
    return sorted(parts)


def _pieces(session: Session, plan: _Plan) -> list[Piece]:
    """Return the pieces of the check: per rule, per community (or tile), or per few parents."""
    pieces: list[Piece] = []
    for layer in sorted(REGISTRY.values(), key=lambda lay: lay.order):
        for rule in layer.rules:
            if not _wanted(rule, set(plan.chosen)):
                continue
            if isinstance(rule, Coverage):
                pieces += _coverage_pieces(session, plan, layer, rule)
                continue
            split = REGISTRY[rule.target] if isinstance(rule, EveryTargetHasOne) else layer
            where = rule.where if isinstance(rule, EveryTargetHasOne) else ()
            pieces += [Piece(layer, rule, part, n) for part, n in _feature_parts(session, split, plan, where)]
    return [replace(piece, index=n) for n, piece in enumerate(pieces)]


def _coverage_pieces(session: Session, plan: _Plan, layer: Layer, rule: Coverage) -> list[Piece]:
    """Return the pieces of a coverage rule: its parents in scope, a few at a time, weighed by their children."""
    scope = plan.scope
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
    conditions, params = match_sql(rule.parent_where)
    conditions += parent_layer.in_force(on=":as_of")
    where_sql = (" WHERE " + " AND ".join(conditions)) if conditions else ""
    key = parent_layer.key_field
    query = f"SELECT {key} FROM {parent_layer.table}{where_sql}"
    if parent_layer.history_table:
        query += f" UNION ALL SELECT {key} FROM {parent_layer.history_table}{where_sql}"
    codes = sorted(
        {
            str(c)
            for (c,) in session.execute(text(query), params | {"as_of": plan.as_of}).all()
            if scope is None or str(c).startswith(scope) or str(c) == own_parent
        }
    )
    if not codes:
        return []
    conditions, params = match_sql(rule.child_where(layer))
    conditions += [f"{rule.link} = ANY(CAST(:links AS text[]))", *layer.in_force(on=":as_of")]
    where_sql = " WHERE " + " AND ".join(conditions)
    source = f"SELECT {rule.link} AS link FROM {layer.table}{where_sql}"
    if layer.history_table:
        source += f" UNION ALL SELECT {rule.link} FROM {layer.history_table}{where_sql}"
    rows = session.execute(
        text(f"SELECT link, count(*) FROM ({source}) c GROUP BY 1"), params | {"links": codes, "as_of": plan.as_of}
    ).all()
    children = {str(link): int(n) for link, n in rows}
    batches = [tuple(codes[i : i + COVERAGE_BATCH]) for i in range(0, len(codes), COVERAGE_BATCH)]
    return [
        Piece(layer, rule, batch[0], sum(children.get(c, 0) + 1 for c in batch), parents=batch) for batch in batches
    ]


def _extent(rows: Sequence[Row]) -> BaseGeometry:
    """Return the bounding box of ROWS."""
    return shapely.box(*shapely.total_bounds(np.asarray([r.geom for r in rows], dtype=object)))


def _piece(session: Session, plan: _Plan, piece: Piece) -> list[Finding]:
    """Return the findings of one piece."""
    layer, rule, checker, as_of, scope = piece.layer, piece.rule, plan.checker, plan.as_of, plan.scope
    findings: list[Finding] = []
    scoped, scope_params = _scope_sql(plan)
    if isinstance(rule, Coverage):
        return _coverage_piece(session, plan, piece, rule)
    if isinstance(rule, EveryTargetHasOne):
        target = REGISTRY[rule.target]
        part, part_params = _part_sql(target, piece.part)
        targets = _load(
            session,
            target,
            where=rule.where,
            as_of=as_of,
            fields=(),
            sql=[part, *scoped],
            sql_params=part_params | scope_params,
        )
        if not targets:
            return findings
        linked = (rule.link, [t.code for t in targets])
        features = _load(
            session, layer, link_in=linked, as_of=as_of, fields=(rule.link,), sql=scoped, sql_params=scope_params
        )
        named = {f.values.get(rule.link) for f in features}
        for t in targets:
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
    part, part_params = _part_sql(layer, piece.part)
    link = getattr(rule, "link", None)
    community = _community_field(layer)
    wanted = tuple(n for n in (link, community) if n)
    features = _load(
        session, layer, as_of=as_of, fields=wanted, sql=[part, *scoped], sql_params=part_params | scope_params
    )
    if not features:
        return findings
    if isinstance(rule, Within):
        frame = REGISTRY[rule.frame]
        frames = _load(session, frame, near=_extent(features), as_of=as_of, fields=())
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
    elif isinstance(rule, NoOverlap):
        # the features of other pieces around this one: a pair across two pieces is reported by the first
        x0, y0, x1, y1 = _extent(features).bounds
        others = _load(
            session,
            layer,
            as_of=as_of,
            fields=wanted,
            sql=[
                f"NOT COALESCE({part}, false)",
                f"geom && ST_MakeEnvelope(:ox0, :oy0, :ox1, :oy1, {STORAGE_SRID})",
                *scoped,
            ],
            sql_params=part_params | scope_params | {"ox0": x0, "oy0": y0, "ox1": x1, "oy1": y1},
        )
        ranked = [(f.code, 0, f.geom) for f in features] + [
            (o.code, 1 if _part_of(layer, o) > piece.part else 2, o.geom) for o in others
        ]
        ranked = _near_another(ranked, plan.checker.tol.snap_m)
        ranked.sort(key=lambda r: (r[0], r[1]))  # in code order, as one pass over the layer has them
        rank = np.asarray([r[1] for r in ranked], dtype=np.int8)
        codes, lonlat, geoms, _ = checker.prepare([(c, g) for c, _, g in ranked], layer.zh, layer.en, scope)

        def ours(left: Any, right: Any) -> Any:
            lo, hi = np.minimum(rank[left], rank[right]), np.maximum(rank[left], rank[right])
            return (lo == 0) & (hi <= 1)

        findings += checker.overlaps(codes, lonlat, geoms, layer.zh, layer.en, scope, pairs=ours)
    elif isinstance(rule, Near):
        target = REGISTRY[rule.target]
        linked_codes = sorted({str(f.values[rule.link]) for f in features if f.values.get(rule.link) is not None})
        near_ones = _load(
            session, target, codes=linked_codes, as_of=as_of, fields=(), sql=scoped, sql_params=scope_params
        )
        by_code = {t.code: t.geom for t in near_ones}
        findings += checker.near(
            [(f.code, f.geom, f.values.get(rule.link)) for f in features],
            by_code,
            within_m=rule.within_m,
            zh=layer.zh,
            en=layer.en,
            target_zh=target.zh,
            target_en=target.en,
            scope=scope,
        )
    return findings


def _near_another(ranked: list[tuple[str, int, BaseGeometry]], snap_m: float) -> list[tuple[str, int, BaseGeometry]]:
    """Return the features of RANKED whose bounding box comes near another's of this piece's own (rank 0).

    Only they can overlap one: the rest need neither snapping nor validating (most of a county's parcels).
    """
    if len(ranked) < 2:
        return ranked
    geoms = np.asarray([g for _, _, g in ranked], dtype=object)
    bounds = shapely.bounds(geoms)
    slack = 3 * snap_m / 30_000  # degrees, generous up to 70° of latitude: snapping moves a vertex by snap_m / 2
    boxes = shapely.box(bounds[:, 0] - slack, bounds[:, 1] - slack, bounds[:, 2] + slack, bounds[:, 3] + slack)
    left, right = shapely.STRtree(boxes).query(boxes)
    own = np.asarray([r == 0 for _, r, _ in ranked])
    pair = (left != right) & (own[left] | own[right])
    keep = np.zeros(len(ranked), dtype=bool)
    keep[left[pair]] = True
    keep[right[pair]] = True
    return [r for r, k in zip(ranked, keep, strict=True) if k]


def _coverage_piece(session: Session, plan: _Plan, piece: Piece, rule: Coverage) -> list[Finding]:
    """Return the coverage (and numbering) findings of the piece's parents."""
    layer, checker, chosen = piece.layer, plan.checker, set(plan.chosen)
    parent_layer = REGISTRY[rule.parent]
    child_level = rule.child_level or (layer.units.levels[0] if layer.units else None)
    codes = list(piece.parents)
    parents = _load(session, parent_layer, where=rule.parent_where, codes=codes, as_of=plan.as_of, fields=())
    children_of: dict[str, list[Row]] = {}
    for child in _load(
        session, layer, where=rule.child_where(layer), link_in=(rule.link, codes), as_of=plan.as_of, fields=(rule.link,)
    ):
        children_of.setdefault(str(child.values.get(rule.link)), []).append(child)
    findings: list[Finding] = []
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
    return findings


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
