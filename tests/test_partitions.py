"""Layers partitioned by county (layers.partitions, migration 0017): a province is many small tables.

The demo street is loaded after the migration, when no county had a table of its own: its
rows wait in the default tables until ``add_county`` gives 370214 its own. A second county
(370215) is copied from it, shifted east.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from layers import features, partitions, tiles
from layers.access import Actor
from layers.base import REGISTRY, county_range
from layers.ledger import _where
from layers.stats import Filter, filter_conditions
from layers.tiles import Tile
from spatial.db import make_engine, state
from spatial.errors import InvalidInput
from tests.conftest import app_url, demo_database, owner_url

DB = "guatu_test_partitions"
ADMIN = Actor(None, "tests", "admin")
PARCELS = REGISTRY["parcels"]


@pytest.fixture(scope="module")
def app_engine() -> Iterator[Engine]:
    """The demo street, migrated and loaded; yield the app's engine."""
    with demo_database(DB) as eng:
        yield eng


@pytest.fixture(scope="module")
def owner(app_engine: Engine) -> Iterator[Engine]:
    """The owner's engine on the same database (DDL, and the per-county tables themselves)."""
    eng = make_engine(url=owner_url(DB))
    yield eng
    eng.dispose()


def _where_rows(conn: Connection, table: str) -> dict[str, int]:
    """Return the rows of TABLE per per-county table holding them."""
    found = conn.execute(text(f"SELECT tableoid::regclass::text, count(*) FROM {table} GROUP BY 1")).all()
    return {str(name): int(n) for name, n in found}


def _second_county(conn: Connection) -> int:
    """Copy the street's parcels into county 370215, 1° east; return how many."""
    return conn.execute(
        text(
            "INSERT INTO parcels (geom, code, name, land_use_code, ownership, use_status, community_code, grid_code) "
            "SELECT ST_Translate(geom, 1, 0), '370215' || substr(code, 7), name, land_use_code, ownership, "
            "use_status, '370215' || substr(community_code, 7), '370215' || substr(grid_code, 7) FROM parcels"
        )
    ).rowcount


def test_the_partitioned_layers_are_declared_so() -> None:
    assert [layer.id for layer in partitions.layers()] == ["parcels", "zones", "shops", "revenue_points"]
    assert not REGISTRY["divisions"].partitioned and not REGISTRY["grids"].partitioned
    assert [c.name for c in PARCELS.model.__table__.primary_key] == ["id", "code"]
    assert [c.name for c in PARCELS.model.__mapper__.primary_key] == ["id"]  # the ORM still knows a feature by id
    assert partitions.is_partition("parcels_370214") and partitions.is_partition("zones_default")
    assert not partitions.is_partition("parcels") and not partitions.is_partition("grids_370214")
    assert county_range("370214001009") == ("370214", "370215")
    assert county_range("370299") == ("370299", "370300")


def test_rows_wait_in_the_default_table_then_move_to_their_county(owner: Engine) -> None:
    with owner.begin() as conn:
        before = _where_rows(conn, "parcels")
        assert set(before) == {"parcels_default"}  # no county had its table when the demo was loaded
        total = before["parcels_default"]
        generation = conn.execute(text("SELECT generation FROM layer_generations WHERE layer = 'parcels'")).scalar()
        assert partitions.waiting_counties(conn, PARCELS) == ["370214"]
        for layer in partitions.layers():
            partitions.add_county(conn, layer, "370214")
        assert partitions.add_county(conn, PARCELS, "370214") == 0  # once is enough
        assert _where_rows(conn, "parcels") == {"parcels_370214": total}
        assert partitions.waiting_counties(conn, PARCELS) == []
        # the same rows, moved: nobody sees a change, so the generation (cached tiles) stays
        after = conn.execute(text("SELECT generation FROM layer_generations WHERE layer = 'parcels'")).scalar()
        assert after == generation
        # a county with no table of its own: its rows land in the default one
        copied = _second_county(conn)
        assert _where_rows(conn, "parcels") == {"parcels_370214": total, "parcels_default": copied}
        assert partitions.add_county(conn, PARCELS, "370215") == copied
        assert _where_rows(conn, "parcels") == {"parcels_370214": total, "parcels_370215": copied}
        tables = {p.table for p in partitions.parts(conn)}
        assert {"parcels_370214", "parcels_370215", "parcels_default", "zones_370214", "shops_default"} <= tables
        with pytest.raises(ValueError, match="county code"):
            partitions.add_county(conn, PARCELS, "3702")
        conn.exec_driver_sql("ANALYZE parcels")


def _plan(session: Session, sql: str, params: dict[str, Any]) -> str:
    return "\n".join(session.execute(text("EXPLAIN " + sql), params).scalars())


def test_a_county_s_tile_and_ledger_read_its_table_only(app_engine: Engine) -> None:
    with Session(app_engine) as session:
        state(session, ADMIN.settings())
        flt = Filter(scope="370215")
        conditions, params = filter_conditions(PARCELS, flt)
        tile = Tile(16, 54636, 25430)
        plan = _plan(session, tiles.tile_statement(PARCELS, conditions), params | tiles.tile_params(PARCELS, tile))
        assert "parcels_370215" in plan
        assert "parcels_370214" not in plan and "parcels_default" not in plan
        # unnarrowed, every county's table is looked at (its GiST index: a probe each)
        plan = _plan(session, tiles.tile_statement(PARCELS, []), tiles.tile_params(PARCELS, tile))
        assert "parcels_370214" in plan and "parcels_370215" in plan
        # the ledger's first page of a community
        page = select(PARCELS.model.id).where(*_where(PARCELS, Filter(scope="370215001009"))).limit(50)
        compiled = page.compile(session.get_bind(), compile_kwargs={"literal_binds": True})
        plan = _plan(session, str(compiled), {})
        assert "parcels_370215" in plan and "parcels_370214" not in plan
        # narrowing by the key's county reads the same rows as by the community code alone
        narrowed = session.execute(
            text(f"SELECT count(*) FROM parcels WHERE {' AND '.join(conditions)}"), params
        ).scalar()
        plain = session.execute(text("SELECT count(*) FROM parcels WHERE community_code LIKE '370215%'")).scalar()
        assert narrowed == plain and plain


def test_a_feature_written_through_the_app_lands_in_its_county(app_engine: Engine, owner: Engine) -> None:
    with Session(app_engine) as session:
        state(session, ADMIN.settings())
        some = session.execute(select(PARCELS.model).where(PARCELS.model.community_code.like("370214%")).limit(1))
        row = some.scalars().one()
        feature = features.get_feature(session, PARCELS, row.id)
        props = dict(feature["properties"])
        props = {k: v for k, v in props.items() if k in PARCELS.field_names}
        props["code"] = props["code"][:-5] + "99999"
        made = features.create_feature(
            session, PARCELS, {"type": "Feature", "geometry": feature["geometry"], "properties": props}
        )
        where = session.execute(text("SELECT tableoid::regclass::text FROM parcels WHERE id = :i"), {"i": made["id"]})
        assert where.scalar() == "parcels_370214"
        # a key of another county than its community's: refused before the database, by name
        props["code"] = "370215" + props["code"][6:-5] + "99998"
        with pytest.raises(InvalidInput) as refused:
            features.create_feature(
                session, PARCELS, {"type": "Feature", "geometry": feature["geometry"], "properties": props}
            )
        assert [p.code for p in refused.value.problems] == ["code_inconsistent"]
        session.rollback()
    with owner.begin() as conn, pytest.raises(Exception, match="county_of_key"):
        conn.execute(text("UPDATE parcels SET community_code = '370215001009' WHERE code LIKE '370214%'"))


def _connect() -> psycopg.Connection[Any]:
    dsn = app_url(DB).replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(dsn)


def test_the_app_role_reads_a_county_s_table_only_through_the_policies(app_engine: Engine) -> None:
    with _connect() as conn:
        conn.execute("SELECT set_config('guatu.role', 'surveyor', true), set_config('guatu.area', '370214001', true)")
        mine = conn.execute("SELECT count(*) FROM parcels").fetchone()
        assert mine is not None and mine[0] > 0
        assert conn.execute("SELECT count(*) FROM parcels WHERE code LIKE '370215%'").fetchone() == (0,)
        conn.execute("SELECT set_config('guatu.area', '370215001', true)")
        theirs = conn.execute("SELECT count(*) FROM parcels WHERE code LIKE '370215%'").fetchone()
        assert theirs is not None and theirs[0] > 0  # the other county's rows are there, for its own users
        for table in ("parcels_370215", "parcels_370214", "parcels_default", "zones_370214"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                conn.execute(f"SELECT count(*) FROM {table}")
            conn.rollback()
    with make_engine(url=owner_url(DB)).connect() as conn:
        secured = conn.execute(
            text(
                "SELECT bool_and(c.relrowsecurity) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'parcels'::regclass"
            )
        ).scalar()
        assert secured  # granted by mistake, a county's table would still show nothing (no policy on it)
