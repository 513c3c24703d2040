"""HTTP-side settings (env prefix GUATU_)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
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
    tile_cache_size: int = 4096
    """Vector tiles kept in memory (0: none); every write through the app invalidates its layer's."""
    print_workers: int = Field(2, ge=1, le=32)
    """Wall maps drawn at once (each in its own worker process)."""
    print_queue: int = Field(6, ge=0, le=1000)
    """Wall maps waiting their turn; beyond, a print is refused with 503 and Retry-After."""
    print_timeout_s: float = Field(300, gt=0)
    """A wall map still drawing after this long is stopped."""
    check_workers: int = Field(2, ge=1, le=32)
    """Boundary checks run at once."""
    check_queue: int = Field(4, ge=0, le=1000)
    """Boundary checks waiting their turn."""
    upload_workers: int = Field(2, ge=1, le=32)
    """Uploads checked and written at once."""
    upload_queue: int = Field(4, ge=0, le=1000)
    """Uploads waiting their turn (their files wait on disk, not in memory)."""
