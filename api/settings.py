"""HTTP-side settings (env prefix GUATU_)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    """How the app is served and titled."""

    model_config = SettingsConfigDict(env_prefix="GUATU_")

    host: str = "127.0.0.1"
    port: int = 8000
    site_title: str = "城阳街道 集体资源一张图"
    max_feature_bytes: int = 20 * 1024 * 1024
    max_upload_bytes: int = 200 * 1000 * 1000
    basemap: Literal["none", "tianditu-vec", "tianditu-img", "xyz"] = "none"
    """none (default; works offline), tianditu-vec, tianditu-img or xyz."""
    tianditu_key: str = ""
    basemap_url: str = ""
    """For basemap=xyz: a tile URL template with {z}/{x}/{y}."""
    basemap_attribution: str = ""
    secure_cookies: bool = False
    """Send the session cookies with Secure (set it when the site is served over HTTPS)."""
    login_hint: str = ""
    """A line shown under the sign-in form (`make run` says where the demo passwords are)."""
    tile_cache_size: int = 4096
    """Vector tiles kept in memory (0: none); a committed write to a layer, by anyone, retires its layer's."""
    tile_store_dir: Path | None = None
    """Where the tile store keeps low-zoom vector tiles on disk, shared by every worker process
    (default: `.tiles` beside the upload archive, GUATU_ARCHIVE_DIR)."""
    tile_store_mb: Annotated[int, Field(ge=0)] = 1000
    """The tile store's size cap in MB (0: no tile store); older generations are pruned as writes retire them."""
    tile_store_max_zoom: Annotated[int, Field(ge=-1, le=22)] = 14
    """Tiles up to this zoom are kept in the tile store (-1: none)."""
    cockpit_cache_s: Annotated[float, Field(ge=0, le=3600)] = 10
    """The cockpit's figures are computed once per visibility this often, however many screens ask (0: every time)."""
    print_workers: Annotated[int, Field(ge=1, le=32)] = 2
    """Wall maps drawn at once (each in its own worker process)."""
    print_queue: Annotated[int, Field(ge=0, le=1000)] = 6
    """Wall maps waiting their turn; beyond, a print is refused with 503 and Retry-After."""
    print_timeout_s: Annotated[float, Field(gt=0)] = 300
    """A wall map still drawing after this long is stopped."""
    check_workers: Annotated[int, Field(ge=1, le=32)] = 2
    """Boundary checks run at once."""
    check_queue: Annotated[int, Field(ge=0, le=1000)] = 4
    """Boundary checks waiting their turn."""
    upload_workers: Annotated[int, Field(ge=1, le=32)] = 2
    """Uploads checked and written at once."""
    upload_queue: Annotated[int, Field(ge=0, le=1000)] = 4
    """Uploads waiting their turn (their files wait on disk, not in memory)."""
    upload_min_rate_kbs: Annotated[float, Field(ge=0)] = 8
    """An upload body slower than this (kB/s, averaged from its start, after 30 s) is stopped: it holds a place."""
    per_client: Annotated[int, Field(ge=1, le=1000)] = 2
    """Places one client address may hold in each lane of heavy work (prints, checks, uploads): nobody fills a lane."""
    header_timeout_s: Annotated[float, Field(gt=0)] = 10
    """Seconds a client has to send complete request headers, from connecting or the end of the last response."""
    body_timeout_s: Annotated[float, Field(gt=0)] = 30
    """Seconds a request body may stall (no bytes) while the app waits for it."""
    keep_alive_s: Annotated[int, Field(ge=1)] = 5
    """Seconds an idle keep-alive connection is kept between requests."""
    max_connections: Annotated[int, Field(ge=1)] = 1000
    """Open connections at most; more are closed at once (kept below the open-file limit)."""
    max_header_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024
    """Request line and headers together at most, in bytes (larger: 400)."""
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    """Server processes `guatu serve` runs (each with its own event loop and pool); the lanes of heavy work,
    the sign-in throttle and the connection cap hold for all of them together."""
    shared_lanes: bool | None = None
    """Count the lanes' places in the database (advisory locks), for every process serving the same database:
    None (default) when workers > 1. Set it where several `guatu serve` run on more machines."""
    session_cache_s: Annotated[float, Field(ge=0, le=300)] | None = None
    """Seconds a resolved sign-in is trusted without asking the database: None (default) is 15 s with one
    worker and 0 with several (a sign-out or a disabled account must end at once on every worker)."""
    loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    """The event loop: auto is uvloop when installed (a dependency: less CPU a request), else asyncio."""
    worker_header: bool = False
    """Say which server process answered in an `X-Guatu-Worker` header (tests and benches of several workers)."""
    switch_interval_ms: Annotated[float, Field(gt=0, le=100)] = 1.0
    """How soon the event loop gets the interpreter back from a busy thread (Python's switch interval, ms)."""
    forwarded_allow_ips: str = "127.0.0.1"
    """Comma-separated proxy addresses whose X-Forwarded-For / X-Forwarded-Proto are believed."""
    allowed_hosts: str = "127.0.0.1,localhost,::1,testserver"
    """Comma-separated host names (no port) the app answers to; any other Host gets 400. public_url's is added."""
    public_url: str = ""
    """Where users reach the app (scheme://host[:port], the proxy's if any): absolute URLs are built from it.
    Empty: http://GUATU_HOST:GUATU_PORT, where `guatu serve` listens."""

    @model_validator(mode="after")
    def _served_here(self) -> ApiSettings:
        """Default the public URL to where the app itself listens."""
        if not self.public_url:
            host = f"[{self.host}]" if ":" in self.host else self.host
            self.public_url = f"http://{host}:{self.port}"
        return self

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        """Refuse a public URL that is not http(s)://host[:port][/path]; drop a trailing slash."""
        if not value.strip():
            return ""
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"GUATU_PUBLIC_URL 须为 http(s)://主机[:端口] (must be http(s)://host[:port]): {value!r}")
        return value.strip().rstrip("/")

    def host_names(self) -> frozenset[str]:
        """Return the host names the app answers to, lower-cased: allowed_hosts and public_url's host."""
        listed = {name.strip().lower().strip("[]") for name in self.allowed_hosts.split(",") if name.strip()}
        public = urlsplit(self.public_url).hostname
        return frozenset(listed | ({public.lower()} if public else set()))
