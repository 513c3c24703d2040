"""水井 (wells): a layer declared only here, for tests/test_new_layer.py (importing this module registers it)."""

from __future__ import annotations

from layers.base import Field, Layer, Style, Within, register
from layers.common import IN_COMMUNITY, IN_GRID, community_field, grid_field

LAYER = "test_wells"

WELLS = register(
    Layer(
        id=LAYER,
        zh="水井",
        en="Wells",
        fields=[
            Field("code", "水井编号", "Well code", "code", required=True, pattern="^W[0-9]{4}$", max_length=5),
            Field("name", "名称", "Name", required=True, max_length=40),
            Field("condition", "状况", "Condition", "enum", required=True, choices=("可用", "干涸", "封填")),
            Field("depth_m", "井深(m)", "Depth m", "float", minimum=0, maximum=500),
            Field("keeper", "管护人", "Keeper", max_length=20, personal=True),
            community_field(),
            grid_field(),
        ],
        key=("code",),
        accepts=("Point",),
        stored=("Point",),
        style=Style(by="condition", colors={"可用": "#0ea5e9", "干涸": "#b45309", "封填": "#52525b"}, min_zoom=13),
        has_area=False,
        locators=(IN_COMMUNITY, IN_GRID),
        rules=(Within("grids", "grid_code"),),
        order=60,
    )
)
