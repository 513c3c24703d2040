"""Domain settings (env prefix GUATU_)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from spatial.settings import PROJECT_ROOT


class LayerSettings(BaseSettings):
    """Rules that differ between deployments."""

    model_config = SettingsConfigDict(env_prefix="GUATU_")

    grid_seq_width: int = 3
    """Digits after the 12-digit community code in a grid code (3 → 15 digits; 2 in the
    urban-management family)."""

    extent: tuple[float, float, float, float] = (73.0, 3.0, 136.0, 54.0)
    """Where this deployment's data can lie (minlon, minlat, maxlon, maxlat); default: China."""

    archive_dir: Path = PROJECT_ROOT / ".archive"
    """Where uploaded files are kept, by SHA-256 (content-addressed, never rewritten)."""

    @field_validator("grid_seq_width")
    @classmethod
    def _width(cls, value: int) -> int:
        if value not in (2, 3, 4):
            raise ValueError("grid_seq_width must be 2, 3 or 4")
        return value


@lru_cache
def layer_settings() -> LayerSettings:
    """Return the process-wide domain settings."""
    return LayerSettings()
