"""Least privilege: guatu's two roles, and a database they own, made ready by a superuser.

`guatu_owner` owns the database and every object the migrations make; `guatu_app` logs in,
owns nothing and may connect and make temporary tables (uploads stage into one). The table
grants follow the layers, so they are given after each migration (`layers.migrate`). The
superuser that runs this is needed for roles, databases and the `postgis` extension only.

Running it again changes nothing: roles, passwords, owners and the extension are compared
before they are touched. A database made by an earlier guatu (everything owned by the
superuser) has its objects handed to `guatu_owner`, all but the extension's own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import URL, make_url, text
from sqlalchemy.engine import Engine

from spatial.db import ensure_database
from spatial.settings import APP_ROLE, OWNER_ROLE

ROLE_OPTIONS = sql.SQL("LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS")
SERVER_ROLES = ("pg_execute_server_program", "pg_read_server_files", "pg_write_server_files")
"""Built-in roles that reach the server's files and programs: the app is a member of none."""
_LOCK = 4490_2026
"""Advisory lock key: one provisioning at a time on a server."""

_SYSTEM_SCHEMA = "n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'"
_NOT_EXTENSION = (
    "NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = '{catalog}'::regclass AND e.objid = {oid} "
    "AND e.deptype = 'e')"
)
_RELATION_KINDS = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "f": "FOREIGN TABLE"}
_RELATION_KINDS["S"] = "SEQUENCE"
_TYPE_KINDS = {"e": "TYPE", "r": "TYPE", "d": "DOMAIN"}

Conn = psycopg.Connection[Any]


class SuperuserRefused(RuntimeError):
    """The app would connect as a superuser."""


def provision(admin_url: str, secret_file: Callable[[str], Path]) -> bool:
    """Ready the roles and the database ADMIN_URL names; return whether guatu runs as its own roles.

    As a superuser: create or repair `guatu_owner` and `guatu_app` (passwords read from
    SECRET_FILE(role), or made and stored there), create the database owned by
    `guatu_owner` with `postgis`, hand it whatever the admin (or the app) owns in it, and
    let the app only connect and make temporary tables. Any other role: create the database
    if it is missing, as before (that role then owns it; it needs CREATEDB), and return False.
    """
    target = make_url(admin_url).set(drivername="postgresql")
    database = target.database or ""
    with psycopg.connect(_dsn(target, "postgres"), autocommit=True, connect_timeout=10) as conn:
        if not _is_superuser(conn):
            ensure_database(admin_url)
            return False
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK,))
        try:
            for role in (OWNER_ROLE, APP_ROLE):
                _ensure_role(conn, role, secret_file(role))
            _ensure_database(conn, database)
            with psycopg.connect(_dsn(target, database), connect_timeout=10) as db:
                _ensure_postgis(db)
                _hand_over(db)
                _lock_down(db, database)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK,))
    return True


def connected_role(engine: Engine) -> tuple[str, bool]:
    """Return the role ENGINE logs in as, and whether it is a superuser."""
    with engine.connect() as conn:
        name, superuser = conn.execute(
            text("SELECT current_user::text, rolsuper FROM pg_roles WHERE rolname = current_user")
        ).one()
    return str(name), bool(superuser)


def refuse_superuser(engine: Engine) -> str:
    """Return the role ENGINE logs in as; raise SuperuserRefused when it is a superuser."""
    name, superuser = connected_role(engine)
    if superuser:
        raise SuperuserRefused(
            f"应用将以超级用户 {name} 连接数据库，拒绝启动。请让 DATABASE_URL 使用普通角色"
            f"（DATABASE_URL 是超级用户时，guatu 会自行建立 {OWNER_ROLE} 与 {APP_ROLE} 并以 {APP_ROLE} 连接），"
            f"或取消它的超级用户属性：ALTER ROLE {name} NOSUPERUSER。"
            f" (The app would connect as the superuser {name}: refusing to serve. Point DATABASE_URL at an"
            f" ordinary role (given a superuser, guatu makes {OWNER_ROLE} and {APP_ROLE} and connects as"
            f" {APP_ROLE}), or take the attribute away: ALTER ROLE {name} NOSUPERUSER.)"
        )
    return name


def _dsn(url: URL, database: str) -> str:
    """Return the libpq URL of DATABASE on URL's server, as URL's role."""
    return url.set(database=database).render_as_string(hide_password=False)


def _is_superuser(conn: Conn) -> bool:
    row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    return bool(row and row[0])


def _ensure_role(conn: Conn, role: str, secret_path: Path) -> None:
    """Create ROLE as a plain login, or put it back to one; its password is the one stored in SECRET_PATH."""
    secret = _read_secret(secret_path)
    if secret is None:
        secret = secrets.token_urlsafe(24)
        _store_secret(secret_path, secret)
    row = conn.execute(
        "SELECT oid, rolpassword, rolcanlogin AND NOT (rolsuper OR rolcreatedb OR rolcreaterole OR rolreplication"
        " OR rolbypassrls) FROM pg_authid WHERE rolname = %s",
        (role,),
    ).fetchone()
    name = sql.Identifier(role)
    verifier = None
    if row is None or not password_matches(row[1], role, secret):
        # libpq hashes it here: the password itself never reaches the server or its log
        verifier = conn.pgconn.encrypt_password(secret.encode(), role.encode(), b"scram-sha-256").decode()
    if row is None:
        conn.execute(sql.SQL("CREATE ROLE {} {} PASSWORD {}").format(name, ROLE_OPTIONS, sql.Literal(verifier)))
        return
    if not row[2]:
        conn.execute(sql.SQL("ALTER ROLE {} {}").format(name, ROLE_OPTIONS))
    if verifier is not None:
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(name, sql.Literal(verifier)))
    if role == APP_ROLE:  # the app belongs to no role: none of pg_*_server_*, nor any other
        held = conn.execute(
            "SELECT r.rolname, g.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid"
            " JOIN pg_roles g ON g.oid = m.grantor WHERE m.member = %s",
            (row[0],),
        ).fetchall()
        for granted, grantor in held:
            conn.execute(
                sql.SQL("REVOKE {} FROM {} GRANTED BY {}").format(
                    sql.Identifier(str(granted)), name, sql.Identifier(str(grantor))
                )
            )


def password_matches(stored: str | None, role: str, secret: str) -> bool:
    """Tell whether STORED (a pg_authid SCRAM or md5 verifier) is ROLE's verifier of SECRET.

    Examples
    --------
    >>> password_matches("md5" + hashlib.md5(b"s3cretbob").hexdigest(), "bob", "s3cret")
    True
    >>> password_matches(None, "bob", "s3cret")
    False
    """
    if not stored:
        return False
    if stored.startswith("SCRAM-SHA-256$"):  # SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
        try:
            head, keys = stored.removeprefix("SCRAM-SHA-256$").split("$")
            iterations, salt = head.split(":")
            stored_key = base64.b64decode(keys.split(":")[0])
            salted = hashlib.pbkdf2_hmac("sha256", secret.encode(), base64.b64decode(salt), int(iterations))
        except ValueError:
            return False
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        return hmac.compare_digest(hashlib.sha256(client_key).digest(), stored_key)
    if stored.startswith("md5"):
        return hmac.compare_digest(stored, "md5" + hashlib.md5((secret + role).encode()).hexdigest())
    return False


def _read_secret(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def _store_secret(path: Path, secret: str) -> None:
    """Write SECRET to PATH, readable by its owner only (the folder too, when made here)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secret + "\n")
    partial.chmod(0o600)
    partial.replace(path)


def _ensure_database(conn: Conn, database: str) -> None:
    """Create DATABASE owned by guatu_owner, or hand it over from the admin (or the app)."""
    row = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (database,)).fetchone()
    name = sql.Identifier(database)
    if row is None:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(name, sql.Identifier(OWNER_ROLE)))
    elif row[0] != OWNER_ROLE and row[0] in (_current_user(conn), APP_ROLE):
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(name, sql.Identifier(OWNER_ROLE)))


def _current_user(conn: Conn) -> str:
    row = conn.execute("SELECT current_user::text").fetchone()
    return str(row[0]) if row else ""


INDEXED_OPERATORS = ("geometry_overlaps(geometry, geometry)",)
"""The function of PostGIS's ``&&``, the spatial index's operator, declared LEAKPROOF.

Under row-level security PostgreSQL evaluates a condition that is not leakproof only after the
policy, so ``geom && box`` could not use the GiST index: every tile and bounding-box read became
a scan of the whole table (a county's tile 3.6 ms → 220 ms). The function compares two bounding
boxes and tells nothing else; its one error (mixed SRIDs) cannot happen on stored rows, which a
CHECK constraint keeps in one SRID. Only a superuser may say so, so it is said here.
"""


def _ensure_postgis(db: Conn) -> None:
    """Create the postgis extension (a superuser's job: it is not a trusted extension); mark its index operator."""
    if not db.execute("SELECT 1 FROM pg_extension WHERE extname = 'postgis'").fetchone():
        db.execute("CREATE EXTENSION postgis")
    for function in INDEXED_OPERATORS:
        db.execute(f"ALTER FUNCTION {function} LEAKPROOF")


def _hand_over(db: Conn) -> None:
    """Give guatu_owner the schemas, relations, routines and types the admin or the app owns.

    The extension's own objects (spatial_ref_sys, the PostGIS functions) stay with the admin.
    REASSIGN OWNED cannot be used: the bootstrap superuser's objects include the system's.
    """
    previous = "(SELECT oid FROM pg_roles WHERE rolname IN (current_user, %(app)s))"
    owner = sql.Identifier(OWNER_ROLE)
    params = {"app": APP_ROLE}
    schemas = db.execute(
        f"SELECT n.nspname FROM pg_namespace n WHERE n.nspowner IN {previous} AND {_SYSTEM_SCHEMA}"
        f" AND {_NOT_EXTENSION.format(catalog='pg_namespace', oid='n.oid')} ORDER BY 1",
        params,
    ).fetchall()
    for (schema,) in schemas:
        db.execute(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(sql.Identifier(str(schema)), owner))
    # A sequence a column owns (serial, identity) follows its table and cannot be moved alone.
    relations = db.execute(
        f"SELECT n.nspname, c.relname, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        f" WHERE c.relowner IN {previous} AND {_SYSTEM_SCHEMA} AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')"
        f" AND {_NOT_EXTENSION.format(catalog='pg_class', oid='c.oid')}"
        " AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass"
        " AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))"
        " ORDER BY c.relkind = 'S', c.oid",
        params,
    ).fetchall()
    for schema, relation, kind in relations:
        db.execute(
            sql.SQL("ALTER {} {} OWNER TO {}").format(
                sql.SQL(_RELATION_KINDS[str(kind)]), sql.Identifier(str(schema), str(relation)), owner
            )
        )
    routines = db.execute(
        f"SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        f" WHERE p.proowner IN {previous} AND {_SYSTEM_SCHEMA}"
        f" AND {_NOT_EXTENSION.format(catalog='pg_proc', oid='p.oid')} ORDER BY p.oid",
        params,
    ).fetchall()
    for (signature,) in routines:  # regprocedure text is the server's own quoting of the signature
        db.execute(sql.SQL("ALTER ROUTINE {} OWNER TO {}").format(sql.SQL(str(signature)), owner))
    types = db.execute(
        f"SELECT n.nspname, t.typname, t.typtype::text FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
        f" WHERE t.typowner IN {previous} AND {_SYSTEM_SCHEMA} AND t.typtype IN ('e', 'r', 'd')"
        f" AND {_NOT_EXTENSION.format(catalog='pg_type', oid='t.oid')} ORDER BY t.oid",
        params,
    ).fetchall()
    for schema, name, kind in types:
        db.execute(
            sql.SQL("ALTER {} {} OWNER TO {}").format(
                sql.SQL(_TYPE_KINDS[str(kind)]), sql.Identifier(str(schema), str(name)), owner
            )
        )


def _lock_down(db: Conn, database: str) -> None:
    """Let nobody but the owner create anything; let the app connect and make temporary tables."""
    name = sql.Identifier(database)
    app, owner = sql.Identifier(APP_ROLE), sql.Identifier(OWNER_ROLE)
    db.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(name))
    db.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(name, app))
    if db.execute("SELECT to_regnamespace('public')").fetchone() == (None,):
        return  # no schema public here
    db.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    row = db.execute("SELECT has_schema_privilege(%s, 'public', 'CREATE')", (OWNER_ROLE,)).fetchone()
    if not (row and row[0]):  # on PostgreSQL 15 the database owner owns `public`; where another role does
        db.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(owner))
