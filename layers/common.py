"""Fields and rules several layers share: community and grid codes, ledger enums."""

from __future__ import annotations

from typing import Any

from layers.base import CrossRule, Field, Locator
from layers.settings import layer_settings

COMMUNITY_CODE = "^[0-9]{12}$"
GRID_CODE = "^[0-9]{14,16}$"
ASSET_CODE = "^[0-9]{12}([GJZ][A-Z][0-9]{5}|[0-9]{7})$"
"""Either a 宗地代码 (12 digits + G/J/Z + feature code + 5 digits) or an asset code
(12-digit village code + 2-digit category + 5-digit sequence)."""

IDLE = "闲置"
IDLE_COLOR = "#e11d48"


def community_field(*, required: bool = False) -> Field:
    """Return the 12-digit community/village code field."""
    return Field(
        "community_code",
        "社区/村代码",
        "Community code",
        "code",
        required=required,
        pattern=COMMUNITY_CODE,
        pattern_zh="12位统计用区划代码",
        max_length=12,
        index=True,
    )


def grid_field(*, required: bool = False) -> Field:
    """Return the grid code field (community code + sequence)."""
    return Field(
        "grid_code",
        "网格编码",
        "Grid code",
        "code",
        required=required,
        pattern=GRID_CODE,
        pattern_zh="社区代码+网格序号",
        max_length=16,
        index=True,
    )


IN_COMMUNITY = Locator("community_code", "divisions", where=(("level", "社区"),))
IN_GRID = Locator("grid_code", "grids")


def grid_code_rules(field: str) -> CrossRule:
    """Return the rule for the grid code in FIELD: community prefix and sequence width."""

    def rule(props: dict[str, Any]) -> tuple[str, str, str, str] | None:
        code, community = props.get(field), props.get("community_code")
        if not code:
            return None
        if community and code[:12] != community:
            return (
                "code_inconsistent",
                field,
                f"网格编码 {code} 的前12位应为社区代码 {community}",
                f"grid code {code} must start with community code {community}",
            )
        width = layer_settings().grid_seq_width
        if len(code) != 12 + width:
            return (
                "code_format",
                field,
                f"网格编码应为 {12 + width} 位（12位社区代码+{width}位序号）",
                f"grid code must have {12 + width} digits (12-digit community code + {width}-digit sequence)",
            )
        return None

    return rule
