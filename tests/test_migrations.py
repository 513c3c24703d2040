"""Migrations: the schema they build matches the layer declarations; code lists agree."""

from __future__ import annotations

import importlib.util

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Engine

from layers.landuse import land_use_codes
from layers.migrate import MIGRATIONS, autogenerate_options
from spatial.db import Base, make_engine
from tests.conftest import owner_url


def test_migrations_match_the_declarations(engine: Engine) -> None:
    """Tables, columns, types, indexes (Alembic) and CHECK constraints, triggers, functions (layers.drift)."""
    owner = make_engine(url=owner_url(engine.url.database or ""))  # the drift plugin builds a scratch schema
    try:
        with owner.connect() as conn:
            context = MigrationContext.configure(conn, opts=autogenerate_options())
            diff = compare_metadata(context, Base.metadata)
    finally:
        owner.dispose()
    assert diff == [], "layer declarations changed without a migration: run `guatu db revision -m …`"


def test_frozen_land_use_codes_match_the_shipped_lists() -> None:
    spec = importlib.util.spec_from_file_location("m0001", MIGRATIONS / "versions" / "0001_initial.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    frozen = {row[0]: row for row in module.LAND_USE_CODES}
    shipped = {c.code: (c.code, c.name, c.level1, c.level1_name, c.schemes) for c in land_use_codes().values()}
    assert frozen == shipped


def test_upgrade_downgrade_upgrade() -> None:
    from alembic import command
    from sqlalchemy import inspect

    from layers import migrate
    from spatial.db import make_engine
    from tests.conftest import owner_url, recreate_database

    recreate_database("guatu_test_migrations")
    engine = make_engine(url=owner_url("guatu_test_migrations"))  # downgrades drop tables: the owner's job
    try:
        migrate.upgrade(engine)
        assert {"parcels", "zones", "land_use_codes"} <= set(inspect(engine).get_table_names())
        cfg = migrate.alembic_config(engine)
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        assert "parcels" not in inspect(engine).get_table_names()
        migrate.upgrade(engine)
        assert migrate.current(engine) == migrate.head()
    finally:
        engine.dispose()


def test_partitioning_refuses_rows_whose_codes_lie_in_two_counties_and_changes_nothing() -> None:
    """0017 splits the layers by their key's county: a row whose community is in another county is named first."""
    import pytest
    from sqlalchemy import inspect, text

    from layers import migrate
    from tests.conftest import recreate_database
    from tests.samples import sample

    recreate_database("guatu_test_migrations_0017")
    engine = make_engine(url=owner_url("guatu_test_migrations_0017"))
    try:
        migrate.upgrade(engine, "0016")
        props = sample("parcels")["properties"]
        row = {k: props[k] for k in ("name", "land_use_code", "ownership", "use_status", "community_code")}
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE parcels DISABLE TRIGGER USER"))  # the row alone, no history
            insert = text(
                "INSERT INTO parcels (code, name, land_use_code, ownership, use_status, community_code, geom)"
                " VALUES (:code, :name, :land_use_code, :ownership, :use_status, :community_code,"
                " ST_Multi(ST_GeomFromText('POLYGON((120.396 36.307,120.397 36.307,120.397 36.3079,"
                "120.396 36.3079,120.396 36.307))', 4490)))"
            )
            conn.execute(insert, row | {"code": "3702150010090100001"})  # key in 370215, community in 370214
            conn.execute(text("ALTER TABLE parcels ENABLE TRIGGER USER"))
        with pytest.raises(RuntimeError, match="3702150010090100001"):
            migrate.upgrade(engine)
        assert migrate.current(engine) == "0016"
        assert "parcels_default" not in inspect(engine).get_table_names()
        with engine.begin() as conn:
            conn.execute(text("UPDATE parcels SET code = '3702140010090100001'"))
        migrate.upgrade(engine)
        assert migrate.current(engine) == migrate.head()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM parcels_370214")).scalar_one() == 1
    finally:
        engine.dispose()
