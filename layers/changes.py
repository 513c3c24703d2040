"""Every insert, update and delete of a feature, kept by the database: who, when, why, and what was there before.

Written by statement triggers (one function for every layer, the layer and its area fields
as arguments), so an upload, the command line and a hand-typed SQL statement are all kept.
A change keeps the row *before* it (properties and geometry); the state *after* a change is
the next change's "before", or the stored row for the latest one. A deleted feature is kept
whole in its delete and comes back with its id (and so its links) on restore.

Each feature carries a ``version``, raised by a row trigger on every update: the ETag a
client must send back (If-Match) to change it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, DateTime, Index, Integer, String, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, Session, mapped_column

from geoalchemy2 import Geometry

from layers.access import SETTING_NOTE, SETTING_USER, row_area_sql
from layers.base import Layer
from spatial.db import Base
from spatial.geometry import STORAGE_SRID

VERSION = "version"
"""The column every layer table has: raised by one on each update (the ETag)."""
VERSION_FUNCTION = "guatu_raise_version"
NOTE_CHARS = 500


class Change(Base):
    """One change of one feature: what it was before (update, delete), who made it, when and why."""

    __tablename__ = "change_log"
    __table_args__ = (
        Index("ix_change_log_feature", "layer", "feature_id", "id"),
        Index("ix_change_log_at", "layer", "at"),
        {"comment": "修改历史 every insert, update and delete of a feature"},
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    layer: Mapped[str] = mapped_column(String(40))
    feature_id: Mapped[int] = mapped_column(Integer)
    op: Mapped[str] = mapped_column(String(8), comment="insert, update, delete")
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.clock_timestamp())
    actor: Mapped[str] = mapped_column(String(100), comment="the app's user, else the database role")
    db_role: Mapped[str] = mapped_column(String(63))
    note: Mapped[str | None] = mapped_column(String(NOTE_CHARS))
    version: Mapped[int] = mapped_column(Integer, comment="the feature's version after the change (delete: before)")
    area: Mapped[str | None] = mapped_column(String(19), comment="the area code of the row (who may read this)")
    upload_id: Mapped[int | None] = mapped_column(Integer)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONB, comment="the row before (update, delete)")
    before_geom: Mapped[Any] = mapped_column(Geometry(srid=STORAGE_SRID, spatial_index=False), nullable=True)


def log_function(layer: Layer) -> str:
    """Return the name of LAYER's change-log trigger function."""
    return f"guatu_log_{layer.table}"


def _row_json(layer: Layer, alias: str) -> str:
    """Return SQL building a logged row's declared fields and version as jsonb (never its geometry as JSON)."""
    names = [*layer.field_names, VERSION]
    parts = []
    for start in range(0, len(names), 40):  # a function takes at most 100 arguments
        pairs = ", ".join(f"'{n}', {alias}.{n}" for n in names[start : start + 40])
        parts.append(f"jsonb_build_object({pairs})")
    return " || ".join(parts)


def log_function_sql(layer: Layer) -> str:
    """Return LAYER's statement-trigger function writing the change log (runs as the owner: the app only reads).

    Its columns are written out (not ``to_jsonb(row)``, which would turn every geometry into
    JSON): an import of 100,000 parcels costs one small row each.
    """
    cols = "layer, feature_id, op, actor, db_role, note, version, area, upload_id"
    area_n, area_o = row_area_sql(layer, "n"), row_area_sql(layer, "o")
    return f"""CREATE OR REPLACE FUNCTION {log_function(layer)}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  who text := left(coalesce(nullif(current_setting('{SETTING_USER}', true), ''), session_user::text), 100);
  why text := left(nullif(current_setting('{SETTING_NOTE}', true), ''), {NOTE_CHARS});
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO change_log ({cols})
      SELECT '{layer.id}', n.id, 'insert', who, session_user, why, n.{VERSION}, {area_n}, n.upload_id
      FROM new_rows n;
  ELSIF TG_OP = 'UPDATE' THEN
    INSERT INTO change_log ({cols}, before, before_geom)
      SELECT '{layer.id}', n.id, 'update', who, session_user, why, n.{VERSION}, {area_n}, n.upload_id,
             {_row_json(layer, "o")}, o.geom
      FROM new_rows n JOIN old_rows o ON o.id = n.id;
  ELSE
    INSERT INTO change_log ({cols}, before, before_geom)
      SELECT '{layer.id}', o.id, 'delete', who, session_user, why, o.{VERSION}, {area_o}, o.upload_id,
             {_row_json(layer, "o")}, o.geom
      FROM old_rows o;
  END IF;
  RETURN NULL;
END
$$"""


def version_function_sql() -> str:
    """Return the row-trigger function raising a feature's version on every update."""
    return f"""CREATE OR REPLACE FUNCTION {VERSION_FUNCTION}() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
  NEW.{VERSION} := OLD.{VERSION} + 1;
  RETURN NEW;
END
$$"""


def log_triggers(layer: Layer) -> list[tuple[str, str]]:
    """Return (name, SQL) of the triggers keeping LAYER's change log and version."""
    table = layer.table
    run = f"FOR EACH STATEMENT EXECUTE FUNCTION {log_function(layer)}()"
    return [
        (
            f"{table}_log_insert",
            f"CREATE TRIGGER {table}_log_insert AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows {run}",
        ),
        (
            f"{table}_log_update",
            f"CREATE TRIGGER {table}_log_update AFTER UPDATE ON {table} "
            f"REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows {run}",
        ),
        (
            f"{table}_log_delete",
            f"CREATE TRIGGER {table}_log_delete AFTER DELETE ON {table} REFERENCING OLD TABLE AS old_rows {run}",
        ),
        (
            f"{table}_raise_version",
            f"CREATE TRIGGER {table}_raise_version BEFORE UPDATE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {VERSION_FUNCTION}()",
        ),
    ]


def declared_properties(layer: Layer, row: dict[str, Any] | None) -> dict[str, Any]:
    """Return the declared fields of a logged row (JSON values as logged)."""
    if row is None:
        return {}
    return {name: row.get(name) for name in layer.field_names}


def changes_of(
    session: Session, layer: Layer, fid: int, current: dict[str, Any] | None, limit: int = 200
) -> list[dict[str, Any]]:
    """Return FID's changes, newest first, each with the states before and after it (GeoJSON features).

    CURRENT is the stored feature as the user is shown it (None: deleted). Personal fields of
    the logged rows come masked unless the user's role sees them (guatu_change_before).
    """
    rows = (
        session.execute(
            text(
                "SELECT id, op, at, actor, note, version, upload_id, guatu_change_before(id) AS before, "
                "ST_AsGeoJSON(before_geom, 9, 0)::jsonb AS before_geometry "
                "FROM change_log WHERE layer = :layer AND feature_id = :fid ORDER BY id DESC LIMIT :limit"
            ),
            {"layer": layer.id, "fid": fid, "limit": limit},
        )
        .mappings()
        .all()
    )
    out: list[dict[str, Any]] = []
    after = current  # the state after the newest change is the stored row
    for row in rows:
        before = None
        if row["op"] != "insert" and row["before"] is not None:
            before = {
                "type": "Feature",
                "id": fid,
                "version": row["before"].get(VERSION),
                "geometry": row["before_geometry"],
                "properties": declared_properties(layer, row["before"]),
            }
        changed: list[str] = []
        if before is not None and after is not None:
            changed = [n for n in layer.field_names if before["properties"].get(n) != after["properties"].get(n)]
            if before["geometry"] != after["geometry"]:
                changed.append("geometry")
        out.append(
            {
                "id": row["id"],
                "op": row["op"],
                "at": row["at"].isoformat(),
                "actor": row["actor"],
                "note": row["note"],
                "version": row["version"],
                "upload_id": row["upload_id"],
                "changed": changed,
                "before": before,
                "after": None if row["op"] == "delete" else after,
            }
        )
        after = before
    return out


def state_after(session: Session, layer: Layer, fid: int, change_id: int) -> tuple[dict[str, Any], bytes] | None:
    """Return (logged row as the user is shown it, geometry as EWKB) as FID stood after change CHANGE_ID.

    For a delete: as it stood before it. None when the change is not FID's, or when the state
    is the stored row itself (the latest change, not a delete): nothing to restore.
    """
    change = _logged(session, layer, fid, change_id, "id = :c")
    if change is None:
        return None
    if change["op"] == "delete":
        return dict(change["before"]), bytes(change["wkb"])
    later = _logged(session, layer, fid, change_id, "id > :c ORDER BY id LIMIT 1")
    if later is None or later["before"] is None:
        return None
    return dict(later["before"]), bytes(later["wkb"])


def _logged(session: Session, layer: Layer, fid: int, change_id: int, which: str) -> Any:
    """Return the change of FID chosen by WHICH (SQL after WHERE, :c being CHANGE_ID): op, row before, EWKB."""
    return (
        session.execute(
            text(
                "SELECT op, guatu_change_before(id) AS before, ST_AsEWKB(before_geom) AS wkb FROM change_log "
                f"WHERE layer = :l AND feature_id = :f AND {which}"
            ),
            {"c": change_id, "l": layer.id, "f": fid},
        )
        .mappings()
        .first()
    )


def as_of_sql(layer: Layer, columns: str) -> str:
    """Return SQL selecting (id, props jsonb, geom) of LAYER's features as they stood at :as_of.

    COLUMNS builds a stored row's properties as jsonb (alias t), as the user is shown them.
    """
    return f"""
    WITH first_after AS (
        SELECT DISTINCT ON (feature_id) id, feature_id, op, before_geom
        FROM change_log WHERE layer = :layer AND at > :as_of
        ORDER BY feature_id, id
    )
    SELECT t.id, {columns} AS props, t.geom FROM {layer.table} t
    WHERE NOT EXISTS (SELECT 1 FROM first_after f WHERE f.feature_id = t.id)
    UNION ALL
    SELECT f.feature_id, guatu_change_before(f.id), f.before_geom FROM first_after f
    WHERE f.op IN ('update', 'delete')
    """
