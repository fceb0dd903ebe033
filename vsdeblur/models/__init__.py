"""The two networks and their presets.

The presets are data and load without torch (batch planning reads them from a weights file's
header); the networks, `build_model` and `fold_scales` load torch when first used."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from vsdeblur.errors import UsageError
from vsdeblur.models.presets import DEFAULT_PRESET, PRESETS, Preset, get_preset

if TYPE_CHECKING:
    from torch import nn

    from vsdeblur.models.layers import fold_scales
    from vsdeblur.models.stage1 import AtrousNet
    from vsdeblur.models.stage2 import MLFA

__all__ = ["AtrousNet", "MLFA", "PRESETS", "DEFAULT_PRESET", "Preset", "build_model", "fold_scales", "get_preset"]

# name -> the module that defines it, imported when the name is first asked for
_LAZY = {"AtrousNet": "vsdeblur.models.stage1", "MLFA": "vsdeblur.models.stage2", "fold_scales": "vsdeblur.models.layers"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vsdeblur.models' has no attribute {name!r}")


def build_model(preset: str | Preset, stage: int) -> nn.Module:
    """The untrained network of `stage` (1: AtrousNet, 2: MLFA) for a preset name or Preset."""
    from vsdeblur.models.stage1 import AtrousNet
    from vsdeblur.models.stage2 import MLFA

    cfg = preset if isinstance(preset, Preset) else get_preset(preset)
    if stage == 1:
        return AtrousNet(cfg.stage1)
    if stage == 2:
        return MLFA(cfg.stage2)
    raise UsageError(f"stage must be 1 or 2, not {stage!r}")
