"""Staging an upload in the database: checked rows are copied into a temporary table, then
located, diffed and written with a handful of set-based statements.

This is what makes a 100,000-feature upload take seconds: no statement per feature, no
geometry travelling back to Python. The temporary table lives as long as the transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
from sqlalchemy import text
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

import shapely

from layers.base import REGISTRY, Layer
from layers.features import locator_scope
from spatial.errors import Problem, Where
from spatial.geometry import STORAGE_SRID

STAGE = "upload_stage"
METRES_PER_DEGREE = 111_320.0


def _column_types(layer: Layer) -> list[tuple[str, str]]:
    table = layer.model.__table__
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    return [(name, table.c[name].type.compile(dialect=dialect)) for name in layer.field_names]


@dataclass
class Stage:
    """Rows of one upload, staged in a temporary table of this transaction."""

    session: Session
    layer: Layer
    columns: list[str] = field(default_factory=list)
    _copy: Any = None
    _context: Any = None
    _cursor: Any = None
    staged: int = 0

    def __enter__(self) -> Stage:
        """Create the table and open the COPY stream."""
        types = _column_types(self.layer)
        self.columns = [name for name, _ in types]
        ddl = ", ".join(f"{name} {kind}" for name, kind in types)
        self.session.execute(text(f"DROP TABLE IF EXISTS {STAGE}"))
        self.session.execute(
            text(f"CREATE TEMPORARY TABLE {STAGE} (idx integer PRIMARY KEY, {ddl}, geom geometry) ON COMMIT DROP")
        )
        raw = self.session.connection().connection.driver_connection
        self._cursor = raw.cursor()
        self._context = self._cursor.copy(f"COPY {STAGE} (idx, {', '.join(self.columns)}, geom) FROM STDIN")
        self._copy = self._context.__enter__()
        return self

    def add(self, rows: Sequence[tuple[int, dict[str, Any]]], geoms: Any) -> None:
        """Stage ROWS (feature index, properties) with their GEOMS (CGCS2000, ready to store)."""
        if not rows:
            return
        hexes = shapely.to_wkb(
            shapely.set_srid(np.asarray(geoms, dtype=object), STORAGE_SRID), hex=True, include_srid=True
        )
        columns = self.columns
        for (index, props), wkb in zip(rows, hexes, strict=True):
            self._copy.write_row((index, *[props.get(name) for name in columns], wkb))
        self.staged += len(rows)

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        """Close the COPY stream; a refusal in Python finishes it cleanly, so the transaction lives on."""
        database_failed = kind is not None and issubclass(kind, psycopg.Error)
        self._context.__exit__(*((kind, *exc) if database_failed else (None, None, None)))
        self._cursor.close()
        if kind is None:
            self.session.execute(text(f"ANALYZE {STAGE}"))


def locate(session: Session, layer: Layer) -> dict[int, list[Problem]]:
    """Fill the staged rows' location codes from the frame layers; return the misplaced ones.

    The same rule as :func:`layers.features.locate_all`, for the whole upload at once: the
    unit holding the largest share of a geometry is its unit; a given code that disagrees,
    or that names a unit where the geometry lies in none of a loaded frame, is refused.
    """
    problems: dict[int, list[Problem]] = {}
    for loc in layer.locators:
        parent = REGISTRY[loc.layer]
        scope, params = locator_scope(parent, loc.where)
        frame = parent.table
        rows = session.execute(
            text(
                f"""
                WITH hits AS (
                    SELECT s.idx, p.{loc.code_field} AS code, p.geom AS pgeom, s.geom,
                           count(*) OVER (PARTITION BY s.idx) AS n
                    FROM {STAGE} s JOIN {frame} p ON ST_Intersects(p.geom, s.geom) AND {scope}
                ), found AS (
                    SELECT DISTINCT ON (idx) idx, code FROM hits
                    ORDER BY idx, CASE WHEN n = 1 THEN 0 ELSE -ST_Area(ST_Intersection(pgeom, geom)) END, code
                ), filled AS (
                    UPDATE {STAGE} s SET {loc.field} = f.code FROM found f
                    WHERE s.idx = f.idx AND s.{loc.field} IS NULL
                )
                SELECT s.idx, s.{loc.field}, f.code, EXISTS (SELECT 1 FROM {frame})
                FROM {STAGE} s LEFT JOIN found f USING (idx)
                WHERE s.{loc.field} IS NOT NULL AND s.{loc.field} IS DISTINCT FROM f.code
                """
            ),
            params,
        ).all()
        label = layer.field(loc.field).zh
        for index, given, found, frame_loaded in rows:
            if found is None and not frame_loaded:
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
    if problems:
        session.execute(text(f"DELETE FROM {STAGE} WHERE idx = ANY(:idx)"), {"idx": list(problems)})
    return problems


@dataclass
class Diff:
    """How the staged rows compare with the stored ones, by natural key."""

    new: list[int]
    changed: dict[int, tuple[list[str], float]]  # index: (fields, metres moved)
    unchanged: int
    shifts: Any  # n×4 array: centroid dx, dy and the stored centroid x, y of matched rows


def diff(session: Session, layer: Layer) -> Diff:
    """Compare the staged rows with the stored ones by natural key."""
    key = layer.key[0]
    table = layer.table
    differs = ", ".join(f"CASE WHEN s.{name} IS DISTINCT FROM t.{name} THEN '{name}' END" for name in layer.field_names)
    rows = session.execute(
        text(
            f"""
            SELECT s.idx, t.id IS NULL AS is_new,
                   array_remove(ARRAY[{differs}]::text[], NULL) AS fields,
                   NOT ST_OrderingEquals(s.geom, t.geom) AS moved,
                   CASE WHEN t.id IS NOT NULL AND NOT ST_OrderingEquals(s.geom, t.geom) THEN
                     ST_HausdorffDistance(
                       ST_Scale(s.geom, cos(radians(ST_Y(ST_Centroid(s.geom)))), 1),
                       ST_Scale(t.geom, cos(radians(ST_Y(ST_Centroid(s.geom)))), 1)
                     ) * {METRES_PER_DEGREE} END AS metres,
                   ST_X(ST_Centroid(s.geom)) - ST_X(ST_Centroid(t.geom)),
                   ST_Y(ST_Centroid(s.geom)) - ST_Y(ST_Centroid(t.geom)),
                   ST_X(ST_Centroid(t.geom)), ST_Y(ST_Centroid(t.geom))
            FROM {STAGE} s LEFT JOIN {table} t ON t.{key} = s.{key}
            ORDER BY s.idx
            """
        )
    ).all()
    new: list[int] = []
    changed: dict[int, tuple[list[str], float]] = {}
    unchanged = 0
    shifts = []
    for index, is_new, fields, moved, metres, dx, dy, x, y in rows:
        if is_new:
            new.append(index)
            continue
        shifts.append((dx, dy, x, y))
        if fields or moved:
            changed[index] = (list(fields), round(float(metres or 0.0), 3))
        else:
            unchanged += 1
    return Diff(new, changed, unchanged, np.array(shifts, dtype=np.float64).reshape(-1, 4))


def write(session: Session, layer: Layer, indexes: Iterable[int], upload_id: int) -> int:
    """Insert or update the staged rows INDEXES into the layer; return how many were written."""
    chosen = list(indexes)
    if not chosen:
        return 0
    names = layer.field_names
    updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in [*names, "geom"] if name not in layer.key)
    result = session.execute(
        text(
            f"""
            INSERT INTO {layer.table} ({", ".join(names)}, geom, upload_id)
            SELECT {", ".join(names)}, geom, :upload FROM {STAGE} WHERE idx = ANY(:idx) ORDER BY idx
            ON CONFLICT ON CONSTRAINT uq_{layer.table}_key DO UPDATE
            SET {updates}, updated_at = now(), upload_id = EXCLUDED.upload_id
            """
        ),
        {"upload": upload_id, "idx": chosen},
    )
    return int(result.rowcount or 0)
