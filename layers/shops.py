"""闲置商铺: ground-floor shops, idle or let, as a point or a footprint."""

from __future__ import annotations

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

OWNERSHIP = ("集体", "国有", "个人", "企业", "不明")
STATUS = (IDLE, "在营", "装修")
SIGNED = "已签约"
LETTING = ("未招租", "招租中", SIGNED, "不招租")

SHOPS = register(
    Layer(
        id="shops",
        zh="商铺",
        en="Shops",
        description_zh="沿街商铺台账，闲置商铺突出显示；权属不明是一种正式状态",
        fields=[
            Field(
                "code",
                "商铺编号",
                "Shop code",
                "code",
                required=True,
                pattern=ASSET_CODE,
                pattern_zh="19位资产编码",
                max_length=19,
                aliases=("商铺编码", "商铺代码", "shop_code"),
            ),
            Field("name", "名称", "Name", required=True, max_length=100, searched=True, aliases=("商铺名称", "店名")),
            Field("address", "地址", "Address", max_length=200, searched=True, aliases=("门牌地址", "坐落")),
            Field("street_segment", "路段", "Street segment", max_length=100, searched=True),
            Field("floor", "楼层", "Floor", "int", minimum=-5, maximum=200),
            Field("floor_area", "建筑面积(m²)", "Floor area m²", "float", minimum=0, maximum=1e6),
            Field("usable_area", "使用面积(m²)", "Usable area m²", "float", minimum=0, maximum=1e6),
            Field("ownership", "权属", "Ownership", "enum", required=True, choices=OWNERSHIP, filter=True, count=True),
            Field("owner", "产权人", "Owner", max_length=100),
            Field("status", "状态", "Status", "enum", required=True, choices=STATUS, filter=True, count=True),
            Field("idle_since", "闲置起始", "Idle since", "date", filter=True, filter_zh="闲置"),
            Field("former_business", "原业态", "Former business", max_length=100),
            Field("intended_business", "拟引入业态", "Intended business", max_length=100),
            Field("asking_rent", "意向租金(元/月)", "Asking rent CNY/month", "float", minimum=0, maximum=1e9),
            Field("letting_status", "招租状态", "Letting status", "enum", choices=LETTING, filter=True, count=True),
            campaign_field(),
            community_field(),
            grid_field(),
        ],
        key=("code",),
        partitioned=True,  # one table per county (layers.partitions)
        accepts=("Point", "Polygon", "MultiPolygon"),
        stored=("Point", "MultiPolygon"),
        style=Style(
            emphasis=IDLE,
            by="status",
            colors={IDLE: "#be185d", "在营": "#0369a1", "装修": "#854d0e"},  # no parcel colour: printed together
            fill_opacity=0.85,
            weight=1.0,
            radius=6,
            min_zoom=13,
        ),
        has_area=False,
        locators=(IN_COMMUNITY, IN_GRID),
        cross_rules=(grid_code_rules("grid_code"),),
        rules=(Within("grids", "grid_code"),),
        counts=(
            Count("idle", "闲置", "idle", "status", (IDLE,), rate=True),
            Count("signed", "已签约", "signed", "letting_status", (SIGNED,), result=True),
        ),
        campaign="campaign_stage",
        example={
            "code": "3702140010092100003",
            "name": "南疃路18号 闲置商铺",
            "address": "城阳区南疃路18号",
            "street_segment": "南疃路",
            "floor": 1,
            "floor_area": 86.5,
            "usable_area": 72.0,
            "ownership": "集体",
            "owner": "南疃社区股份经济合作社",
            "status": "闲置",
            "idle_since": "2023-06-01",
            "former_business": "便利店",
            "intended_business": "社区食堂",
            "asking_rent": 3500.0,
            "letting_status": "招租中",
            "campaign_stage": "排查摸底",
            "community_code": "370214001009",
            "grid_code": "370214001009001",
        },
        name_field="name",
        counter_zh="间",
        order=50,
        # Let out: trading under a signed letting. A shop trading without one is its owner's own
        # business (a private or company shop), not an asset the collective lets.
        let=(("status", "在营"), ("letting_status", SIGNED)),
    )
)
