"""Run the Alembic migrations shipped in layers/migrations, then grant the app what it needs.

Migrations run as the owner role. The app role gets row privileges only, derived from the
layer declarations: every layer's table is read and written, a history table (filled by a
trigger that runs as the app) only read and appended to, the upload log read, appended to
and updated (never deleted from), the schema revision and the layer generations read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.engine import Engine

from geoalchemy2 import alembic_helpers

from layers import contracts
from layers.access import personal_fields, readable_columns
from layers.accounts import ApiToken, PersonalAccess, User, WebSession
from layers.base import REGISTRY
from layers.changes import Change
from layers.generations import LayerGeneration
from layers.partitions import is_partition
from layers.preferences import UserPreference
from layers.problems import APP_PRIVILEGES as PROBLEM_PRIVILEGES
from layers.uploads import Upload

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version"


def include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """Leave PostGIS's own tables and the per-county tables of a partitioned layer (layers.partitions) out."""
    if type_ == "table" and (name in {"spatial_ref_sys"} or is_partition(name)):
        return False
    included = alembic_helpers.include_object(obj, name, type_, reflected, compare_to)  # type: ignore[no-untyped-call]
    return bool(included)


def autogenerate_options() -> dict[str, Any]:
    """Return the options autogenerate compares with (env.py and the tests): tables, types, and the drift plugin.

    The plugin (:mod:`layers.drift`) adds what Alembic does not compare: the text of CHECK
    constraints, the triggers and their functions.
    """
    from layers import drift

    return {
        "include_object": include_object,
        "compare_type": True,
        "autogenerate_plugins": ["alembic.autogenerate.*", drift.register()],
    }


def alembic_config(engine: Engine) -> Config:
    """Return an Alembic config bound to ENGINE (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def upgrade(engine: Engine, revision: str = "head", *, app_role: str | None = None) -> None:
    """Bring the database behind ENGINE (the owner's) to REVISION, then grant APP_ROLE its privileges."""
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        if app_role:
            grant_app(conn, app_role)


def app_privileges() -> dict[str, tuple[str, ...]]:
    """Return the table privileges the app needs, by table: nothing more is ever granted."""
    wanted: dict[str, tuple[str, ...]] = {}
    for layer in REGISTRY.values():
        # personal fields are not readable by the app: a function run as the owner shows them (layers.access)
        columns = readable_columns(layer)
        select = "SELECT" if len(columns) == len(layer.model.__table__.columns) else f"SELECT ({', '.join(columns)})"
        wanted[layer.table] = (select, "INSERT", "UPDATE", "DELETE")
        if layer.history_table and layer.history_model is not None:  # kept, never changed; personal: unreadable
            hidden = set(personal_fields(layer))
            kept = [c.name for c in layer.history_model.__table__.columns if c.name not in hidden]
            wanted[layer.history_table] = (f"SELECT ({', '.join(kept)})", "INSERT")
    wanted[Upload.__tablename__] = ("SELECT", "INSERT", "UPDATE")  # an append-only log: no DELETE
    wanted[LayerGeneration.__tablename__] = ("SELECT",)  # raised by a trigger running as the owner
    wanted[VERSION_TABLE] = ("SELECT",)
    wanted[User.__tablename__] = ("SELECT", "UPDATE (failed_logins, locked_until, last_login)")
    wanted[WebSession.__tablename__] = ("SELECT", "INSERT", "DELETE")
    wanted[ApiToken.__tablename__] = ("SELECT", "INSERT", "UPDATE (last_used, revoked)")
    wanted[UserPreference.__tablename__] = ("SELECT", "INSERT", "UPDATE", "DELETE")  # own rows only (RLS)
    wanted[PersonalAccess.__tablename__] = ("INSERT",)  # the app writes the log, never reads or changes it
    logged = [c.name for c in Change.__table__.columns if c.name != "before"]  # the row before: guatu_change_before()
    wanted[Change.__tablename__] = (f"SELECT ({', '.join(logged)})",)
    wanted.update(contracts.privileges())  # the lessee's name and ID: guatu_shown_contracts()
    wanted.update(PROBLEM_PRIVILEGES)  # the problem ledger: read and appended to; its trigger moves problems
    return wanted


def grant_app(conn: Connection, role: str) -> None:
    """Give ROLE exactly app_privileges() on the tables that exist (and their id sequences); idempotent.

    Whatever else ROLE held on the owner's tables is revoked first, in the same transaction.
    Nothing is done when ROLE is the one running the migrations.
    """
    if conn.execute(text("SELECT current_user = :r"), {"r": role}).scalar():
        return
    ident = conn.dialect.identifier_preparer.quote  # quotes a name that needs it
    quoted = ident(role)
    conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA public TO {quoted}")  # no bind parameters: names as they are
    owned = conn.execute(
        text(
            "SELECT c.oid::regclass::text FROM pg_class c WHERE c.relowner = "
            "(SELECT oid FROM pg_roles WHERE rolname = current_user) "
            "AND c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')"
        )
    ).scalars()
    for relation in owned:
        conn.exec_driver_sql(f"REVOKE ALL ON {relation} FROM {quoted}")
    present = {
        name: oid
        for name, oid in conn.execute(
            text("SELECT t, to_regclass(quote_ident(t))::oid FROM unnest(CAST(:t AS text[])) AS t"),
            {"t": list(app_privileges())},
        ).all()
        if oid is not None
    }
    for table, privileges in app_privileges().items():
        if table in present:
            conn.exec_driver_sql(f"GRANT {', '.join(privileges)} ON {ident(table)} TO {quoted}")
    sequences = conn.execute(
        text(
            "SELECT DISTINCT d.objid::regclass::text FROM pg_depend d JOIN pg_class s ON s.oid = d.objid "
            "WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass "
            "AND d.deptype IN ('a', 'i') AND s.relkind = 'S' AND d.refobjid = ANY(CAST(:t AS oid[]))"
        ),
        {"t": [oid for table, oid in present.items() if "INSERT" in app_privileges()[table]]},
    ).scalars()
    for sequence in sequences:
        conn.exec_driver_sql(f"GRANT USAGE, SELECT ON SEQUENCE {sequence} TO {quoted}")


def head() -> str:
    """Return the newest revision the shipped migrations reach."""
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    found = ScriptDirectory.from_config(config).get_current_head()
    assert found is not None
    return found


def current(engine: Engine) -> str | None:
    """Return the revision the database is at, or None before the first migration."""
    with engine.connect() as conn:
        exists = conn.execute(text("SELECT to_regclass('alembic_version')")).scalar()
        if not exists:
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
