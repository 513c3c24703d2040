"""行政区划: street (9-digit) and community/village (12-digit) boundaries."""

from __future__ import annotations

from typing import Any

from layers import hierarchy
from layers.base import Coverage, Field, Layer, Style, Units, register
from layers.hierarchy import COMMUNITY_DIGITS, COUNTY_DIGITS, STREET_DIGITS, digits_pattern

HELD = ("county", "street", "community")
"""The hierarchy levels a division is (区县, 街道/乡镇, 社区/行政村)."""
LEVELS = hierarchy.all_names(HELD)


def _level_matches_code(props: dict[str, Any]) -> tuple[str, str, str, str] | None:
    code, level, parent = props.get("code") or "", props.get("level"), props.get("parent_code")
    held = hierarchy.level_named(level or "")
    if held is not None and len(code) != held.digits:
        want = held.digits
        return ("code_inconsistent", "code", f"{level}代码应为 {want} 位", f"a {level} code has {want} digits")
    expected = hierarchy.parent_of(code) if code else None  # a county's parent is its city (GB/T 2260)
    if parent and code and parent != expected:
        return (
            "code_inconsistent",
            "parent_code",
            f"上级代码应为 {expected}",
            f"parent code must be {expected}",
        )
    return None


DIVISIONS = register(
    Layer(
        id="divisions",
        zh="行政区划",
        en="Divisions",
        description_zh="区县（6位）、街道（9位）与社区/村（12位）边界，网格核查的框架",
        fields=[
            Field(
                "code",
                "区划代码",
                "Division code",
                "code",
                required=True,
                pattern=digits_pattern(COUNTY_DIGITS, STREET_DIGITS, COMMUNITY_DIGITS),
                pattern_zh="6位区县、9位街道或12位社区/村代码",
                max_length=12,
                aliases=("adcode", "XZQDM", "行政区代码", "行政区划代码", "区划编码", "统计用区划代码"),
            ),
            Field(
                "name",
                "名称",
                "Name",
                required=True,
                max_length=60,
                searched=True,
                aliases=("XZQMC", "行政区名称", "区划名称"),
            ),
            Field("level", "级别", "Level", "enum", required=True, choices=LEVELS, filter=True, count=True),
            Field(
                "parent_code",
                "上级代码",
                "Parent code",
                "code",
                pattern=digits_pattern(COUNTY_DIGITS, STREET_DIGITS),
                max_length=9,
                index=True,
                aliases=("parent_adcode", "上级区划代码", "上级编码"),
            ),
        ],
        key=("code",),
        accepts=("Polygon", "MultiPolygon"),
        stored=("MultiPolygon",),
        style=Style(
            by="level",
            colors={"区县": "#7f1d1d", "街道": "#111827", "乡镇": "#111827", "社区": "#1e3a8a", "行政村": "#1e3a8a"},
            fill_opacity=0.0,
            weight=2.5,
            fill=False,
        ),
        cross_rules=(_level_matches_code,),
        rules=(  # streets tile their county, communities their street
            Coverage("divisions", "parent_code", parent_level="county", child_level="street"),
            Coverage("divisions", "parent_code", parent_level="street", child_level="community"),
        ),
        units=Units(HELD, level_field="level", parent_field="parent_code"),
        name_field="name",
        example={"code": "370214001009", "name": "南疃社区", "level": "社区", "parent_code": "370214001"},
        order=10,
        editors=("planner",),
    )
)
