"""Domain settings (env prefix GUATU_)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from layers.rent import UNITS
from spatial.settings import PROJECT_ROOT


class LayerSettings(BaseSettings):
    """Rules that differ between deployments."""

    model_config = SettingsConfigDict(env_prefix="GUATU_")

    grid_seq_width: int = 3
    """Digits after the 12-digit community code in a grid code (3 → 15 digits; 2 in the
    urban-management family)."""

    hierarchy: Literal["urban", "rural"] = "urban"
    """How the levels are named: 街道/社区 (urban) or 乡镇/行政村 (rural); codes and rules are the same."""

    micro_grid_width: int = 0
    """Digits after a grid code in a 微网格 (micro-grid) code; 0: this deployment has no micro-grids."""

    extent: tuple[float, float, float, float] = (73.0, 3.0, 136.0, 54.0)
    """Where this deployment's data can lie (minlon, minlat, maxlon, maxlat); default: China."""

    projected_epsg: int | None = Field(None, ge=4491, le=4554)
    """The deployment's CGCS2000 Gauss-Kruger CRS (EPSG:4491–4554) the OGC API offers besides CRS84 and
    CGCS2000; unset: the 3° zone whose central meridian is nearest the middle of the layer's data."""

    timezone: str = "Asia/Shanghai"
    """The time zone the deployment's days, months and years are counted in (deadlines, this month, this year)."""

    archive_dir: Path = PROJECT_ROOT / ".archive"
    """Where uploaded files are kept, by SHA-256 (content-addressed, never rewritten)."""

    archive_days: float = Field(365, ge=0)
    """Archived files and full reports unused for this many days are pruned (0: kept for ever)."""

    archive_max_mb: int = Field(10_000, ge=0)
    """The archive's size cap in MB: beyond it the oldest files go first (0: no cap)."""

    lease_max_years: int = Field(20, ge=1, le=100)
    """The longest term a lease may have (collective land: 20 years); a longer one is warned of (term_too_long)."""

    expiry_warning_days: int = Field(90, ge=0, le=3650)
    """A contract ending within this many days is 即将到期 (expiring_soon)."""

    rent_floors: dict[str, float] = {"元/亩·年": 300.0, "元/m²·月": 5.0, "元/年": 0.0, "元/月": 0.0}
    """The lowest rent per rent unit (layers.rent.UNITS); a rent below it is warned of (rent_below_floor).
    0: no floor. Set as JSON, e.g. ``GUATU_RENT_FLOORS='{"元/亩·年": 500}'`` (units left out: no floor)."""

    @field_validator("rent_floors")
    @classmethod
    def _floors(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(UNITS))
        if unknown or any(v < 0 for v in value.values()):
            raise ValueError(f"rent_floors takes non-negative floors for the units {UNITS}, not {unknown}")
        return value

    problem_warn_days: int = Field(3, ge=0, le=365)
    """A problem whose deadline is this many days away or nearer shows yellow (red once past it)."""

    @field_validator("micro_grid_width")
    @classmethod
    def _micro(cls, value: int) -> int:
        if value not in (0, 2, 3):
            raise ValueError("micro_grid_width must be 0, 2 or 3")
        return value

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
