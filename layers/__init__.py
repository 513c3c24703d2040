"""The domain: one module per layer, each declared once (see layers.base).

A layer module is one that registers a layer at its top level (``NAME = register(Layer(…))``);
every such module in this package is imported here, so adding a layer is adding its module
(and its migration): nothing else names it.
"""

import importlib
import re
from pathlib import Path

from layers import accounts, changes, generations, preferences, problems, uploads  # noqa: F401 - register the accounts, change log, generation counter, preference, upload log and problem ledger models
from layers.base import REGISTRY, Layer
from layers.landuse import LandUseCode

_DECLARES = re.compile(r"^[A-Z_]+ = register\(", re.MULTILINE)


def _layer_modules() -> list[str]:
    """Return the names of the modules of this package that declare a layer, in name order."""
    here = Path(__file__).resolve().parent
    return sorted(p.stem for p in here.glob("*.py") if _DECLARES.search(p.read_text(encoding="utf-8")))


for _name in _layer_modules():
    importlib.import_module(f"layers.{_name}")

from layers import contracts  # noqa: E402, F401 - the lease contracts' models (they name the declared layers)

__all__ = ["REGISTRY", "LandUseCode", "Layer"]
