"""公共收益点位: public revenue points — parking spaces, advertising spots, public rooms, lift adverts, kiosks.

Each point is a source of collective income the campaign takes stock of: what it is, how
many (spaces, faces, rooms), who runs it, whether it earns (在营), waits for a tenant
(待招租) or lies idle (闲置), and its yearly income.
"""

from __future__ import annotations

from typing import Any

from layers.base import Count, Field, Layer, Style, Within, register
from layers.common import (
    ASSET_CODE,
    IDLE,
    IN_COMMUNITY,
    IN_GRID,
    campaign_field,
    community_field,
    grid_code_rules,
    grid_field,
)

KINDS = ("停车位", "广告位", "公共用房", "电梯广告", "售货亭", "充电桩")
STATUS = (IDLE, "待招租", "在营")


def _earning_needs_income(props: dict[str, Any]) -> tuple[str, str, str, str] | None:
    """An idle point earns nothing: a yearly income on an idle point is a ledger mistake."""
    if props.get("status") == IDLE and (props.get("annual_income") or 0) > 0:
        return (
            "income_inconsistent",
            "annual_income",
            "闲置点位不应有年收益，请核对状态或收益",
            "an idle point has no yearly income: check its status or its income",
        )
    return None


REVENUE_POINTS = register(
    Layer(
        id="revenue_points",
        zh="公共收益点位",
        en="Public revenue points",
        description_zh="停车位、广告位、公共用房、电梯广告、售货亭等公共收益点位台账",
        fields=[
            Field(
                "code",
                "点位编码",
                "Point code",
                "code",
                required=True,
                pattern=ASSET_CODE,
                pattern_zh="19位资产编码",
                max_length=19,
                aliases=("点位编号", "点位代码"),
            ),
            Field("name", "名称", "Name", required=True, max_length=100, searched=True, aliases=("点位名称",)),
            Field("kind", "类型", "Kind", "enum", required=True, choices=KINDS, filter=True, count=True),
            Field("quantity", "数量(个)", "Count", "int", minimum=0, maximum=100_000),
            Field("size_m2", "规模(m²)", "Size m²", "float", minimum=0, maximum=1e6),
            Field("operator", "经营单位", "Operator", max_length=100, searched=True),
            Field("status", "状态", "Status", "enum", required=True, choices=STATUS, filter=True, count=True),
            Field("annual_income", "年收益(元)", "Yearly income CNY", "float", minimum=0, maximum=1e10),
            Field("address", "位置", "Location", max_length=200, searched=True),
            campaign_field(),
            community_field(),
            grid_field(),
        ],
        key=("code",),
        partitioned=True,  # one table per county (layers.partitions)
        accepts=("Point",),
        stored=("Point",),
        style=Style(
            emphasis=IDLE,
            by="status",
            colors={IDLE: "#b91c1c", "待招租": "#a21caf", "在营": "#4d7c0f"},
            fill_opacity=0.9,
            weight=1.0,
            radius=5,
            min_zoom=13,
        ),
        has_area=False,
        locators=(IN_COMMUNITY, IN_GRID),
        cross_rules=(grid_code_rules("grid_code"), _earning_needs_income),
        rules=(Within("grids", "grid_code"),),
        counts=(
            Count("idle", "闲置", "idle", "status", (IDLE,), rate=True),
            Count("earning", "在营", "earning", "status", ("在营",), result=True),
        ),
        campaign="campaign_stage",
        name_field="name",
        counter_zh="处",
        order=55,
        let=(("status", "在营"),),  # earning: someone runs it under a contract
        example={
            "code": "3702140010092200001",
            "name": "南疃社区停车位01",
            "kind": "停车位",
            "quantity": 24,
            "operator": "某停车管理有限公司",
            "status": "在营",
            "annual_income": 28800.0,
            "address": "南疃路12号东侧",
            "campaign_stage": "盘活利用",
            "community_code": "370214001009",
            "grid_code": "370214001009001",
        },
    )
)
