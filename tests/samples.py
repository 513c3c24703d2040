"""Small valid features of every layer, nested street > community > grid > parcel/zone/shop."""

from __future__ import annotations

import copy
import json
from typing import Any

from shapely.geometry import box, mapping

X0, Y0 = 120.396, 36.307
STREET, COMMUNITY = "370214001", "370214001009"
GRID = COMMUNITY + "001"
D = 0.01  # ~0.9 km in longitude, ~1.1 km in latitude


def polygon(x0: float, y0: float, x1: float, y1: float) -> dict[str, Any]:
    """Return a GeoJSON polygon of the box."""
    geometry: dict[str, Any] = json.loads(json.dumps(mapping(box(x0, y0, x1, y1))))
    return geometry


def feature(geometry: dict[str, Any], **props: Any) -> dict[str, Any]:
    """Return a GeoJSON Feature."""
    return {"type": "Feature", "geometry": geometry, "properties": props}


SAMPLES: dict[str, dict[str, Any]] = {
    "divisions": feature(
        polygon(X0 - D, Y0 - D, X0 + D, Y0 + D), code=COMMUNITY, name="南疃社区", level="社区", parent_code=STREET
    ),
    "grids": feature(
        polygon(X0 - D / 2, Y0 - D / 2, X0 + D / 2, Y0 + D / 2),
        code=GRID,
        name="南疃社区第1网格",
        kind="基础网格",
        community_code=COMMUNITY,
        manager="王网格",
        households=120,
        valid_from="2024-01-01",
    ),
    "parcels": feature(
        polygon(X0, Y0, X0 + 0.001, Y0 + 0.0009),
        code=COMMUNITY + "0100001",
        name="南疃东地块",
        land_use_code="1201",
        ownership="集体",
        use_status="闲置",
        idle_since="2023-05-01",
        stage="招商中",
        community_code=COMMUNITY,
        grid_code=GRID,
    ),
    "shops": feature(
        {"type": "Point", "coordinates": [X0 + 0.0012, Y0 + 0.0003]},
        code=COMMUNITY + "2100001",
        name="南疃路12号商铺",
        ownership="不明",
        status="闲置",
        floor=1,
        floor_area=85.5,
        asking_rent=3200,
        community_code=COMMUNITY,
        grid_code=GRID,
    ),
    "zones": feature(
        polygon(X0 + 0.002, Y0, X0 + 0.00215, Y0 + 0.00004),
        code=GRID + "001",
        household_head="李明华",
        house_number="南疃社区3排5号",
        homestead_parcel_code=COMMUNITY + "0100001",
        scope="房前",
        grid_code=GRID,
        community_code=COMMUNITY,
    ),
}

EDITS: dict[str, tuple[str, Any]] = {
    "divisions": ("name", "南疃社区（调整）"),
    "grids": ("manager", "赵新"),
    "parcels": ("use_status", "出租"),
    "shops": ("status", "在营"),
    "zones": ("scope", "房前屋后"),
}


def _declared_sample(layer_id: str) -> dict[str, Any]:
    """Return a sample of a layer these samples do not know, from its declared example, in the sample grid."""
    from layers import REGISTRY

    layer = REGISTRY[layer_id]
    assert layer.example, f"layer {layer_id} declares no example"
    props = dict(layer.example)
    units = {"community": COMMUNITY, "grid": GRID}
    for loc in layer.locators:  # in the sample community and grid, whatever the example says
        if loc.level in units:
            props[loc.field] = units[loc.level]
    kind = layer.accepts[0]
    point = {"type": "Point", "coordinates": [X0 + 0.0016, Y0 + 0.0006]}
    geometry = point if kind == "Point" else polygon(X0 + 0.0030, Y0 + 0.0002, X0 + 0.0036, Y0 + 0.0007)
    return feature(geometry, **props)


def edit(layer_id: str) -> tuple[str, Any]:
    """Return a (field, new value) change of the sample of LAYER_ID (an enumeration's other value)."""
    if layer_id in EDITS:
        return EDITS[layer_id]
    from layers import REGISTRY

    layer = REGISTRY[layer_id]
    props = sample(layer_id)["properties"]
    f = next(f for f in layer.fields if f.kind == "enum" and len(f.choices) > 1)
    return f.name, next(c for c in f.choices if c != props.get(f.name))


def sample(layer_id: str) -> dict[str, Any]:
    """Return a fresh copy of the sample feature of LAYER_ID (a declared layer's example, for one not listed)."""
    if layer_id not in SAMPLES:
        return _declared_sample(layer_id)
    return copy.deepcopy(SAMPLES[layer_id])


def complete(feature: dict[str, Any], layer_id: str) -> dict[str, Any]:
    """Return FEATURE with every declared field present (None where not given): what a PUT must send."""
    from layers.base import REGISTRY

    props = feature.get("properties") or {}
    return {**feature, "properties": {name: props.get(name) for name in REGISTRY[layer_id].field_names}}
