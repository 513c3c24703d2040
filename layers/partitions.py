"""Layers partitioned by county: a province is many small tables, one per county and layer.

A layer declared ``partitioned=True`` (the per-county asset layers: parcels, zones, shops,
revenue points) is a PostgreSQL table partitioned by RANGE of its key, whose first six
digits are the county's code (a 宗地代码 or an asset code starts with it; a CHECK keeps its
community and grid codes in the same county). County 370214's rows live in
``parcels_370214``, FOR VALUES FROM ('370214') TO ('370215'); a key of a county that has no
table of its own lands in ``parcels_default``. The app writes and reads the parent table
only (its grants, its row-level security policies, its triggers): partitions are the
owner's, and the app role may not touch one directly (they also have row-level security
on, with no policy: nothing is visible there to anyone but the owner).

Migration 0017 makes a table per county named in ``divisions`` or in the rows already
stored; ``guatu db partition COUNTY…`` adds more, moving the county's rows out of the
default table, and ``guatu db partition --split`` gives every county found in a default
table its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import Connection, text

from layers import hierarchy
from layers.base import REGISTRY, Layer, county_range

DEFAULT = "default"


def layers() -> list[Layer]:
    """Return the layers stored as one table per county."""
    return [layer for layer in sorted(REGISTRY.values(), key=lambda x: x.order) if layer.partitioned]


def county_digits() -> int:
    """Return the digits of a county's code (the first digits of a partitioned layer's key)."""
    return hierarchy.level("county").digits


def table_of(layer: Layer, county: str) -> str:
    """Return the name of LAYER's table for COUNTY (or ``DEFAULT``)."""
    return f"{layer.table}_{county}"


def is_partition(name: str | None) -> bool:
    """Tell whether NAME is one of the per-county tables (not declared itself: the parent is)."""
    if not name:
        return False
    tables = "|".join(re.escape(layer.table) for layer in layers())
    return bool(tables) and re.fullmatch(rf"(?:{tables})_(?:[0-9]{{{county_digits()}}}|{DEFAULT})", name) is not None


def _checked_county(county: str) -> str:
    if not re.fullmatch(rf"[0-9]{{{county_digits()}}}", county):
        raise ValueError(f"not a {county_digits()}-digit county code: {county!r}")
    return county


def bounds_sql(county: str) -> str:
    """Return the FOR VALUES clause of COUNTY's table."""
    lo, hi = county_range(_checked_county(county))
    upper = f"'{hi}'" if hi else "MAXVALUE"
    return f"FOR VALUES FROM ('{lo}') TO ({upper})"


@dataclass(frozen=True)
class Part:
    """One per-county table of a layer: its county ('default' for the rest) and rows (estimated)."""

    layer: str
    table: str
    county: str
    rows: int


def parts(conn: Connection) -> list[Part]:
    """Return every per-county table of the partitioned layers, with their estimated rows."""
    out = []
    for layer in layers():
        found = conn.execute(
            text(
                "SELECT c.relname, greatest(c.reltuples, 0)::bigint FROM pg_inherits i "
                "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(:t) ORDER BY c.relname"
            ),
            {"t": layer.table},
        ).all()
        for name, rows in found:
            out.append(Part(layer.id, name, name.removeprefix(layer.table + "_"), int(rows)))
    return out


def _columns(conn: Connection, table: str) -> list[str]:
    """Return TABLE's columns a row is copied by (the generated ones are computed again)."""
    return list(
        conn.execute(
            text(
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(:t) AND attnum > 0 "
                "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum"
            ),
            {"t": table},
        ).scalars()
    )


def add_county(conn: Connection, layer: Layer, county: str) -> int:
    """Give COUNTY its own table of LAYER (nothing when it has one); return the rows moved out of the default one.

    The default table is detached while the county's rows move (the triggers of the layer are
    not run: the rows are the same rows), then attached again. Runs as the owner, in CONN's
    transaction.
    """
    county = _checked_county(county)
    name = table_of(layer, county)
    if conn.execute(text("SELECT to_regclass(:t)"), {"t": name}).scalar() is not None:
        return 0
    default = table_of(layer, DEFAULT)
    lo, hi = county_range(county)
    where = f"{layer.key_field} >= '{lo}'" + (f" AND {layer.key_field} < '{hi}'" if hi else "")
    has_default = conn.execute(text("SELECT to_regclass(:t)"), {"t": default}).scalar() is not None
    waiting = has_default and conn.execute(text(f"SELECT EXISTS (SELECT 1 FROM {default} WHERE {where})")).scalar()
    if not waiting:
        conn.exec_driver_sql(f"CREATE TABLE {name} PARTITION OF {layer.table} {bounds_sql(county)}")
        conn.exec_driver_sql(f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY")
        return 0
    columns = ", ".join(_columns(conn, layer.table))
    conn.exec_driver_sql(f"ALTER TABLE {layer.table} DETACH PARTITION {default}")
    conn.exec_driver_sql(
        f"CREATE TABLE {name} (LIKE {layer.table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED)"
    )
    moved = conn.exec_driver_sql(
        f"WITH gone AS (DELETE FROM {default} WHERE {where} RETURNING {columns}) "
        f"INSERT INTO {name} ({columns}) SELECT {columns} FROM gone"
    ).rowcount
    conn.exec_driver_sql(f"ALTER TABLE {layer.table} ATTACH PARTITION {name} {bounds_sql(county)}")
    conn.exec_driver_sql(f"ALTER TABLE {layer.table} ATTACH PARTITION {default} DEFAULT")
    conn.exec_driver_sql(f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY")
    return int(moved)


def waiting_counties(conn: Connection, layer: Layer) -> list[str]:
    """Return the counties whose rows of LAYER are in its default table (they have no table of their own)."""
    default = table_of(layer, DEFAULT)
    if conn.execute(text("SELECT to_regclass(:t)"), {"t": default}).scalar() is None:
        return []
    n = county_digits()
    return list(
        conn.execute(
            text(
                f"SELECT DISTINCT left({layer.key_field}, {n}) AS c FROM {default} "
                f"WHERE {layer.key_field} ~ '^[0-9]{{{n}}}' ORDER BY c"
            )
        ).scalars()
    )


def known_counties(conn: Connection) -> list[str]:
    """Return the counties the divisions name (the first digits of every unit's code)."""
    n = county_digits()
    held = next((layer for layer in REGISTRY.values() if layer.units and "county" in layer.units.levels), None)
    if held is None:
        return []
    return list(
        conn.execute(
            text(
                f"SELECT DISTINCT left({held.key_field}, {n}) AS c FROM {held.table} "
                f"WHERE {held.key_field} ~ '^[0-9]{{{n}}}' ORDER BY c"
            )
        ).scalars()
    )
