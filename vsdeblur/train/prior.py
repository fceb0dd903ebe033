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

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vsdeblur.engine.networks import transform_prior
from vsdeblur.engine.prior_inputs import motion_of, prior_planes
from vsdeblur.engine.tiling import transform
from vsdeblur.engine.window import luma
from vsdeblur.errors import UsageError
from vsdeblur.motion import prepare
from vsdeblur.train.data import Sample

FRAMES = 3  # the previous frame, the frame, the next frame


@dataclass(frozen=True)
class PriorRecipe:
    view: int  # side at which samples are filmed and their motion measured, pixels
    blind_probability: float  # share of samples given no neighbours
    true_shutter_probability: float  # share of filmed samples given their true shutter instead of auto
    bank: Path | None = None  # draw crops of these samples, made once, instead of filming anew


def prior_crop(sample: Sample, rng: np.random.Generator, recipe: PriorRecipe, crop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(blurred, sharp, planes) of a 3-frame sample's centre frame, cropped to crop x crop at
    one random place: blurred and sharp crop x crop x 3 in [0, 1], planes
    len(PRIOR_CHANNELS) x crop x crop."""
    blurred, sharp = sample.blurred, sample.sharp
    if len(blurred) != FRAMES:
        raise ValueError(f"a prior sample holds {FRAMES} frames, not {len(blurred)}")
    frames = [prepare(luma(np.ascontiguousarray(f.transpose(2, 0, 1)))) for f in blurred]
    if rng.random() < recipe.blind_probability:
        frames[0] = frames[2] = None
    true_shutter = sample.shutter is not None and rng.random() < recipe.true_shutter_probability
    shutter = sample.shutter if true_shutter else "auto"
    frame = torch.from_numpy(np.ascontiguousarray(blurred[1].transpose(2, 0, 1)))
    planes = prior_planes(frame, motion_of(*frames), shutter).numpy()
    side = blurred.shape[1]
    y, x = (int(v) for v in rng.integers(0, side - crop + 1, size=2))
    window = (slice(y, y + crop), slice(x, x + crop))
    return blurred[1][window], sharp[1][window], planes[(slice(None), *window)]


# ---- a bank of samples -----------------------------------------------------------------------
# Filming three frames along a camera path and making their prior costs about a second a
# sample on one CPU core: far more than a training step of a small stage 1. A bank holds samples
# made once, at the full view; training crops them anew at every draw, at any place and in any
# of the eight flips and rotations, so one sample gives many different crops.

BANK_INDEX = "bank.json"


def bank_sample_path(folder: Path, index: int) -> Path:
    return folder / f"{index:06d}.npz"


def write_bank_sample(folder: Path, index: int, sample: Sample, rng: np.random.Generator, recipe: PriorRecipe) -> Path:
    """Make one sample's prior at the full view and write it (atomically: a bank filled by a
    stopped run holds only whole samples)."""
    blurred, sharp, planes = prior_crop(sample, rng, recipe, recipe.view)
    path = bank_sample_path(folder, index)
    part = path.with_name(path.stem + ".part.npz")
    np.savez(part, blurred=to_codes(blurred), sharp=to_codes(sharp), planes=planes.astype(np.float16))
    os.replace(part, path)
    return path


def to_codes(frame: np.ndarray) -> np.ndarray:
    """8-bit codes, as the engine receives frames from a decoder."""
    return np.clip(np.round(frame * 255), 0, 255).astype(np.uint8)


class Bank:
    """The samples of a bank folder, drawn as training crops."""

    def __init__(self, folder: Path) -> None:
        index = folder / BANK_INDEX
        if not index.is_file():
            raise UsageError(f"{folder} is not a prior bank (no {BANK_INDEX}; pipelines/train/prior_bank.py makes one)")
        self.folder, self.info = folder, json.loads(index.read_text(encoding="utf-8"))
        # the samples there now: a bank still being filled (by parts, out of order) has gaps
        self.paths = sorted(p for p in folder.glob("[0-9]*.npz") if not p.name.endswith(".part.npz"))
        if not self.paths:
            raise UsageError(f"the prior bank {folder} holds no samples yet")

    def crop(self, rng: np.random.Generator, crop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(blurred, sharp, planes) of one drawn sample, cropped at a drawn place and turned by a
        drawn flip and rotation (the blur planes turned with the picture), as prior_crop gives
        them: blurred and sharp crop x crop x 3 in [0, 1], planes len(PRIOR_CHANNELS) x crop x
        crop."""
        with np.load(self.paths[int(rng.integers(len(self.paths)))]) as stored:
            blurred, sharp, planes = stored["blurred"], stored["sharp"], stored["planes"]
        side = blurred.shape[0]
        if side < crop:
            raise UsageError(f"the prior bank {self.folder} holds {side}-pixel samples: too small for crops of {crop}")
        y, x = (int(v) for v in rng.integers(0, side - crop + 1, size=2))
        pictures = torch.from_numpy(np.stack([blurred, sharp])[:, y : y + crop, x : x + crop]).permute(0, 3, 1, 2).float() / 255
        field = torch.from_numpy(planes[:, y : y + crop, x : x + crop].astype(np.float32))[None]
        k, mirrored = int(rng.integers(4)), bool(rng.integers(2))
        pictures = transform(pictures, k, mirrored).permute(0, 2, 3, 1)
        field = transform_prior(field, k, mirrored)[0]
        return pictures[0].numpy(), pictures[1].numpy(), field.numpy()
