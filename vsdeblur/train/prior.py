"""Training samples for a stage 1 that reads the motion prior: the prior is made as the engine
makes it (engine.prior_inputs.prior_planes: the engine's own motion estimator on the blurred
frames, never the camera's true path), from three frames filmed at a larger side than the
crop, so that the motion is measured over a view as wide as a video frame gives it; then the
centre frame, its sharp reference and its planes are cropped at one place.

Some samples are given no neighbours (`blind_probability`): single pictures and frames between
cuts reach the engine that way, and stage 1 must keep working on them. The shutter is the one
the camera filmed with for `true_shutter_probability` of the filmed samples (a user who sets
`shutter`), else the engine's `auto` estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vsdeblur.engine.prior_inputs import prior_planes
from vsdeblur.engine.window import luma
from vsdeblur.train.data import Sample

FRAMES = 3  # the previous frame, the frame, the next frame


@dataclass(frozen=True)
class PriorRecipe:
    view: int  # side at which samples are filmed and their motion measured, pixels
    blind_probability: float  # share of samples given no neighbours
    true_shutter_probability: float  # share of filmed samples given their true shutter instead of auto


def prior_crop(sample: Sample, rng: np.random.Generator, recipe: PriorRecipe, crop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(blurred, sharp, planes) of a 3-frame sample's centre frame, cropped to crop x crop at
    one random place: blurred and sharp crop x crop x 3 in [0, 1], planes
    len(PRIOR_CHANNELS) x crop x crop."""
    blurred, sharp = sample.blurred, sample.sharp
    if len(blurred) != FRAMES:
        raise ValueError(f"a prior sample holds {FRAMES} frames, not {len(blurred)}")
    lumas = [torch.from_numpy(luma(np.ascontiguousarray(f.transpose(2, 0, 1)))) for f in blurred]
    if rng.random() < recipe.blind_probability:
        lumas[0] = lumas[2] = None
    true_shutter = sample.shutter is not None and rng.random() < recipe.true_shutter_probability
    shutter = sample.shutter if true_shutter else "auto"
    frame = torch.from_numpy(np.ascontiguousarray(blurred[1].transpose(2, 0, 1)))
    planes = prior_planes(frame, lumas, shutter).numpy()
    side = blurred.shape[1]
    y, x = (int(v) for v in rng.integers(0, side - crop + 1, size=2))
    window = (slice(y, y + crop), slice(x, x + crop))
    return blurred[1][window], sharp[1][window], planes[(slice(None), *window)]
