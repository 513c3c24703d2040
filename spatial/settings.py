"""Engine settings: where the database is and how geometry is kept."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORT = 54329
OWNER_ROLE = "guatu_owner"
"""Owns the database and every table in it; runs the migrations."""
APP_ROLE = "guatu_app"
"""The app's login: owns nothing, may only read and write rows."""


class LocalPgSettings(BaseSettings):
    """The private PostGIS cluster `make run` starts when no DATABASE_URL is given."""

    model_config = SettingsConfigDict(env_prefix="GUATU_PG_")

    data_dir: Path = PROJECT_ROOT / ".pgdata"
    port: int | None = None
    """Fixed port; by default 54329, or the next free one when the cluster is first made."""
    host: str = "127.0.0.1"
    database: str = "guatu"
    user: str = "postgres"
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
        try:
            return self.password_file.read_text().strip() or None
        except FileNotFoundError:
            return None

    def url(self, database: str | None = None) -> str:
        """Return the SQLAlchemy URL of a database in the local cluster."""
        secret = self.password()
        auth = f"{self.user}:{quote(secret, safe='')}" if secret else self.user
        return f"postgresql+psycopg://{auth}@{self.host}:{self.resolved_port()}/{database or self.database}"


class DbSettings(BaseSettings):
    """Database connection; `DATABASE_URL` wins over the local cluster."""

    model_config = SettingsConfigDict(env_prefix="GUATU_")

    database_url: str | None = Field(default=None, validation_alias=AliasChoices("DATABASE_URL", "GUATU_DATABASE_URL"))
    pool_size: int = 10
    statement_timeout_ms: int = 30_000

    @property
    def external(self) -> bool:
        """Whether the user pointed guatu at their own server."""
        return bool(self.database_url)

    def url(self) -> str:
        """Return the SQLAlchemy URL, normalised to the psycopg 3 driver."""
        raw = self.database_url or LocalPgSettings().url()
        return normalise_url(raw)


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
