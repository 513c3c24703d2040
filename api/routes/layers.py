"""Layer catalogue: what layers exist, their fields, counts and extents."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy.orm import Session

from api.auth import rule
from api.deps import LayerDep, SessionDep
from layers.base import REGISTRY, Layer
from layers.features import layer_summary

router = APIRouter(prefix="/api/layers", tags=["layers"])


def _describe(session: Session, layer: Layer) -> dict[str, Any]:
    return {
        **layer.describe(),
        **layer_summary(session, layer),
        "links": [
            {"rel": "items", "href": f"/api/layers/{layer.id}/features", "type": "application/geo+json"},
        ],
    }


@router.get("", summary="图层列表 List layers", **rule("user"))
def list_layers(session: SessionDep) -> list[dict[str, Any]]:
    """Return every layer with its geometry type, feature count and extent."""
    return [_describe(session, layer) for layer in sorted(REGISTRY.values(), key=lambda x: x.order)]


@router.get("/{layer_id}", summary="图层信息 Describe a layer", **rule("user"))
def get_layer(layer: LayerDep, session: SessionDep) -> dict[str, Any]:
    """Return one layer's description, count and extent."""
    return _describe(session, layer)
