"""Layers partitioned by county: parcels, zones, shops and revenue points become one table per county.

Each table is rebuilt as a table PARTITIONED BY RANGE (code): a key's first six digits are
its county's code, so county 370214's rows are in ``<table>_370214`` (FROM ('370214') TO
('370215')) and keys of a county without a table of its own in ``<table>_default``. A
table is made for every county the divisions name and every county already in the rows.

What changes besides: the primary key is (id, code) (PostgreSQL wants the partition key in
it; ids still come from the one sequence), and a CHECK keeps a feature's community and grid
codes in its key's county (``ck_<table>_county_of_key``), so that a query narrowed to a
county by community code may also be narrowed by key, which is what picks the county's
table. Everything else is carried over from the catalog as it stands: CHECK constraints,
defaults, the generated area, comments, indexes, unique keys, triggers, row-level security
and its policies. The downgrade rebuilds plain tables the same way (primary key (id), no
county CHECK). Rows are copied as they are; no trigger runs while they are (no change log,
no generation raised: nothing others see changes).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05 23:30:00
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy import Connection, text

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("parcels", "zones", "shops", "revenue_points")
"""The layer tables partitioned at this revision."""
KEY = "code"
COUNTY_DIGITS = 6
LOCATORS = {
    "parcels": ("community_code", "grid_code"),
    "zones": ("community_code", "grid_code"),
    "shops": ("community_code", "grid_code"),
    "revenue_points": ("community_code", "grid_code"),
}
"""The fields naming a feature's units, kept in its key's county."""


def _bounds(county: str) -> str:
    digits = county.rstrip("9")
    if not digits:
        return f"FOR VALUES FROM ('{county}') TO (MAXVALUE)"
    upper = (digits[:-1] + str(int(digits[-1]) + 1)).ljust(len(county), "0")
    return f"FOR VALUES FROM ('{county}') TO ('{upper}')"


def _one(conn: Connection, sql: str, **params: object) -> object:
    return conn.execute(text(sql), params).scalar()


def _rebuild(conn: Connection, table: str, partitioned: bool) -> None:
    """Rebuild TABLE as a table partitioned by county (or back as a plain one), keeping all it holds."""
    old = f"{table}_rebuilt"
    oid = _one(conn, "SELECT to_regclass(:t)::oid", t=table)
    comment = _one(conn, "SELECT obj_description(CAST(:o AS oid), 'pg_class')", o=oid)
    keys = conn.execute(
        text(
            "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = CAST(:o AS oid) AND contype IN ('p', 'u', 'f', 'x') ORDER BY contype, conname"
        ),
        {"o": oid},
    ).all()
    indexes = conn.execute(
        text(
            "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = CAST(:o AS oid) AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid) "
            "ORDER BY c.relname"
        ),
        {"o": oid},
    ).all()
    triggers = conn.execute(
        text(
            "SELECT tgname, pg_get_triggerdef(oid), tgenabled FROM pg_trigger "
            "WHERE tgrelid = CAST(:o AS oid) AND NOT tgisinternal ORDER BY tgname"
        ),
        {"o": oid},
    ).all()
    policies = conn.execute(
        text(
            "SELECT polname, polpermissive, polcmd, pg_get_expr(polqual, polrelid), "
            "pg_get_expr(polwithcheck, polrelid), "
            "ARRAY(SELECT CASE WHEN r = 0 THEN 'public' ELSE quote_ident(pg_get_userbyid(r)) END "
            "FROM unnest(polroles) AS r) FROM pg_policy WHERE polrelid = CAST(:o AS oid) ORDER BY polname"
        ),
        {"o": oid},
    ).all()
    secured = _one(conn, "SELECT relrowsecurity FROM pg_class WHERE oid = CAST(:o AS oid)", o=oid)
    sequence = _one(conn, "SELECT pg_get_serial_sequence(:t, 'id')", t=table)
    columns = ", ".join(
        conn.execute(
            text(
                "SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = CAST(:o AS oid) AND attnum > 0 "
                "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum"
            ),
            {"o": oid},
        ).scalars()
    )
    counties: list[str] = []
    if partitioned:
        n = COUNTY_DIGITS
        counties = list(
            conn.execute(
                text(
                    f"SELECT left(code, {n}) FROM divisions WHERE code ~ '^[0-9]{{{n}}}' UNION "
                    f"SELECT left({KEY}, {n}) FROM {table} WHERE {KEY} ~ '^[0-9]{{{n}}}' ORDER BY 1"
                )
            ).scalars()
        )

    if sequence:
        conn.exec_driver_sql(f"ALTER SEQUENCE {sequence} OWNED BY NONE")
    conn.exec_driver_sql(f"ALTER TABLE {table} RENAME TO {old}")
    for name, contype, _ in keys:
        if contype != "f":
            conn.exec_driver_sql(f'ALTER TABLE {old} DROP CONSTRAINT "{name}"')
    for name, _ in indexes:
        conn.exec_driver_sql(f'DROP INDEX "{name}"')
    by = f" PARTITION BY RANGE ({KEY})" if partitioned else ""
    conn.exec_driver_sql(
        f"CREATE TABLE {table} (LIKE {old} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED "
        f"INCLUDING COMMENTS INCLUDING STORAGE INCLUDING STATISTICS){by}"
    )
    if comment is not None:
        conn.exec_driver_sql(f"COMMENT ON TABLE {table} IS '" + str(comment).replace("'", "''") + "'")
    county_check = f"ck_{table}_county_of_key"
    if partitioned:
        parts = [f"({f} IS NULL OR left({f}, {COUNTY_DIGITS}) = left({KEY}, {COUNTY_DIGITS}))" for f in LOCATORS[table]]
        conn.exec_driver_sql(f"ALTER TABLE {table} ADD CONSTRAINT {county_check} CHECK ({' AND '.join(parts)})")
    else:
        conn.exec_driver_sql(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {county_check}")
    for name, contype, definition in keys:
        if contype == "p":
            definition = f"PRIMARY KEY (id, {KEY})" if partitioned else "PRIMARY KEY (id)"
        conn.exec_driver_sql(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    for _, definition in indexes:
        conn.exec_driver_sql(definition.replace(" ON ONLY ", " ON ", 1))
    for county in counties:
        conn.exec_driver_sql(f"CREATE TABLE {table}_{county} PARTITION OF {table} {_bounds(county)}")
        conn.exec_driver_sql(f"ALTER TABLE {table}_{county} ENABLE ROW LEVEL SECURITY")
    if partitioned:
        conn.exec_driver_sql(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
        conn.exec_driver_sql(f"ALTER TABLE {table}_default ENABLE ROW LEVEL SECURITY")
    conn.exec_driver_sql(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {old}")
    if sequence:
        conn.exec_driver_sql(f"ALTER SEQUENCE {sequence} OWNED BY {table}.id")
    conn.exec_driver_sql(f"DROP TABLE {old} CASCADE")  # its partitions, triggers and policies with it
    for name, definition, enabled in triggers:
        conn.exec_driver_sql(definition.replace(f" ON public.{old} ", f" ON public.{table} ", 1))
        if enabled == "D":
            conn.exec_driver_sql(f'ALTER TABLE {table} DISABLE TRIGGER "{name}"')
    if secured:
        conn.exec_driver_sql(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    commands = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}
    for name, permissive, cmd, qual, check, roles in policies:
        sql = f'CREATE POLICY "{name}" ON {table} AS {"PERMISSIVE" if permissive else "RESTRICTIVE"} '
        sql += f"FOR {commands[cmd]} TO {', '.join(roles)}"
        if qual is not None:
            sql += f" USING ({qual})"
        if check is not None:
            sql += f" WITH CHECK ({check})"
        conn.exec_driver_sql(sql)


def _misplaced(conn: Connection, table: str) -> list[str]:
    """Return up to 10 keys of TABLE whose community or grid code lies in another county than the key's."""
    parts = [f"left({f}, {COUNTY_DIGITS}) <> left({KEY}, {COUNTY_DIGITS})" for f in LOCATORS[table]]
    sql = f"SELECT {KEY} FROM {table} WHERE {' OR '.join(parts)} ORDER BY {KEY} LIMIT 10"
    return [str(k) for k in conn.exec_driver_sql(sql).scalars()]


def upgrade() -> None:
    """Apply this migration (refused, with the rows named, when a row's codes lie in two counties)."""
    conn = op.get_bind()
    misplaced = {table: found for table in TABLES if (found := _misplaced(conn, table))}
    if misplaced:
        listed = "; ".join(f"{table}: {', '.join(keys)}" for table, keys in misplaced.items())
        raise RuntimeError(
            "按区县分区前需先改正：这些要素的社区/网格代码与编码的区县（前 6 位）不一致"
            f"（每层最多列 10 个）{listed}。改正编码或社区代码后再运行 guatu db upgrade。"
            f" (Before partitioning by county: these features' community or grid code lies in another county than"
            f" their code's first {COUNTY_DIGITS} digits (up to 10 per layer): {listed}. Correct them, then run"
            " guatu db upgrade again; nothing was changed.)"
        )
    for table in TABLES:
        _rebuild(conn, table, partitioned=True)


def downgrade() -> None:
    """Revert this migration."""
    conn = op.get_bind()
    for table in TABLES:
        _rebuild(conn, table, partitioned=False)
