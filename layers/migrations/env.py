"""Alembic environment: migrations run against the engine the caller passes in."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from geoalchemy2 import alembic_helpers

import layers  # noqa: F401 - registers every model on the metadata
from layers.migrate import autogenerate_options
from spatial.db import Base, make_engine

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    """Run the migrations on the connection given in config, or a new engine."""
    connection = config.attributes.get("connection")
    if connection is None:
        url = config.get_main_option("sqlalchemy.url")
        with make_engine(url=url).connect() as conn:
            _run(conn)
    else:
        _run(connection)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        process_revision_directives=alembic_helpers.writer,
        render_item=alembic_helpers.render_item,
        **autogenerate_options(),
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
