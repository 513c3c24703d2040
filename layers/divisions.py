"""行政区划: street (9-digit) and community/village (12-digit) boundaries."""

from __future__ import annotations

from typing import Any

from layers.base import Coverage, Field, Layer, Style, register

LEVELS = ("区县", "街道", "社区")


def _level_matches_code(props: dict[str, Any]) -> tuple[str, str, str, str] | None:
    code, level, parent = props.get("code") or "", props.get("level"), props.get("parent_code")
    want = {"区县": 6, "街道": 9, "社区": 12}.get(level or "")
    if want and len(code) != want:
        return ("code_inconsistent", "code", f"{level}代码应为 {want} 位", f"a {level} code has {want} digits")
    expected = code[:4] + "00" if len(code) == 6 else code[:-3]  # a county's parent is its city (GB/T 2260)
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
                pattern="^([0-9]{6}|[0-9]{9}|[0-9]{12})$",
                pattern_zh="6位区县、9位街道或12位社区/村代码",
                max_length=12,
            ),
            Field("name", "名称", "Name", required=True, max_length=60),
            Field("level", "级别", "Level", "enum", required=True, choices=LEVELS),
            Field(
                "parent_code",
                "上级代码",
                "Parent code",
                "code",
                pattern="^([0-9]{6}|[0-9]{9})$",
                max_length=9,
                index=True,
            ),
        ],
        key=("code",),
        accepts=("Polygon", "MultiPolygon"),
        stored=("MultiPolygon",),
        style=Style(
            by="level",
            colors={"区县": "#7f1d1d", "街道": "#111827", "社区": "#1e3a8a"},
            fill_opacity=0.0,
            weight=2.5,
            fill=False,
        ),
        cross_rules=(_level_matches_code,),
        rules=(  # streets tile their county, communities their street
            Coverage("divisions", "parent_code", parent_where=(("level", "区县"),), child_where=(("level", "街道"),)),
            Coverage("divisions", "parent_code", parent_where=(("level", "街道"),), child_where=(("level", "社区"),)),
        ),
        order=10,
    )
)
