"""Engine settings: where the database is, which role connects, and how geometry is kept.

Three roles take part. The admin (the cluster's `postgres`, or a superuser `DATABASE_URL`)
only creates roles, databases and the `postgis` extension. `guatu_owner` owns the database
and its tables and runs the migrations. `guatu_app`, the role the app connects as, owns
nothing and holds only the grants the migrations give it.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import make_url

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORT = 54329
OWNER_ROLE = "guatu_owner"
"""Owns the database and every table in it; runs the migrations."""
APP_ROLE = "guatu_app"
"""The app's login: owns nothing, may only read and write rows."""
ROLES_DIR = PROJECT_ROOT / ".pgroles"
"""Passwords of the two roles on an external server, one 0600 file per host, port and role."""


class LocalPgSettings(BaseSettings):
    """The private PostGIS cluster `make run` starts when no DATABASE_URL is given."""

    model_config = SettingsConfigDict(env_prefix="GUATU_PG_")

    data_dir: Path = PROJECT_ROOT / ".pgdata"
    port: int | None = None
    """Fixed port; by default 54329, or the next free one when the cluster is first made."""
    host: str = "127.0.0.1"
    database: str = "guatu"
    user: str = "postgres"
    """The cluster's superuser: creates roles, databases and the postgis extension, nothing else."""
    bin_dir: Path = Path("/usr/lib/postgresql/15/bin")

    @property
    def port_file(self) -> Path:
        """Return the file beside the data folder recording the port the cluster was given."""
        return self.data_dir.with_name(self.data_dir.name + ".port")

    def resolved_port(self) -> int:
        """Return the cluster's port: the setting, else the recorded one, else 54329."""
        if self.port is not None:
            return self.port
        try:
            return int(self.port_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return DEFAULT_PORT

    @property
    def password_file(self) -> Path:
        """Return the file (mode 0600, beside the data folder) holding the superuser password."""
        return self.data_dir.with_name(self.data_dir.name + ".password")

    def password(self) -> str | None:
        """Return the cluster's password, or None for a cluster made without one."""
        return _read_secret(self.password_file)

    def role_password_file(self, role: str) -> Path:
        """Return the file (mode 0600, beside the data folder) holding ROLE's password."""
        return self.data_dir.with_name(f"{self.data_dir.name}.{role}.password")

    def serves(self, host: str | None, port: int | None) -> bool:
        """Tell whether HOST:PORT is this checkout's local cluster."""
        return (
            host in (self.host, "localhost") and (port or 5432) == self.resolved_port() and self.password_file.exists()
        )

    def admin_url(self, database: str | None = None) -> str:
        """Return the SQLAlchemy URL of a database in the local cluster, as its superuser."""
        return self._url(self.user, self.password(), database)

    def role_url(self, role: str, database: str | None = None) -> str:
        """Return the SQLAlchemy URL of a database in the local cluster, as ROLE."""
        return self._url(role, _read_secret(self.role_password_file(role)), database)

    def _url(self, user: str, secret: str | None, database: str | None) -> str:
        auth = f"{user}:{quote(secret, safe='')}" if secret else user
        return f"postgresql+psycopg://{auth}@{self.host}:{self.resolved_port()}/{database or self.database}"


class DbSettings(BaseSettings):
    """Database connection; `DATABASE_URL` wins over the local cluster."""

    model_config = SettingsConfigDict(env_prefix="GUATU_")

    database_url: str | None = Field(default=None, validation_alias=AliasChoices("DATABASE_URL", "GUATU_DATABASE_URL"))
    owner_database_url: str | None = Field(default=None, validation_alias=AliasChoices("GUATU_OWNER_DATABASE_URL"))
    """Who runs the migrations; by default guatu_owner (or DATABASE_URL's own role when that is no superuser)."""
    pool_size: int = 10
    pool_timeout_s: float = 10
    """How long a request waits for a free connection before it is answered 503 busy."""
    statement_timeout_ms: int = 30_000
    database_read_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_READ_URL", "GUATU_DATABASE_READ_URL")
    )
    """A streaming-replication hot standby of the primary: read-only work goes there (docs/deploy.md)."""
    read_max_lag_s: float = 30
    """A standby further behind than this is skipped: reads go to the primary."""
    read_retry_s: float = 30
    """After the standby failed, reads go to the primary this long before it is tried again."""
    read_connect_timeout_s: int = 3
    """How long a connection to the standby may take before it counts as down."""

    @property
    def external(self) -> bool:
        """Whether the user pointed guatu at their own server."""
        return bool(self.database_url)

    def admin_url(self, database: str | None = None) -> str:
        """Return the URL that provisions roles and databases: DATABASE_URL's, or the local superuser's."""
        if self.database_url:
            return _with_database(normalise_url(self.database_url), database)
        return LocalPgSettings().admin_url(database)

    def provisions_roles(self) -> bool:
        """Tell whether guatu runs as its own two roles: on the local cluster, or when DATABASE_URL is a superuser.

        A non-superuser DATABASE_URL is the operator's choice of role and is used as given.
        """
        return not self.database_url or _is_superuser(self.admin_url())

    def url(self, database: str | None = None) -> str:
        """Return the app's URL (guatu_app, or DATABASE_URL's role when that is no superuser)."""
        if self.provisions_roles():
            return self._role_url(APP_ROLE, database)
        return self.admin_url(database)

    def read_url(self, database: str | None = None) -> str | None:
        """Return the URL of the standby as the app's role, or None when DATABASE_READ_URL is not set.

        The standby is a physical copy of the primary: the same roles with the same passwords.
        When guatu runs as its own roles, DATABASE_READ_URL gives the server (host, port, database,
        options) and the app logs in there as it does on the primary; a non-superuser
        DATABASE_URL's role is used as given, so DATABASE_READ_URL is used as given too.
        """
        if not self.database_read_url:
            return None
        given = make_url(_with_database(normalise_url(self.database_read_url), database))
        if not self.provisions_roles():
            return given.render_as_string(hide_password=False)
        app = make_url(self.url(database))
        standby = app.set(host=given.host, port=given.port, database=given.database or app.database, query=given.query)
        return standby.render_as_string(hide_password=False)

    def owner_url(self, database: str | None = None) -> str:
        """Return the URL migrations run with: GUATU_OWNER_DATABASE_URL, else guatu_owner, else DATABASE_URL."""
        if self.owner_database_url:
            return _with_database(normalise_url(self.owner_database_url), database)
        if self.provisions_roles():
            return self._role_url(OWNER_ROLE, database)
        return self.admin_url(database)

    def role_password_file(self, role: str) -> Path:
        """Return the file holding ROLE's password on the configured server."""
        local = LocalPgSettings()
        if not self.database_url:
            return local.role_password_file(role)
        url = make_url(normalise_url(self.database_url))
        if local.serves(url.host, url.port):  # the local cluster, reached through DATABASE_URL
            return local.role_password_file(role)
        host = re.sub(r"[^A-Za-z0-9.-]", "_", url.host or "localhost")
        return ROLES_DIR / f"{host}-{url.port or 5432}.{role}.password"

    def _role_url(self, role: str, database: str | None) -> str:
        """Return the admin URL with ROLE and its stored password instead of the admin."""
        secret = _read_secret(self.role_password_file(role))
        if secret is None:
            raise RuntimeError(
                f"角色 {role} 的密码尚未生成：请先运行 `guatu db upgrade` "
                f"(no password for role {role} yet: run `guatu db upgrade` first)"
            )
        url = make_url(self.admin_url(database)).set(username=role, password=secret)
        return url.render_as_string(hide_password=False)


def _read_secret(path: Path) -> str | None:
    """Return the secret stored in PATH, or None when there is none."""
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def _with_database(url: str, database: str | None) -> str:
    """Return URL naming DATABASE instead, when one is given."""
    if database is None:
        return url
    return make_url(url).set(database=database).render_as_string(hide_password=False)


@lru_cache
def _is_superuser(url: str) -> bool:
    """Tell whether URL's role is a superuser (asked of the server once per process)."""
    import psycopg

    own = make_url(url).set(drivername="postgresql")
    try:
        conn = psycopg.connect(own.render_as_string(hide_password=False), connect_timeout=10)
    except psycopg.OperationalError:  # its database may not exist yet: ask the maintenance one
        conn = psycopg.connect(own.set(database="postgres").render_as_string(hide_password=False), connect_timeout=10)
    with conn:
        row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        return bool(row and row[0])


def normalise_url(raw: str) -> str:
    """Return RAW with a psycopg 3 driver name.

    Examples
    --------
    >>> normalise_url("postgres://u@h/db")
    'postgresql+psycopg://u@h/db'
    """
    for prefix in ("postgresql+psycopg2://", "postgresql://", "postgres://"):
        if raw.startswith(prefix):
            return "postgresql+psycopg://" + raw[len(prefix) :]
    return raw


@lru_cache
def db_settings() -> DbSettings:
    """Return the process-wide database settings."""
    return DbSettings()
