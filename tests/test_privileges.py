"""Least privilege: the app connects as a role that owns nothing and may only read and write rows.

Asked of the very engines the app uses (`spatial.db.make_engine()` and the suite's `engine`,
built from the app's settings). Skipped only where the tests cannot make roles (a
DATABASE_URL whose role is no superuser: everything then runs as that role).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import make_url, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from spatial.db import make_engine
from spatial.settings import db_settings
from tests.accounts import ANY_VERSION
from tests.samples import COMMUNITY, X0, Y0, complete, sample

SERVER_ROLES = ("pg_execute_server_program", "pg_read_server_files", "pg_write_server_files")
INSUFFICIENT_PRIVILEGE = "42501"
GUATU = Path(sys.executable).parent / "guatu"


def _can_make_roles() -> bool:
    """Tell whether the tests run as guatu's own roles: the local cluster, or a superuser DATABASE_URL."""
    settings = db_settings()
    if not settings.external:
        return True
    dsn = make_url(settings.database_url or "").set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        return bool(row and row[0])


@pytest.fixture(autouse=True, scope="module")
def needs_roles() -> None:
    """Skip where guatu cannot make its roles."""
    if not _can_make_roles():
        pytest.skip("DATABASE_URL 的角色不是超级用户，测试以它运行 (its role cannot make guatu's roles: none to check)")


def sqlstate(engine: Engine, statement: str, *, autocommit: bool = False) -> str | None:
    """Run STATEMENT as ENGINE's role and roll it back; return the SQLSTATE it failed with, or None."""
    with engine.connect() as conn:
        if autocommit:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        try:
            conn.execute(text(statement))
        except DBAPIError as exc:
            return getattr(exc.orig, "sqlstate", None)
        finally:
            conn.rollback()
    return None


def test_the_app_engine_is_no_superuser() -> None:
    """The key test: the engine the app builds from its settings logs in as a plain role."""
    engine = make_engine()
    try:
        with engine.connect() as conn:
            role = conn.execute(
                text(
                    "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls "
                    "FROM pg_roles WHERE rolname = current_user"
                )
            ).one()
    finally:
        engine.dispose()
    assert role.rolname == make_url(db_settings().url()).username
    assert not role.rolsuper, f"the app connects as the superuser {role.rolname}"
    assert not (role.rolcreaterole or role.rolcreatedb or role.rolreplication or role.rolbypassrls), role


def test_the_app_role_owns_nothing_and_may_create_nothing(engine: Engine) -> None:
    with engine.connect() as conn:
        facts = conn.execute(
            text(
                """
                SELECT r.rolsuper, r.rolcreaterole, r.rolcreatedb,
                  (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE c.relowner = r.oid AND n.nspname !~ '^pg_(toast_)?temp_') AS relations,
                  (SELECT count(*) FROM pg_proc WHERE proowner = r.oid) AS routines,
                  (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                    WHERE t.typowner = r.oid AND n.nspname !~ '^pg_(toast_)?temp_') AS types,
                  (SELECT count(*) FROM pg_namespace WHERE nspowner = r.oid AND nspname !~ '^pg_(toast_)?temp_')
                    AS schemas,
                  (SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()) AS db_owner,
                  has_schema_privilege('public', 'CREATE') AS create_in_public,
                  has_database_privilege(current_database(), 'CREATE') AS create_in_database,
                  (SELECT count(*) FROM pg_auth_members WHERE member = r.oid) AS memberships
                FROM pg_roles r WHERE r.rolname = current_user
                """
            )
        ).one()
        server_roles = {
            name: conn.execute(text("SELECT pg_has_role(current_user, :r, 'MEMBER')"), {"r": name}).scalar()
            for name in SERVER_ROLES
        }
    assert not facts.rolsuper and not facts.rolcreaterole and not facts.rolcreatedb
    assert (facts.relations, facts.routines, facts.types, facts.schemas) == (0, 0, 0, 0)
    assert facts.db_owner == "guatu_owner"
    assert not facts.create_in_public and not facts.create_in_database
    assert facts.memberships == 0 and not any(server_roles.values()), server_roles


@pytest.mark.parametrize(
    "statement",
    [
        "COPY (SELECT 1) TO PROGRAM 'true'",
        "COPY (SELECT 1) TO '/dev/null'",
        "SELECT pg_read_file('/etc/hostname')",
        "CREATE TABLE guatu_probe (i integer)",
        "CREATE FUNCTION guatu_probe() RETURNS integer LANGUAGE sql AS 'SELECT 1'",
        "CREATE SCHEMA guatu_probe",
        "CREATE ROLE guatu_probe",
        "SET ROLE guatu_owner",
        "DROP TABLE parcels",
        "ALTER TABLE parcels ADD COLUMN probe integer",
        "TRUNCATE parcels",
        "CREATE TRIGGER guatu_probe BEFORE INSERT ON parcels FOR EACH ROW "
        "EXECUTE FUNCTION suppress_redundant_updates_trigger()",
        "DELETE FROM uploads",
        "UPDATE grids_versions SET name = name",
        "DELETE FROM grids_versions",
        "UPDATE alembic_version SET version_num = version_num",
        "SELECT * FROM land_use_codes",
    ],
)
def test_the_app_role_is_refused(engine: Engine, statement: str) -> None:
    assert sqlstate(engine, statement) == INSUFFICIENT_PRIVILEGE


def test_the_app_role_cannot_create_a_database(engine: Engine) -> None:
    name = "guatu_probe_created_by_app"
    failed = sqlstate(engine, f"CREATE DATABASE {name}", autocommit=True)
    if failed is None:  # it should not have worked: leave nothing behind
        sqlstate(engine, f"DROP DATABASE {name}", autocommit=True)
    assert failed == INSUFFICIENT_PRIVILEGE


def test_the_app_role_reads_and_writes_through_its_own_code(client: TestClient, session: Session) -> None:
    """A parcel, a grid's old version (trigger), a staged upload (temporary table, COPY, advisory lock)."""
    parcel = sample("parcels")
    created = client.post("/api/layers/parcels/features", json=parcel)
    assert created.status_code == 201, created.text
    fid = created.json()["id"]
    parcel["properties"]["use_status"] = "出租"
    parcel = complete(parcel, "parcels")
    assert client.put(f"/api/layers/parcels/features/{fid}", json=parcel, headers=ANY_VERSION).status_code == 200
    assert client.get(f"/api/layers/parcels/features/{fid}").json()["properties"]["use_status"] == "出租"
    assert client.delete(f"/api/layers/parcels/features/{fid}", headers=ANY_VERSION).status_code == 204

    grid = client.post("/api/layers/grids/features", json=sample("grids")).json()  # in force since 2024
    changed = sample("grids")
    changed["properties"]["manager"] = "赵新"
    changed = complete(changed, "grids")
    assert client.put(f"/api/layers/grids/features/{grid['id']}", json=changed, headers=ANY_VERSION).status_code == 200
    kept = session.execute(
        text("SELECT manager FROM grids_versions WHERE code = :c"), {"c": grid["properties"]["code"]}
    )
    assert kept.scalars().all() == ["王网格"]

    shops = []
    for i in range(3):
        shop = sample("shops")
        shop["properties"]["code"] = COMMUNITY + f"21{i:05d}"
        shop["geometry"]["coordinates"] = [X0 + 0.0003 * i, Y0 + 0.0002]
        shops.append(shop)
    body = json.dumps({"type": "FeatureCollection", "features": shops}, ensure_ascii=False).encode()
    uploaded = client.post("/api/layers/shops/uploads", content=body)
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["status"] == "committed"
    assert client.post("/api/layers/shops/uploads", content=body).json()["id"] == uploaded.json()["id"]  # replay
    listed = client.get("/api/uploads").json()
    assert [u["id"] for u in listed][:1] == [uploaded.json()["id"]]
    assert session.execute(text("SELECT count(*) FROM shops")).scalar() == 3


def test_provisioning_and_granting_again_change_nothing() -> None:
    from spatial import roles
    from tests.conftest import admin_url, migrate_as_owner, recreate_database

    name = "guatu_test_idempotent"
    recreate_database(name)
    migrate_as_owner(name)
    before = catalog_state(admin_url(name))
    roles.provision(admin_url(name), db_settings().role_password_file)
    migrate_as_owner(name)
    assert catalog_state(admin_url(name)) == before
    for role in ("guatu_owner", "guatu_app"):
        mode = db_settings().role_password_file(role).stat().st_mode
        assert stat.S_IMODE(mode) == 0o600, oct(mode)


def test_provisioning_puts_a_changed_app_role_back() -> None:
    """Someone gave the app a role, an attribute, a table and a grant, and changed its password: all undone."""
    from spatial import roles
    from tests.conftest import admin_url, app_url, libpq, migrate_as_owner, recreate_database

    name = "guatu_test_repair"
    recreate_database(name)
    migrate_as_owner(name)
    with psycopg.connect(libpq(admin_url(name)), autocommit=True) as conn:
        conn.execute("GRANT pg_read_server_files TO guatu_app")
        conn.execute("ALTER ROLE guatu_app CREATEDB PASSWORD 'not-the-stored-one'")
        conn.execute("CREATE TABLE app_made (i integer)")
        conn.execute("ALTER TABLE app_made OWNER TO guatu_app")
        conn.execute("GRANT INSERT ON land_use_codes TO guatu_app")
    roles.provision(admin_url(name), db_settings().role_password_file)
    migrate_as_owner(name)
    with psycopg.connect(libpq(app_url(name))) as app:  # the stored password works again
        facts = app.execute(
            "SELECT (SELECT count(*) FROM pg_auth_members WHERE member = r.oid), r.rolcreatedb,"
            " (SELECT relowner::regrole::text FROM pg_class WHERE relname = 'app_made'),"
            " has_table_privilege('land_use_codes', 'INSERT') FROM pg_roles r WHERE r.rolname = current_user"
        ).fetchone()
    assert facts == (0, False, "guatu_owner", False)


def catalog_state(url: str) -> dict[str, object]:
    """Return the roles (with password verifiers), owners and grants of the database URL names."""
    from tests.conftest import libpq

    with psycopg.connect(libpq(url)) as conn:
        return {
            "roles": conn.execute(
                "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolcanlogin, rolpassword FROM pg_authid "
                "WHERE rolname IN ('guatu_owner', 'guatu_app') ORDER BY 1"
            ).fetchall(),
            "members": conn.execute(
                "SELECT roleid, member FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member "
                "WHERE r.rolname = 'guatu_app'"
            ).fetchall(),
            "database": conn.execute(
                "SELECT datdba::regrole::text, datacl::text FROM pg_database WHERE datname = current_database()"
            ).fetchall(),
            "schemas": conn.execute("SELECT nspname, nspowner, nspacl::text FROM pg_namespace ORDER BY 1").fetchall(),
            "relations": conn.execute(
                "SELECT relname, relowner::regrole::text, relacl::text FROM pg_class "
                "WHERE relnamespace = 'public'::regnamespace ORDER BY 1"
            ).fetchall(),
            "routines": conn.execute(
                "SELECT p.oid::regprocedure::text, proowner::regrole::text FROM pg_proc p "
                "WHERE pronamespace = 'public'::regnamespace ORDER BY 1"
            ).fetchall(),
        }


@pytest.fixture
def old_layout() -> Iterator[str]:
    """Return the admin's URL of a database as the previous guatu left it: everything owned by the admin."""
    from layers import migrate
    from tests.conftest import admin_url, libpq

    name = "guatu_test_old_layout"
    with psycopg.connect(libpq(admin_url("postgres")), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    admin = make_engine(url=admin_url(name))
    try:
        migrate.upgrade(admin)  # as the previous version did: the superuser migrates, nobody is granted anything
        with admin.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO grids (geom, code, name, kind, community_code, valid_from) VALUES "
                    "(ST_Multi(ST_MakeEnvelope(120.39, 36.30, 120.40, 36.31, 4490)), :code, '旧网格', '基础网格', "
                    ":community, date '2024-01-01')"
                ),
                {"code": COMMUNITY + "001", "community": COMMUNITY},
            )
            owners = (
                conn.execute(
                    text(
                        "SELECT DISTINCT relowner::regrole::text FROM pg_class WHERE relname IN "
                        "('grids', 'alembic_version', 'spatial_ref_sys')"
                    )
                )
                .scalars()
                .all()
            )
        assert owners == [make_url(admin_url(name)).username]
    finally:
        admin.dispose()
    yield admin_url(name)


def test_upgrade_hands_over_a_database_the_admin_owned(old_layout: str) -> None:
    from tests.conftest import app_url, libpq

    env = dict(os.environ, DATABASE_URL=old_layout)
    upgraded = subprocess.run(
        [str(GUATU), "db", "upgrade"], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert upgraded.returncode == 0, upgraded.stderr
    admin = make_url(old_layout).username
    with psycopg.connect(libpq(old_layout)) as conn:
        still_admins = conn.execute(
            """
            SELECT kind, name FROM (
              SELECT 'relation' AS kind, c.relname::text AS name, c.relowner AS owner, c.oid, 'pg_class' AS catalog
                FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'v', 'S', 'm')
              UNION ALL
              SELECT 'routine', p.proname::text, p.proowner, p.oid, 'pg_proc'
                FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
            ) o
            WHERE o.owner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = o.oid AND d.deptype = 'e'
                              AND d.classid = o.catalog::regclass)
            """
        ).fetchall()
        owners = dict(
            conn.execute(
                "SELECT relname::text, relowner::regrole::text FROM pg_class WHERE relname IN "
                "('grids', 'grids_versions', 'uploads', 'alembic_version', 'parcels_id_seq', 'spatial_ref_sys') "
                "UNION ALL SELECT proname::text, proowner::regrole::text FROM pg_proc "
                "WHERE proname = 'guatu_keep_grids_version' "
                "UNION ALL SELECT 'database', datdba::regrole::text FROM pg_database WHERE datname = current_database()"
            ).fetchall()
        )
    assert still_admins == []
    assert owners == {
        "grids": "guatu_owner",
        "grids_versions": "guatu_owner",
        "uploads": "guatu_owner",
        "alembic_version": "guatu_owner",
        "parcels_id_seq": "guatu_owner",
        "guatu_keep_grids_version": "guatu_owner",
        "database": "guatu_owner",
        "spatial_ref_sys": admin,  # the extension's own table stays with the superuser
    }

    app = make_engine(url=app_url(make_url(old_layout).database or ""))
    try:
        with app.begin() as conn:
            assert conn.execute(text("SELECT current_user")).scalar() == "guatu_app"
            conn.execute(text("SELECT set_config('guatu.role', 'admin', true), set_config('guatu.user', 'x', true)"))
            conn.execute(text("UPDATE grids SET manager = '新网格员' WHERE code = :c"), {"c": COMMUNITY + "001"})
            kept = conn.execute(text("SELECT name FROM grids_versions")).scalars().all()
            conn.execute(
                text(
                    "INSERT INTO uploads (layer, sha256, options_key, size_bytes, options, status, report, uploader) "
                    "VALUES ('grids', 'x', 'y', 0, '{}', 'dry_run', '{}', 'x')"
                )
            )
        assert kept == ["旧网格"]
        assert sqlstate(app, "DELETE FROM uploads") == INSUFFICIENT_PRIVILEGE
    finally:
        app.dispose()


def test_the_app_refuses_to_serve_as_a_superuser(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import api.cli
    import api.main
    from spatial import roles
    from tests.conftest import admin_url

    superuser = make_engine(url=admin_url("postgres"))
    try:
        with pytest.raises(roles.SuperuserRefused, match="超级用户.*superuser"):
            roles.refuse_superuser(superuser)

        monkeypatch.setattr(api.cli, "_engine", lambda: superuser)
        monkeypatch.setattr("uvicorn.run", lambda *a, **k: pytest.fail("served as a superuser"))
        result = CliRunner().invoke(api.cli.app, ["serve"])
        assert result.exit_code == 1

        monkeypatch.setattr(api.main, "make_engine", lambda: superuser)
        with pytest.raises(roles.SuperuserRefused), TestClient(api.main.create_app()):
            pass
    finally:
        superuser.dispose()
