"""地块: land parcels with their ledger (台账): land use, ownership, use and revitalisation."""

from __future__ import annotations

from typing import Any

from layers.base import Count, Field, Layer, NoOverlap, Style, Within, register
from layers.common import (
    ASSET_CODE,
    IDLE,
    IDLE_COLOR,
    IN_COMMUNITY,
    IN_GRID,
    campaign_field,
    community_field,
    grid_code_rules,
    grid_field,
)
from layers.landuse import land_use_classes, land_use_codes, land_use_names

OWNERSHIP = ("集体", "国有", "争议")
USE_STATUS = ("自用", "出租", "出借", "承包", "入股", IDLE, "在建", "待处置", "已处置")
REVITALISED = "已盘活"
STAGES = ("未盘活", "招商中", "已签约", REVITALISED)
MODES = ("出租", "入股", "合作经营", "自营", "调整用途", "拆除复垦")
LET = ("出租", "承包", "入股", "出借")
"""Use statuses under which someone else uses the parcel: each needs a lease contract."""
SANDIAO_OWNERSHIP = (
    ("10", "国有"),  # 国有土地所有权
    ("20", "国有"),  # 国有土地使用权
    ("30", "集体"),  # 集体土地所有权
    ("31", "集体"),  # 村民小组
    ("32", "集体"),  # 村集体经济组织
    ("33", "集体"),  # 乡镇农民集体经济组织
    ("34", "集体"),  # 其他农民集体经济组织
    ("40", "集体"),  # 集体土地使用权
    ("国有土地所有权", "国有"),
    ("国有土地使用权", "国有"),
    ("集体土地所有权", "集体"),
    ("集体土地使用权", "集体"),
)
"""三调 权属性质 (QSXZ) codes and words, read as this ledger's ownership (TD/T 1055-2019 code list)."""


def _known_land_use(props: dict[str, Any]) -> tuple[str, str, str, str] | None:
    code = props.get("land_use_code")
    if code and code not in land_use_codes():
        return (
            "unknown_land_use_code",
            "land_use_code",
            f"地类编码 {code} 不在 GB/T 21010-2017 或三调工作分类中",
            f"land-use code {code} is in neither GB/T 21010-2017 nor the 三调 working classification",
        )
    return None


PARCELS = register(
    Layer(
        id="parcels",
        zh="地块",
        en="Land parcels",
        description_zh="集体资源地块台账：地类、权属、利用现状与盘活进度",
        fields=[
            Field(
                "code",
                "地块编码",
                "Parcel code",
                "code",
                required=True,
                pattern=ASSET_CODE,
                pattern_zh="19位宗地代码或资产编码",
                max_length=19,
                aliases=("DKBM", "地块代码", "parcel_code"),  # 三调 地块编码
            ),
            Field("name", "名称", "Name", max_length=100, searched=True, aliases=("DKMC", "地块名称")),
            Field(
                "land_use_code",
                "地类编码",
                "Land-use code",
                "code",
                required=True,
                pattern="^[0-9]{2}[0-9A-Z]{0,3}$",
                max_length=5,
                known=lambda: land_use_codes().keys(),
                labels=land_use_names,
                classes=land_use_classes,
                filter=True,
                count=True,
                param="land_use",
                filter_zh="地类",
                aliases=("DLBM", "地类代码", "landuse", "land_use"),  # 三调 地类编码
            ),
            Field(
                "ownership",
                "权属",
                "Ownership",
                "enum",
                required=True,
                choices=OWNERSHIP,
                filter=True,
                count=True,
                aliases=("QSXZ", "权属性质"),  # 三调 权属性质, coded: read as 国有/集体
                translate=SANDIAO_OWNERSHIP,
            ),
            Field(
                "use_status",
                "利用现状",
                "Use status",
                "enum",
                required=True,
                choices=USE_STATUS,
                filter=True,
                count=True,
            ),
            Field("stage", "盘活进度", "Revitalisation stage", "enum", choices=STAGES, filter=True, count=True),
            Field("mode", "盘活方式", "Revitalisation mode", "enum", choices=MODES, filter=True),
            Field("idle_since", "闲置起始", "Idle since", "date", filter=True, filter_zh="闲置"),
            Field("idle_reason", "闲置原因", "Idle reason", max_length=200),
            Field("owner", "权利人", "Owner", max_length=100, aliases=("QSDWMC", "权属单位名称", "权属单位")),
            Field(
                "address",
                "坐落",
                "Location",
                max_length=200,
                searched=True,
                aliases=("ZLDWMC", "坐落单位名称", "address"),
            ),
            campaign_field(),
            community_field(),
            grid_field(),
        ],
        key=("code",),
        partitioned=True,  # one table per county (layers.partitions)
        accepts=("Polygon", "MultiPolygon"),
        stored=("MultiPolygon",),
        style=Style(
            emphasis=IDLE,
            by="use_status",
            colors={
                IDLE: IDLE_COLOR,
                "自用": "#16a34a",
                "出租": "#2563eb",
                "承包": "#84cc16",
                "入股": "#0891b2",
                "出借": "#a855f7",
                "在建": "#f59e0b",
                "待处置": "#f97316",
                "已处置": "#9ca3af",
            },
            fill_opacity=0.45,
            weight=0.6,
            min_zoom=14,
            tiled=True,
            numbered=True,
        ),
        locators=(IN_COMMUNITY, IN_GRID),
        cross_rules=(_known_land_use, grid_code_rules("grid_code")),
        rules=(Within("grids", "grid_code"), NoOverlap()),
        counts=(
            Count("idle", "闲置", "idle", "use_status", (IDLE,), rate=True),
            Count("revitalised", "已盘活", "revitalised", "stage", (REVITALISED,), result=True),
        ),
        campaign="campaign_stage",
        example={
            "code": "370214001009JC00012",
            "name": "南疃社区空闲地",
            "land_use_code": "1201",
            "ownership": "集体",
            "use_status": "闲置",
            "stage": "招商中",
            "mode": "出租",
            "idle_since": "2021-03-01",
            "idle_reason": "原村办企业停产",
            "owner": "南疃社区股份经济合作社",
            "address": "城阳区城阳街道南疃社区第1网格",
            "campaign_stage": "清理回收",
            "community_code": "370214001009",
            "grid_code": "370214001009001",
        },
        name_field="name",
        counter_zh="块",
        order=30,
        filtered=True,
        let=(("use_status", LET),),
    )
)
