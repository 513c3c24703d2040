"""Staging an upload in the database: checked rows are copied into a temporary table, then
located, diffed and written with a handful of set-based statements.

This is what makes a 100,000-feature upload take seconds: no statement per feature, no
geometry travelling back to Python. The temporary table lives as long as the transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

import shapely
from shapely.geometry.base import BaseGeometry

from layers.access import shown_function
from layers.base import EXTRA, MASK_CHARS, Layer
from spatial.geometry import STORAGE_SRID

STAGE = "upload_stage"
METRES_PER_DEGREE = 111_320.0
SAME_PLACE_M = 0.0005
"""Vertices closer than half a millimetre to the stored ones are the same geometry (float noise of a
coordinate conversion), not a change."""


DIRECT = "guatu_direct"
"""The temporary table new rows are copied into before one INSERT puts them in their layer."""


def _column_types(layer: Layer) -> list[tuple[str, str]]:
    table = layer.model.__table__
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    return [(name, table.c[name].type.compile(dialect=dialect)) for name in layer.stored_names]


def create_stage(session: Session, layer: Layer) -> None:
    """Create this transaction's staging table for LAYER's rows."""
    ddl = ", ".join(f"{name} {kind}" for name, kind in _column_types(layer))
    session.execute(text(f"DROP TABLE IF EXISTS {STAGE}"))
    session.execute(
        text(
            f"CREATE TEMPORARY TABLE {STAGE} (idx integer PRIMARY KEY, {ddl}, geom geometry, "
            "masked_kept text[] NOT NULL DEFAULT '{}') ON COMMIT DROP"
        )
    )


_SRID_LE = STORAGE_SRID.to_bytes(4, "little")


def ewkb(geoms: Sequence[BaseGeometry]) -> Any:
    """Return GEOMS (2D) as hex EWKB with the storage SRID, the text COPY reads for a geometry.

    GEOS writes binary WKB much faster than hex, so the SRID flag and value are spliced
    into little-endian WKB here: byte order, type | 0x20000000, SRID, then the rest.
    """
    wkbs = shapely.to_wkb(np.asarray(geoms, dtype=object), byte_order=1, output_dimension=2)
    return np.array(
        [(w[:4] + bytes([w[4] | 0x20]) + _SRID_LE + w[5:]).hex() for w in wkbs],
        dtype=object,
    )


def copy_rows(session: Session, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """COPY ROWS (values in COLUMNS order) into TABLE on the session's connection."""
    raw: Any = session.connection().connection.driver_connection
    with raw.cursor() as cursor, cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def stage_rows(session: Session, layer: Layer, rows: Sequence[tuple[int, dict[str, Any]]], hexes: Any) -> None:
    """Stage ROWS (feature index, properties holding every field and `extra`) with their geometries as hex EWKB."""
    names = layer.field_names
    values = itemgetter(*names)
    copy_rows(
        session,
        STAGE,
        ["idx", *names, EXTRA, "geom"],
        ((index, *values(props), props.get(EXTRA), wkb) for (index, props), wkb in zip(rows, hexes, strict=True)),
    )


def insert_rows(
    session: Session, layer: Layer, rows: Sequence[tuple[int, dict[str, Any]]], hexes: Any, upload_id: int
) -> None:
    """Insert ROWS, known to be new, into LAYER's table as upload UPLOAD_ID.

    COPY into a temporary table first, then one INSERT … SELECT: PostgreSQL does not COPY into
    a table under row-level security, and the INSERT is checked by its policies row by row.
    """
    values = itemgetter(*layer.field_names)
    names = layer.stored_names  # the fields, then EXTRA
    ddl = ", ".join(f"{name} {kind}" for name, kind in _column_types(layer))
    direct = f"{DIRECT}_{layer.table}"
    session.execute(text(f"CREATE TEMPORARY TABLE IF NOT EXISTS {direct} ({ddl}, geom geometry) ON COMMIT DROP"))
    copy_rows(
        session,
        direct,
        [*names, "geom"],
        ((*values(props), props.get(EXTRA), wkb) for (_, props), wkb in zip(rows, hexes, strict=True)),
    )
    listed = ", ".join(names)
    raw: Any = session.connection().connection.driver_connection  # psycopg's own errors, as COPY raises them
    with raw.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {layer.table} ({listed}, geom, upload_id) SELECT {listed}, geom, %s FROM {direct}",
            (upload_id,),
        )
        cursor.execute(f"TRUNCATE {direct}")


def existing_keys(session: Session, layer: Layer, keys: Sequence[str]) -> set[str]:
    """Return which of KEYS LAYER already holds."""
    key = layer.key[0]
    # A join with unnest, not `= ANY(:keys)`: once psycopg prepares the statement, a generic
    # plan for ANY over thousands of keys scans the whole table comparing each row to each key.
    found = session.execute(
        text(f"SELECT t.{key} FROM unnest(CAST(:keys AS text[])) AS k(v) JOIN {layer.table} t ON t.{key} = k.v"),
        {"keys": list(keys)},
    )
    return {str(row[0]) for row in found}


def _shown(layer: Layer, name: str, alias: str = "t") -> str:
    """Return the SQL of stored personal field NAME (row ALIAS) as the acting user is shown it.

    The app role cannot read personal columns: the owner's function shows them, in full or
    masked by the user's role (layers.access).
    """
    return f"({shown_function(layer)}({alias}.id) ->> '{name}')"


@dataclass
class Masked:
    """Personal values sent back as they are shown (masked): kept, or refused when they match nothing."""

    kept: dict[int, list[str]]
    refused: dict[int, list[str]]


def keep_masked(session: Session, layer: Layer) -> Masked:
    """Put the stored value back where a staged personal field holds its masked form; list the rest.

    A value that still looks masked (holds `*`) matches no stored value: it is never written,
    and its feature is taken out of the stage (the caller reports it rejected).
    """
    key = layer.key[0]
    kept: dict[int, list[str]] = {}
    refused: dict[int, list[str]] = {}
    for name in (f.name for f in layer.fields if f.personal):
        rows = session.execute(
            text(
                f"""
                UPDATE {STAGE} s SET masked_kept = array_append(s.masked_kept, '{name}')
                FROM {layer.table} t
                WHERE t.{key} = s.{key} AND s.{name} IS NOT NULL
                  AND translate(s.{name}, :alike, :stars) = guatu_mask({_shown(layer, name)})
                RETURNING s.idx
                """
            ),
            {"alike": MASK_CHARS, "stars": "*" * len(MASK_CHARS)},
        ).scalars()
        for index in rows:
            kept.setdefault(int(index), []).append(name)
        looks = session.execute(
            text(f"SELECT idx FROM {STAGE} WHERE {name} ~ :stars AND NOT ('{name}' = ANY(masked_kept))"),
            {"stars": f"[{MASK_CHARS}]"},
        ).scalars()
        for index in looks:
            refused.setdefault(int(index), []).append(name)
    if refused:
        session.execute(text(f"DELETE FROM {STAGE} WHERE idx = ANY(:idx)"), {"idx": list(refused)})
    return Masked(kept, refused)


@dataclass
class Diff:
    """How the staged rows compare with the stored ones, by natural key."""

    new: list[int]
    changed: dict[int, tuple[list[str], float]]  # index: (fields, metres moved)
    unchanged: int
    shifts: Any  # n×4 array: centroid dx, dy and the stored centroid x, y of matched rows


def _differs(layer: Layer, name: str) -> str:
    """Return the SQL naming field NAME when the staged row changes it (NULL when it does not).

    A personal field is never compared with what is stored (its value is shown masked, and a
    diff would confirm a guess): a value sent is reported as set; one sent back masked, not.
    """
    if not layer.field(name).personal:
        return f"CASE WHEN s.{name} IS DISTINCT FROM t.{name} THEN '{name}' END"
    return (
        f"CASE WHEN '{name}' = ANY(s.masked_kept) THEN NULL WHEN s.{name} IS NOT NULL THEN '{name}' "
        f"WHEN {_shown(layer, name)} IS NOT NULL THEN '{name}' END"
    )


def diff(session: Session, layer: Layer) -> Diff:
    """Compare the staged rows with the stored ones by natural key (personal fields: see :func:`_differs`)."""
    key = layer.key[0]
    table = layer.table
    differs = ", ".join(
        [
            *(_differs(layer, name) for name in layer.field_names),
            f"CASE WHEN s.{EXTRA} IS NOT NULL AND s.{EXTRA} IS DISTINCT FROM t.{EXTRA} THEN '{EXTRA}' END",
        ]
    )
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
        if fields or (moved and (metres or 0.0) > SAME_PLACE_M):
            changed[index] = (list(fields), round(float(metres or 0.0), 3))
        else:
            unchanged += 1
    return Diff(new, changed, unchanged, np.array(shifts, dtype=np.float64).reshape(-1, 4))


_KEEP_EXTRA = f"{EXTRA} = COALESCE(s.{EXTRA}, t.{EXTRA})"
"""A row sent without other attributes (a ledger's update, a file of declared fields only) keeps the stored ones."""


def write(session: Session, layer: Layer, indexes: Iterable[int], upload_id: int) -> int:
    """Insert or update the staged rows INDEXES into the layer; return how many were written.

    A row whose personal fields were sent back masked (kept) is updated without them: the
    stored values stay (the app role could not even read them to copy them).
    """
    chosen = list(indexes)
    if not chosen:
        return 0
    groups = session.execute(
        text(
            f"SELECT masked_kept, array_agg(idx) FROM {STAGE} WHERE idx = ANY(:idx) "
            "AND cardinality(masked_kept) > 0 GROUP BY masked_kept"
        ),
        {"idx": chosen},
    ).all()
    written = 0
    key = layer.key[0]
    for kept, members in groups:
        names = [n for n in layer.field_names if n not in kept and n not in layer.key]
        sets = ", ".join([*(f"{n} = s.{n}" for n in [*names, "geom"]), _KEEP_EXTRA])
        result = session.execute(
            text(
                f"UPDATE {layer.table} t SET {sets}, updated_at = now(), upload_id = :upload "
                f"FROM {STAGE} s WHERE s.idx = ANY(:idx) AND t.{key} = s.{key}"
            ),
            {"upload": upload_id, "idx": list(members)},
        )
        written += int(getattr(result, "rowcount", 0) or 0)
        done = set(members)
        chosen = [i for i in chosen if i not in done]
    if not chosen:
        return written
    # Stored keys are updated, the others inserted. Not ON CONFLICT DO UPDATE: PostgreSQL wants
    # SELECT on every column it sets, and the app role may not read personal fields.
    names = layer.stored_names
    sets = ", ".join([*(f"{n} = s.{n}" for n in [*layer.field_names, "geom"] if n not in layer.key), _KEEP_EXTRA])
    updated = session.execute(
        text(
            f"UPDATE {layer.table} t SET {sets}, updated_at = now(), upload_id = :upload "
            f"FROM {STAGE} s WHERE s.idx = ANY(:idx) AND t.{key} = s.{key}"
        ),
        {"upload": upload_id, "idx": chosen},
    )
    written += int(getattr(updated, "rowcount", 0) or 0)
    result = session.execute(
        text(
            f"""
            INSERT INTO {layer.table} ({", ".join(names)}, geom, upload_id)
            SELECT {", ".join(f"s.{n}" for n in names)}, s.geom, :upload
            FROM unnest(CAST(:idx AS int[])) AS chosen(i) JOIN {STAGE} s ON s.idx = chosen.i
            WHERE NOT EXISTS (SELECT 1 FROM {layer.table} t WHERE t.{key} = s.{key})
            ORDER BY s.idx
            ON CONFLICT ON CONSTRAINT uq_{layer.table}_key DO NOTHING
            """
        ),
        {"upload": upload_id, "idx": chosen},
    )
    return written + int(getattr(result, "rowcount", 0) or 0)
