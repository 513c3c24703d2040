"""The domain: one module per layer, each declared once (see layers.base)."""

from layers import divisions, generations, grids, parcels, shops, uploads, zones  # noqa: F401 - registers the layers
from layers.base import REGISTRY, Layer
from layers.landuse import LandUseCode

__all__ = ["REGISTRY", "LandUseCode", "Layer"]
