"""Row-level security in PostgreSQL itself: a raw SQL session as the app role, whatever the app does.

The app states who acts per transaction (guatu.user / guatu.role / guatu.area); the policies
generated from the declarations (layers.access) keep every read and write inside that area,
and personal columns are not readable by the app role at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import make_url
from sqlalchemy.orm import Session

from layers import features
from layers.access import Actor
from layers.base import REGISTRY
from spatial.db import state
from tests.accounts import SAMPLE_COMMUNITY, SAMPLE_GRID
from tests.conftest import app_url, migrated_database
from tests.samples import sample

DB = "guatu_test_rls"


@pytest.fixture(scope="module")
def stored() -> Iterator[dict[str, int]]:
    """A database holding one committed sample feature per layer; yield their ids."""
    with migrated_database(DB) as eng:
        with Session(eng) as session:
            state(session, Actor(None, "tests", "admin").settings())
            ids = {
                layer_id: features.create_feature(session, REGISTRY[layer_id], sample(layer_id))["id"]
                for layer_id in ("divisions", "grids", "parcels", "shops", "zones", "revenue_points")
            }
            session.commit()
        yield ids


def _connect() -> psycopg.Connection[Any]:
    """Return a raw psycopg connection as the app role (not through the app)."""
    dsn = make_url(app_url(DB)).set(drivername="postgresql").render_as_string(hide_password=False)
    return psycopg.connect(dsn)


def _act(conn: psycopg.Connection[Any], role: str, area: str, user: str = "someone") -> None:
    conn.execute(
        "SELECT set_config('guatu.user', %s, true), set_config('guatu.role', %s, true), "
        "set_config('guatu.area', %s, true)",
        (user, role, area),
    )


def test_nobody_set_sees_nothing_and_writes_nothing(stored: dict[str, int]) -> None:
    with _connect() as conn:
        for layer_id in stored:
            table = REGISTRY[layer_id].table
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
        assert conn.execute("UPDATE parcels SET name = 'x'").rowcount == 0
        assert conn.execute("DELETE FROM shops").rowcount == 0
        assert conn.execute("SELECT count(*) FROM change_log").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM uploads").fetchone() == (0,)


def test_surveyor_of_another_community_neither_reads_nor_writes(stored: dict[str, int]) -> None:
    with _connect() as conn:
        _act(conn, "surveyor", "370214001005")
        assert conn.execute("SELECT count(*) FROM parcels").fetchone() == (0,)
        assert conn.execute("UPDATE parcels SET name = '越权'").rowcount == 0
        assert conn.execute("DELETE FROM zones").rowcount == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(
                "INSERT INTO shops (code, name, ownership, status, community_code, grid_code, geom) "
                "VALUES ('3702140010092100009', '越权商铺', '集体', '闲置', %s, %s, "
                "ST_SetSRID(ST_MakePoint(120.396, 36.307), 4490))",
                (SAMPLE_COMMUNITY, SAMPLE_GRID),
            )
    with _connect() as conn:
        _act(conn, "admin", "")
        assert conn.execute("SELECT name FROM parcels").fetchone() == (sample("parcels")["properties"]["name"],)


def test_surveyor_of_the_community_works_there_but_cannot_move_out_or_read_personal(stored: dict[str, int]) -> None:
    with _connect() as conn:
        _act(conn, "surveyor", SAMPLE_COMMUNITY)
        assert conn.execute("SELECT count(*) FROM parcels").fetchone() == (1,)
        assert conn.execute("UPDATE parcels SET name = '现场核实'").rowcount == 1
        # moving a parcel into another community is a write outside the area: refused
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute("UPDATE parcels SET community_code = '370214001005', grid_code = NULL")
        conn.rollback()
        _act(conn, "surveyor", SAMPLE_COMMUNITY)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
            conn.execute("SELECT household_head FROM zones")
        conn.rollback()
        _act(conn, "surveyor", SAMPLE_COMMUNITY)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
            conn.execute("SELECT * FROM grids")  # the grid manager's phone is among its columns
        conn.rollback()
        _act(conn, "surveyor", SAMPLE_COMMUNITY)
        shown = conn.execute("SELECT guatu_shown_zones(id) ->> 'household_head' FROM zones").fetchone()
        assert shown == ("李*华",)  # masked for a surveyor, by the owner's function
        # grids are the planners': a surveyor cannot change them even inside the community
        assert conn.execute("UPDATE grids SET name = '改名'").rowcount == 0
        conn.rollback()
        _act(conn, "planner", "370214001")
        assert conn.execute("SELECT guatu_shown_zones(id) ->> 'household_head' FROM zones").fetchone() == ("李明华",)
        logged = conn.execute("SELECT count(*) FROM change_log WHERE op = 'insert'").fetchone()
        assert logged == (len(stored),)  # the street's planner reads the history of every sample feature
        conn.rollback()
        _act(conn, "planner", "370214002")
        assert conn.execute("SELECT count(*) FROM change_log").fetchone() == (0,)  # another street's: none


def test_the_change_log_is_written_by_the_database_for_any_write(stored: dict[str, int]) -> None:
    with _connect() as conn:
        _act(conn, "planner", "370214001", user="王规划")
        conn.execute("UPDATE shops SET name = '改名商铺'")
        conn.execute("SELECT set_config('guatu.note', '现场核对', true)")
        conn.execute("UPDATE shops SET name = '再改名'")
        rows = conn.execute(
            "SELECT op, actor, note, version FROM change_log WHERE layer = 'shops' ORDER BY id"
        ).fetchall()
        assert rows == [
            ("insert", "tests", None, 1),
            ("update", "王规划", None, 2),
            ("update", "王规划", "现场核对", 3),
        ]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM change_log")  # nobody rewrites history through the app role


def test_a_box_read_under_row_level_security_still_uses_the_spatial_index(stored: dict[str, int]) -> None:
    """PostGIS's && is declared LEAKPROOF at provisioning: else the policy comes first and every read scans."""
    with _connect() as conn:
        _act(conn, "surveyor", SAMPLE_COMMUNITY)
        conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                "EXPLAIN SELECT id FROM parcels WHERE geom && ST_MakeEnvelope(120.39, 36.30, 120.40, 36.31, 4490)"
            ).fetchall()
        )
    # the layer's GiST index, or its copy on the county's table (parcels are partitioned by county: layers.partitions)
    assert re.search(r"Index Scan using (ix_parcels_geom|parcels_[0-9a-z]+_geom_idx) ", plan), plan
