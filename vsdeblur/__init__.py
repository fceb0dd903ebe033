"""vsdeblur: video motion deblurring with the dual-stage network of Brehm, Scherer & Lienhart
(CVPRW 2020), as a library, a streaming CLI, a VapourSynth filter and batch pipelines."""

from __future__ import annotations

__version__ = "0.1.0"

from vsdeblur.engine import Deblurrer, EngineStats
from vsdeblur.errors import UsageError, WeightsError
from vsdeblur.models import PRESETS, build_model

__all__ = ["Deblurrer", "EngineStats", "PRESETS", "UsageError", "WeightsError", "atrous", "build_model", "__version__"]


def __getattr__(name: str):
    # vsdeblur.atrous, the VapourSynth filter, imports vapoursynth only when asked for
    if name == "atrous":
        from vsdeblur.vs import atrous

        return atrous
    raise AttributeError(f"module 'vsdeblur' has no attribute {name!r}")
