"""Fields and rules several layers share: community and grid codes, ledger enums."""

from __future__ import annotations

from typing import Any

from layers import hierarchy
from layers.base import CrossRule, Field, Locator
from layers.hierarchy import COMMUNITY_DIGITS, GRID_SEQ_WIDTHS

COMMUNITY_CODE = f"^[0-9]{{{COMMUNITY_DIGITS}}}$"
GRID_CODE = f"^[0-9]{{{COMMUNITY_DIGITS + min(GRID_SEQ_WIDTHS)},{COMMUNITY_DIGITS + max(GRID_SEQ_WIDTHS)}}}$"
"""Any width a deployment may choose; the width in force is checked by :func:`grid_code_rules`."""
ASSET_CODE = f"^[0-9]{{{COMMUNITY_DIGITS}}}([GJZ][A-Z][0-9]{{5}}|[0-9]{{7}})$"
"""Either a 宗地代码 (12 digits + G/J/Z + feature code + 5 digits) or an asset code
(12-digit village code + 2-digit category + 5-digit sequence)."""

IDLE = "闲置"
IDLE_COLOR = "#e11d48"

CAMPAIGN_STAGES = ("排查摸底", "清理回收", "盘活利用", "建章立制")
"""The four steps of the campaign an asset goes through, in order (城阳街道's 四步工作法)."""


def campaign_field() -> Field:
    """Return the field holding which step of the campaign an asset has reached (empty: not yet surveyed)."""
    return Field(
        "campaign_stage",
        "工作阶段",
        "Campaign stage",
        "enum",
        choices=CAMPAIGN_STAGES,
        filter=True,
        count=True,
        filter_zh="阶段",
    )


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
        aliases=("社区代码", "村代码", "社区编码", "村居代码", "社区/村编码", "community", "village_code"),
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
        aliases=("网格代码", "网格编号", "所属网格", "WGBM", "grid"),
    )


IN_COMMUNITY = Locator("community_code", "divisions", level="community")
IN_GRID = Locator("grid_code", "grids", level="grid")


def grid_code_rules(field: str) -> CrossRule:
    """Return the rule for the grid code in FIELD: community prefix and sequence width."""

    def rule(props: dict[str, Any]) -> tuple[str, str, str, str] | None:
        code, community = props.get(field), props.get("community_code")
        if not code:
            return None
        community_level, grid_level = hierarchy.level("community"), hierarchy.level("grid")
        n, width = community_level.digits, grid_level.digits - community_level.digits
        if community and code[:n] != community:
            return (
                "code_inconsistent",
                field,
                f"网格编码 {code} 的前{n}位应为{community_level.label()}代码 {community}",
                f"grid code {code} must start with {community_level.label_en().lower()} code {community}",
            )
        if len(code) != grid_level.digits:
            return (
                "code_format",
                field,
                f"网格编码应为 {grid_level.digits} 位（{n}位{community_level.label()}代码+{width}位序号）",
                f"grid code must have {grid_level.digits} digits ({n}-digit community code + {width}-digit sequence)",
            )
        return None

    return rule
