"""一户一区: each household's courtyard responsibility zone in front of / behind its house."""

from __future__ import annotations

from typing import Any

from layers.base import EveryTargetHasOne, Field, Layer, Near, NoOverlap, Style, Within, register
from layers.common import ASSET_CODE, IN_COMMUNITY, IN_GRID, community_field, grid_code_rules, grid_field

SCOPES = ("房前", "屋后", "两侧", "房前屋后")


def _zone_code(props: dict[str, Any]) -> tuple[str, str, str, str] | None:
    code, grid = props.get("code"), props.get("grid_code")
    if code and grid and (not code.startswith(grid) or len(code) != len(grid) + 3):
        return (
            "code_inconsistent",
            "code",
            f"责任区编码应为网格编码 {grid} 加3位序号",
            f"zone code must be grid code {grid} + a 3-digit sequence",
        )
    return None


ZONES = register(
    Layer(
        id="zones",
        zh="一户一区",
        en="Courtyard zones",
        description_zh="庭院责任区：每户负责房前屋后的区域，应位于一个网格内并紧邻本户宅基地",
        fields=[
            Field(
                "code",
                "责任区编码",
                "Zone code",
                "code",
                required=True,
                pattern="^[0-9]{17,19}$",
                pattern_zh="网格编码+3位序号",
                max_length=19,
            ),
            Field(
                "household_head",
                "户主",
                "Household head",
                required=True,
                max_length=40,
                personal=True,
                aliases=("户主姓名", "户主名"),
            ),
            Field("house_number", "门牌号", "House number", max_length=60, searched=True),
            Field(
                "homestead_parcel_code",
                "宅基地地块编码",
                "Homestead parcel",
                "code",
                pattern=ASSET_CODE,
                max_length=19,
                index=True,
            ),
            Field("scope", "责任范围", "Scope", "enum", required=True, choices=SCOPES, filter=True, count=True),
            Field("duties", "责任内容", "Duties", max_length=200),
            Field("rating", "星级", "Rating", "int", minimum=0, maximum=5),
            grid_field(required=True),
            community_field(),
        ],
        key=("code",),
        partitioned=True,  # one table per county (layers.partitions)
        accepts=("Polygon", "MultiPolygon"),
        stored=("MultiPolygon",),
        style=Style(
            by="scope",
            colors={"房前": "#f472b6", "屋后": "#fb923c", "两侧": "#67e8f9", "房前屋后": "#facc15"},
            fill_opacity=0.55,
            weight=0.5,
            min_zoom=15,
            tiled=True,
            printed=False,  # a household's strip is too fine for a street's wall map: printed when asked
        ),
        locators=(IN_COMMUNITY, IN_GRID),
        cross_rules=(_zone_code, grid_code_rules("grid_code")),
        rules=(  # 一户一区
            NoOverlap(),
            Within("grids", "grid_code", own_only=True),
            Near("parcels", "homestead_parcel_code", within_m=2.0),
            EveryTargetHasOne("parcels", "homestead_parcel_code", where=(("land_use_code", "0702"),)),
        ),
        counter_zh="户",
        order=40,
        editors=("planner", "surveyor", "grid_manager"),
    )
)
