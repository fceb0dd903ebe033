"""The two networks and their presets."""

from __future__ import annotations

from torch import nn

from vsdeblur.errors import UsageError
from vsdeblur.models.layers import fold_scales
from vsdeblur.models.presets import DEFAULT_PRESET, PRESETS, Preset, get_preset
from vsdeblur.models.stage1 import AtrousNet
from vsdeblur.models.stage2 import MLFA

__all__ = ["AtrousNet", "MLFA", "PRESETS", "DEFAULT_PRESET", "Preset", "build_model", "fold_scales", "get_preset"]


def build_model(preset: str | Preset, stage: int) -> nn.Module:
    """The untrained network of `stage` (1: AtrousNet, 2: MLFA) for a preset name or Preset."""
    cfg = preset if isinstance(preset, Preset) else get_preset(preset)
    if stage == 1:
        return AtrousNet(cfg.stage1)
    if stage == 2:
        return MLFA(cfg.stage2)
    raise UsageError(f"stage must be 1 or 2, not {stage!r}")
