"""HTTP-side settings (env prefix GUATU_)."""

from __future__ import annotations

from typing import Literal

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
