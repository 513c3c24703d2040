"""Schema drift: the migrated database holds exactly the constraints and triggers the declarations produce.

Alembic alone compares neither a CHECK constraint's text nor a trigger: `layers.drift`
does, and its autogenerate plugin writes what it finds into `guatu db revision`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import op
from alembic.autogenerate import produce_migrations, render_python_code
from alembic.migration import MigrationContext
from alembic.operations import Operations, ops
from sqlalchemy import CheckConstraint, Connection, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from layers.base import REGISTRY
from layers.drift import Difference, SchemaSQLOp, drift
from layers.migrate import autogenerate_options
from layers.triggers import declared, history_function
from spatial.db import Base, make_engine
from tests.conftest import admin_url, migrated_database, owner_url

GUATU = Path(sys.executable).parent / "guatu"
PARCELS = REGISTRY["parcels"]
VERSIONED = [layer for layer in REGISTRY.values() if layer.history]


@pytest.fixture(scope="module")
def owner_engine(engine: Engine) -> Iterator[Engine]:
    """Return the owner's engine on the session's test database (drift builds a scratch schema)."""
    eng = make_engine(url=owner_url(engine.url.database or ""))
    yield eng
    eng.dispose()


@pytest.fixture
def owner(owner_engine: Engine) -> Iterator[Connection]:
    """Yield an owner's connection inside a transaction that is rolled back: DDL here changes nothing for good."""
    with owner_engine.connect() as conn:
        outer = conn.begin()
        yield conn
        outer.rollback()


def check_of(table: str, name: str) -> CheckConstraint:
    """Return the declared CHECK constraint NAME of TABLE."""
    return next(c for c in Base.metadata.tables[table].constraints if c.name == name and isinstance(c, CheckConstraint))


def revision(conn: Connection) -> ops.UpgradeOps:
    """Return what `guatu db revision` would write (the same options as env.py)."""
    context = MigrationContext.configure(conn, opts=autogenerate_options())
    script = produce_migrations(context, Base.metadata)
    assert script.upgrade_ops is not None
    return script.upgrade_ops


def run_rendered(conn: Connection, upgrade_ops: ops.UpgradeOps) -> str:
    """Render UPGRADE_OPS as a migration's Python, run that code on CONN, and return it."""
    code = render_python_code(upgrade_ops)
    namespace = {"sa": sa, "op": op}
    exec("def upgrade():\n    " + code, namespace)
    with Operations.context(MigrationContext.configure(conn)):
        namespace["upgrade"]()  # type: ignore[operator]
    return code


def one(found: list[Difference], name: str) -> Difference:
    """Return the one difference about NAME."""
    matching = [d for d in found if d.name == name]
    assert len(matching) == 1, found
    return matching[0]


def test_the_migrated_database_matches_the_declarations(owner: Connection) -> None:
    found = drift(owner)
    assert found == [], "\n".join(map(str, found))


def test_drift_leaves_nothing_behind(owner: Connection) -> None:
    path = owner.execute(text("SHOW search_path")).scalar()
    assert drift(owner) == []
    assert owner.execute(text("SELECT to_regnamespace('guatu_drift')")).scalar() is None
    assert owner.execute(text("SHOW search_path")).scalar() == path
    assert owner.in_transaction()  # the caller's transaction goes on


def test_a_changed_check_constraint_is_named_with_both_definitions(owner: Connection) -> None:
    owner.execute(text("ALTER TABLE parcels DROP CONSTRAINT ck_parcels_ownership_enum"))
    owner.execute(text("ALTER TABLE parcels ADD CONSTRAINT ck_parcels_ownership_enum CHECK (ownership IN ('集体'))"))
    found = one(drift(owner), "ck_parcels_ownership_enum")
    assert (found.table, found.kind) == ("parcels", "constraint")
    assert found.live == "CHECK (((ownership)::text = '集体'::text))"
    assert found.declared is not None and "'争议'::character varying" in found.declared
    assert "parcels: constraint ck_parcels_ownership_enum" in str(found) and found.live in str(found)


def test_missing_and_undeclared_constraints_are_reported(owner: Connection) -> None:
    owner.execute(text("ALTER TABLE parcels DROP CONSTRAINT uq_parcels_key"))
    owner.execute(text("ALTER TABLE grids_versions ADD CONSTRAINT ck_grids_versions_extra CHECK (households > 0)"))
    found = drift(owner)
    assert one(found, "uq_parcels_key") == Difference("parcels", "constraint", "uq_parcels_key", None, "UNIQUE (code)")
    extra = one(found, "ck_grids_versions_extra")
    assert (extra.table, extra.live, extra.declared) == ("grids_versions", "CHECK ((households > 0))", None)
    assert len(found) == 2


@pytest.mark.parametrize("layer_id", [layer.id for layer in VERSIONED])
def test_a_history_function_with_a_stale_column_list_is_reported(owner: Connection, layer_id: str) -> None:
    layer = REGISTRY[layer_id]
    routine = history_function(layer)
    dropped = [name for name in layer.field_names if name != "code"][0]  # as if written before this field existed
    stale = routine.sql.replace(f", OLD.{dropped}", "").replace(f", NEW.{dropped}", "").replace(f", {dropped}", "")
    assert stale != routine.sql
    owner.execute(text(stale))
    found = one(drift(owner), routine.name + "()")
    assert found.kind == "function" and found.table is None
    assert found.live is not None and found.declared is not None
    assert f"OLD.{dropped}" in found.declared and f"OLD.{dropped}" not in found.live
    assert f"+      VALUES (OLD.code, OLD.{dropped}" in str(found)  # the operator sees the line that changed


def test_a_trigger_disabled_removed_or_pointed_elsewhere_is_reported(owner: Connection) -> None:
    _, triggers = declared()
    history = next(t for t in triggers if t.name.endswith("_keep_version"))
    dependents = next(t for t in triggers if t.name.endswith("_keep_dependents"))
    owner.execute(text(f"ALTER TABLE {history.table} DISABLE TRIGGER {history.name}"))
    owner.execute(text(f"DROP TRIGGER {dependents.name} ON {dependents.table}"))
    found = drift(owner)
    assert one(found, dependents.name).live is None
    disabled = one(found, history.name)
    assert disabled.live is not None and "DISABLE TRIGGER" in disabled.live
    assert len(found) == 2

    owner.execute(text(f"ALTER TABLE {history.table} ENABLE TRIGGER {history.name}"))
    owner.execute(text(f"DROP TRIGGER {history.name} ON {history.table}"))
    owner.execute(
        text(
            f"CREATE TRIGGER {history.name} BEFORE DELETE ON {history.table} "
            f"FOR EACH ROW EXECUTE FUNCTION {history.function}()"
        )
    )
    assert one(drift(owner), history.name).declared == history.sql.replace("UPDATE OR DELETE", "DELETE OR UPDATE")


def test_the_generated_history_copies_every_column_of_the_history_table() -> None:
    assert VERSIONED, "no layer keeps history: nothing to check"
    for layer in VERSIONED:
        sql = history_function(layer).sql
        inserts = re.findall(r"INSERT INTO (\w+) \(([^)]*)\)", sql)
        assert len(inserts) == 2 and {table for table, _ in inserts} == {layer.history_table}
        columns = set(layer.history_model.__table__.columns.keys()) - {"id", "replaced_at"}  # filled by default
        assert all(set(listed.split(", ")) == columns for _, listed in inserts)


def test_history_needs_a_versioned_layer() -> None:
    with pytest.raises(ValueError, match="keeps no history"):
        history_function(PARCELS)


def test_the_generated_history_trigger_keeps_versions_as_before(session: Session) -> None:
    """What 0004 did: a change to fields or boundary keeps the old row; dates alone do not; a delete keeps it."""
    code = "370214001099001"
    session.execute(
        text(
            "INSERT INTO grids (code, name, kind, community_code, valid_from, geom) VALUES "
            "(:c, '旧', '基础网格', '370214001099', '2024-01-01', "
            "ST_Multi(ST_MakeEnvelope(120.39, 36.30, 120.391, 36.301, 4490)))"
        ),
        {"c": code},
    )

    def kept() -> list[tuple[str, dt.date, dt.date]]:
        rows = session.execute(
            text("SELECT name, valid_from, valid_to FROM grids_versions WHERE code = :c ORDER BY id"), {"c": code}
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]

    session.execute(text("UPDATE grids SET valid_to = '2030-01-01' WHERE code = :c"), {"c": code})
    assert kept() == []
    session.execute(text("UPDATE grids SET name = '新' WHERE code = :c"), {"c": code})
    today = dt.date.today()
    assert kept() == [("旧", dt.date(2024, 1, 1), today)]
    valid_from = session.execute(text("SELECT valid_from FROM grids WHERE code = :c"), {"c": code}).scalar()
    assert valid_from == today
    session.execute(text("UPDATE grids SET name = '又新' WHERE code = :c"), {"c": code})
    assert len(kept()) == 1  # in force since today: simply updated
    session.execute(text("UPDATE grids SET valid_from = '2024-06-01' WHERE code = :c"), {"c": code})
    session.execute(text("DELETE FROM grids WHERE code = :c"), {"c": code})
    assert kept() == [("旧", dt.date(2024, 1, 1), today), ("又新", dt.date(2024, 6, 1), today)]


def test_revision_writes_a_changed_choice_list(owner: Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reviewer's case: a choice added to a field; autogenerate used to write an empty migration."""
    field = PARCELS.field("ownership")
    widened = dataclasses.replace(field, choices=(*field.choices, "个人"))
    constraint = check_of(PARCELS.table, "ck_parcels_ownership_enum")
    monkeypatch.setattr(constraint, "sqltext", widened.checks(PARCELS.table)[0].sqltext)

    assert [d.name for d in drift(owner)] == ["ck_parcels_ownership_enum"]
    upgrade = revision(owner)
    [table_ops] = upgrade.ops
    assert isinstance(table_ops, ops.ModifyTableOps) and table_ops.table_name == "parcels"
    drop, create = table_ops.ops
    assert isinstance(drop, ops.DropConstraintOp) and drop.constraint_name == "ck_parcels_ownership_enum"
    assert isinstance(create, ops.CreateCheckConstraintOp) and create.constraint_name == "ck_parcels_ownership_enum"

    code = run_rendered(owner, upgrade)
    assert "op.create_check_constraint(op.f('ck_parcels_ownership_enum'), 'parcels', \"ownership IN (" in code
    assert drift(owner) == []
    probe = owner.begin_nested()
    owner.execute(
        text(
            "INSERT INTO parcels (code, land_use_code, ownership, use_status, geom) VALUES ('370214001001JA00001', "
            "'0101', '个人', '自用', ST_Multi(ST_MakeEnvelope(120.39, 36.30, 120.391, 36.301, 4490)))"
        )
    )  # the database now takes what pydantic takes
    probe.rollback()

    run_rendered(owner, upgrade.reverse())  # the downgrade puts the old list back
    assert [d.name for d in drift(owner)] == ["ck_parcels_ownership_enum"]


def test_revision_brings_a_stale_trigger_and_function_back(owner: Connection) -> None:
    routines, triggers = declared()
    history = next(t for t in triggers if t.name.endswith("_keep_version"))
    routine = next(r for r in routines if r.name == history.function)
    owner.execute(text(routine.sql.replace("current_date", "current_date - 1")))
    owner.execute(text(f"DROP TRIGGER {history.name} ON {history.table}"))
    before = drift(owner)
    assert {d.kind for d in before} == {"function", "trigger"}

    upgrade = revision(owner)
    assert all(isinstance(o, SchemaSQLOp) for o in upgrade.ops)
    assert [d for d in upgrade.as_diffs() if d[0] != "execute"] == []
    run_rendered(owner, upgrade)
    assert drift(owner) == []
    run_rendered(owner, upgrade.reverse())
    assert drift(owner) == before


def test_nothing_to_write_when_nothing_drifted(owner: Connection) -> None:
    assert revision(owner).ops == []


def test_db_check_exits_non_zero_and_names_the_drift() -> None:
    name = "guatu_test_drift"
    env = dict(os.environ, DATABASE_URL=admin_url(name), GUATU_ARCHIVE_DIR=str(Path(tempfile.gettempdir()) / "drift"))

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(GUATU), "db", "check"], capture_output=True, text=True, env=env, timeout=300, check=False
        )

    with migrated_database(name):
        clean = check()
        assert clean.returncode == 0, clean.stderr
        assert "database matches the layer declarations" in clean.stderr
        owner = make_engine(url=owner_url(name))
        try:
            with owner.begin() as conn:
                conn.execute(text("ALTER TABLE parcels DROP CONSTRAINT ck_parcels_stage_enum"))
        finally:
            owner.dispose()
        drifted = check()
    assert drifted.returncode == 1, drifted.stderr
    assert "parcels: constraint ck_parcels_stage_enum" in drifted.stderr
    assert "— (missing)" in drifted.stderr and "schema drift: 1 differences" in drifted.stderr


def test_every_declared_index_is_made_by_the_migrations(engine: Engine) -> None:
    """The drift check compares columns and constraints; the indexes a declaration asks for are checked here."""
    from spatial.db import Base

    declared = {index.name for table in Base.metadata.tables.values() for index in table.indexes}
    with engine.connect() as conn:
        made = set(conn.execute(text("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")).scalars())
    assert sorted(declared - made) == []
