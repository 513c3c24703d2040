"""The hierarchy of units: 区县 → 街道/乡镇 → 社区/行政村 → 网格 (→ 微网格), declared once.

Every code length, every level's name and every "what is the level below" question is
answered here, for Python and (through :func:`describe`) for the pages' scripts. A unit's
code starts with its parent's (GB/T 2260 and GB/T 10114 codes for divisions, the community
code plus a sequence for grids), so a code's level is read from its length.

An urban deployment names the second and third levels 街道 and 社区, a rural one 乡镇 and
行政村 (``GUATU_HIERARCHY=rural``); the codes and the rules are the same, so switching is
configuration only. Both spellings are valid stored values wherever a level is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from layers.settings import layer_settings
from spatial.topology import code_prefix

COUNTY_DIGITS, STREET_DIGITS, COMMUNITY_DIGITS = 6, 9, 12
"""GB/T 2260 county, GB/T 10114 street/township and 统计用区划代码 community/village code lengths."""
GRID_SEQ_WIDTHS = (2, 3, 4)
"""The digits a grid's sequence may take after its community's code (one width per deployment)."""

__all__ = ["code_prefix"]


@dataclass(frozen=True)
class Level:
    """One level of the hierarchy: its id, names (urban, rural), code length and who holds it."""

    id: str
    zh: str
    en: str
    digits: int
    rural_zh: str = ""
    rural_en: str = ""
    optional: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        """Return every Chinese name a stored level may carry (urban first)."""
        return tuple(dict.fromkeys(n for n in (self.zh, self.rural_zh) if n))

    def label(self, rural: bool | None = None) -> str:
        """Return the Chinese name in use in this deployment."""
        rural = layer_settings().hierarchy == "rural" if rural is None else rural
        return (self.rural_zh or self.zh) if rural else self.zh

    def label_en(self, rural: bool | None = None) -> str:
        """Return the English name in use in this deployment."""
        rural = layer_settings().hierarchy == "rural" if rural is None else rural
        return (self.rural_en or self.en) if rural else self.en

    @property
    def pattern(self) -> str:
        """Return the regular expression a code of this level matches."""
        return f"^[0-9]{{{self.digits}}}$"


def levels() -> tuple[Level, ...]:
    """Return the levels from the widest to the narrowest, with this deployment's code widths."""
    settings = layer_settings()
    grid = COMMUNITY_DIGITS + settings.grid_seq_width
    out = [
        Level("county", "区县", "County", COUNTY_DIGITS),
        Level("street", "街道", "Street", STREET_DIGITS, rural_zh="乡镇", rural_en="Township"),
        Level("community", "社区", "Community", COMMUNITY_DIGITS, rural_zh="行政村", rural_en="Village"),
        Level("grid", "网格", "Grid", grid),
    ]
    if settings.micro_grid_width:
        out.append(Level("micro", "微网格", "Micro-grid", grid + settings.micro_grid_width, optional=True))
    return tuple(out)


def level(level_id: str) -> Level:
    """Return the level called LEVEL_ID ("county", "street", "community", "grid", "micro")."""
    for lv in levels():
        if lv.id == level_id:
            return lv
    raise KeyError(level_id)


def level_named(name: str) -> Level | None:
    """Return the level whose Chinese name (urban or rural) is NAME."""
    return next((lv for lv in levels() if name in lv.names), None)


def level_of(code: str) -> Level | None:
    """Return the level of a unit coded CODE (by its length), or None for no level."""
    return next((lv for lv in levels() if lv.digits == len(code)), None)


def below(lv: Level) -> Level | None:
    """Return the level right below LV (None below the narrowest)."""
    ids = [x.id for x in levels()]
    at = ids.index(lv.id)
    return levels()[at + 1] if at + 1 < len(ids) else None


def above(lv: Level) -> Level | None:
    """Return the level right above LV (None above the county)."""
    ids = [x.id for x in levels()]
    at = ids.index(lv.id)
    return levels()[at - 1] if at else None


def parent_of(code: str) -> str | None:
    """Return the code of the unit CODE lies in (a county's parent is its city, GB/T 2260).

    Examples
    --------
    >>> parent_of("370214001006"), parent_of("370214001"), parent_of("370214")
    ('370214001', '370214', '370200')
    """
    lv = level_of(code)
    if lv is None:
        return None
    up = above(lv)
    return code[:4] + "00" if up is None else code[: up.digits]


def digits_pattern(*lengths: int) -> str:
    """Return a regular expression matching a code of any of LENGTHS digits."""
    return "^(" + "|".join(f"[0-9]{{{n}}}" for n in lengths) + ")$"


def names_pattern(ids: tuple[str, ...]) -> str:
    """Return a regular expression matching a code of any of the levels IDS."""
    return "^(" + "|".join(f"[0-9]{{{level(i).digits}}}" for i in ids) + ")$"


def all_names(ids: tuple[str, ...]) -> tuple[str, ...]:
    """Return every stored name (urban and rural) of the levels IDS, in order."""
    return tuple(n for i in ids for n in level(i).names)


def scope_pattern() -> str:
    """Return a regular expression matching the code of a unit of any level (a scope)."""
    return "^(" + "|".join(f"[0-9]{{{lv.digits}}}" for lv in levels()) + ")$"


def describe() -> list[dict[str, Any]]:
    """Return the levels as the pages' scripts read them (id, names, code length)."""
    return [
        {"id": lv.id, "zh": lv.label(), "en": lv.label_en(), "digits": lv.digits, "names": list(lv.names)}
        for lv in levels()
    ]
