"""vsdeblur: video motion deblurring with the dual-stage network of Brehm, Scherer & Lienhart
(CVPRW 2020), as a library, a streaming CLI, a VapourSynth filter and batch pipelines.

Importing the package loads neither torch nor vapoursynth: the names that need them are
imported when first asked for, so that the option schema and --help stay fast."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from vsdeblur.errors import UsageError, WeightsError

__version__ = "0.1.0"

if TYPE_CHECKING:
    from vsdeblur.engine import Deblurrer, EngineStats
    from vsdeblur.models import PRESETS, build_model
    from vsdeblur.vs import atrous

# name -> the module that defines it
_LAZY = {
    "Deblurrer": "vsdeblur.engine",
    "EngineStats": "vsdeblur.engine",
    "PRESETS": "vsdeblur.models",
    "build_model": "vsdeblur.models",
    "atrous": "vsdeblur.vs",
}

__all__ = ["Deblurrer", "EngineStats", "PRESETS", "UsageError", "WeightsError", "atrous", "build_model", "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vsdeblur' has no attribute {name!r}")
