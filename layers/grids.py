"""网格: management grids, each inside one community, with a grid manager."""

from __future__ import annotations

from typing import Any

from layers.base import Coverage, Field, Layer, Style, Units, register
from layers.common import GRID_CODE, IN_COMMUNITY, community_field, grid_code_rules

KINDS = ("基础网格", "专属网格", "单元网格")


def _dates(props: dict[str, Any]) -> tuple[str, str, str, str] | None:
    start, end = props.get("valid_from"), props.get("valid_to")
    if start and end and end <= start:
        return ("date_order", "valid_to", "失效日期应晚于生效日期", "valid_to must be after valid_from")
    return None


GRIDS = register(
    Layer(
        id="grids",
        zh="网格",
        en="Grids",
        description_zh="网格化服务管理网格：每个网格属于一个社区/村，由网格员负责",
        fields=[
            Field(
                "code",
                "网格编码",
                "Grid code",
                "code",
                required=True,
                pattern=GRID_CODE,
                pattern_zh="12位社区代码+网格序号",
                max_length=16,
                aliases=("WGBM", "网格代码", "网格编号", "grid_code"),
            ),
            Field(
                "name", "网格名称", "Grid name", required=True, max_length=60, searched=True, aliases=("WGMC", "网格名")
            ),
            Field("kind", "网格类型", "Kind", "enum", required=True, choices=KINDS, filter=True, count=True),
            community_field(required=True),
            Field("manager", "网格员", "Grid manager", max_length=40, aliases=("网格员姓名", "网格长")),
            Field(
                "manager_phone",
                "网格员电话",
                "Manager phone",
                max_length=20,
                pattern="^[0-9+ -]{5,20}$",
                personal=True,
                aliases=("网格员手机", "联系电话"),
            ),
            Field("households", "户数", "Households", "int", minimum=0, maximum=100_000),
            Field("valid_from", "生效日期", "Valid from", "date", required=True),
            Field("valid_to", "失效日期", "Valid to", "date", popup=False),
        ],
        key=("code",),
        accepts=("Polygon", "MultiPolygon"),
        stored=("MultiPolygon",),
        style=Style(
            by="kind",
            colors={"基础网格": "#0d9488", "专属网格": "#7c3aed", "单元网格": "#ca8a04"},
            fill_opacity=0.05,
            weight=1.5,
            dash="6 4",
            label=("name", "code"),
        ),
        locators=(IN_COMMUNITY,),
        cross_rules=(grid_code_rules("code"), _dates),
        history=True,  # boundaries change: every replaced version is kept, checks run as of a date
        rules=(Coverage("divisions", "community_code", parent_level="community", numbered=True),),  # 无缝拼接
        units=Units(("grid",), parent_field="community_code"),
        name_field="name",
        example={
            "code": "370214001009001",
            "name": "南疃社区第1网格",
            "kind": "基础网格",
            "community_code": "370214001009",
            "manager": "王网格",
            "households": 320,
            "valid_from": "2024-01-01",
        },
        order=20,
        editors=("planner",),
    )
)
