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
