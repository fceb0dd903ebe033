"""`vsdeblur benchmark`'s motion table, and its rows for the deconvolution prior (vsdeblur.prior)
alone: the floor, without training, that a trained model must beat.

Every clip of the set was filmed along a known camera path (quality.filmed_path), so each
frame's true exposure chords are known too (vsdeblur.blur.truth). Each frame's motion is
estimated from its blurred neighbours' luma as the engine estimates it (engine.prior_inputs:
motion_of; from the one neighbour it has at the clip's ends), and

- the motion table compares the blur it predicts at the clip's true shutter (displacement x
  shutter / 2) with the true chords at the estimator's tile centres, on tiles of confidence
  >= CONFIDENT: the length error in % of the true length and the axis error in degrees
  (vsdeblur.metrics); and the length error at the shutter that the `auto` setting judges for
  each frame (frame_shutters, the engine's own rule). Only the coherent conditions are measured: under `shake` the blur
  is independent kernels that the camera path does not give (its 1/100 s exposures barely
  move), and `none` has no blur;
- two variants restore every clip of every condition with vsdeblur.prior.deblur: from the
  estimated chords at the `auto` shutter with the estimator's confidence (the prior a model
  that reads it is given by the engine's defaults: its own input), and from the true chords on
  the same grid with full confidence. They are written beside the stream's variants
  and scored with them. Under `shake` and `none` the path's chords are close to nothing, so
  both give the input back nearly unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vsdeblur.blur import truth
from vsdeblur.blur.camera import CameraPath
from vsdeblur.measure import quality
from vsdeblur.metrics import chord_axis_error, chord_length_error, to_uint8
from vsdeblur.engine.prior_inputs import Intervals, frame_shutter, motion_of
from vsdeblur.engine.window import luma
from vsdeblur.motion import Motion
from vsdeblur.prior import deblur

CONFIDENT = 0.5  # the tiles the motion table counts (pipelines/motion/measure.py reports on the same)
PRIOR_ESTIMATED = "prior (estimated motion)"
PRIOR_TRUE = "prior (true path)"
PRIOR_VARIANTS = (PRIOR_ESTIMATED, PRIOR_TRUE)


def frame_shutters(frames: list[torch.Tensor], motions: list[Motion]) -> list[float]:
    """Each frame's shutter as the engine's `auto` judges it (its own blur along its motion)."""
    return [frame_shutter(frame, motion, "auto") for frame, motion in zip(frames, motions, strict=True)]


def clip_motions(blurred: list[np.ndarray]) -> list[Motion]:
    """Each frame's motion from its neighbours, as the engine measures it from 8-bit frames
    (each interval once); at the clip's ends from the one it has."""
    intervals = Intervals()
    prepared = [intervals.prepared(frame, lambda frame=frame: torch.from_numpy(luma(frame.transpose(2, 0, 1)))) for frame in blurred]
    last = len(prepared) - 1
    return [motion_of(prepared[t - 1] if t > 0 else None, frame, prepared[t + 1] if t < last else None, intervals.pair)
            for t, frame in enumerate(prepared)]


@dataclass
class ChordErrors:
    """One condition's blur predicted from the motion against the true chords, pooled over its
    clips' frames: per confident tile, length errors (%) at the true and the auto shutter and
    axis errors (degrees)."""

    tiles: int = 0
    length: list[np.ndarray] = field(default_factory=list)
    axis: list[np.ndarray] = field(default_factory=list)
    auto_length: list[np.ndarray] = field(default_factory=list)

    def add(self, motion: Motion, chords: np.ndarray, shutter: float, auto: float) -> None:
        """One frame's tiles: its motion, the true chords at its tile centres, the clip's true
        shutter and the frame's auto shutter."""
        keep = (motion.confidence >= CONFIDENT).numpy()
        self.tiles += keep.size
        displacement, chords = motion.displacement.double().numpy()[keep], chords[keep]
        self.length.append(chord_length_error(displacement * shutter / 2, chords))
        self.axis.append(chord_axis_error(displacement, chords))
        self.auto_length.append(chord_length_error(displacement * auto / 2, chords))


@dataclass
class MotionRow:
    """One condition's line of the motion table: (median, 80th percentile) of each error over
    the confident tiles, None where there is none."""

    condition: str
    clips: int
    frames: int
    confident: float  # share of the tiles
    length: tuple[float, float] | None  # % of the true length, at the clip's true shutter
    axis: tuple[float, float] | None  # degrees
    auto_length: tuple[float, float] | None  # %, at each frame's auto shutter

    @classmethod
    def of(cls, condition: str, clips: int, frames: int, errors: ChordErrors) -> MotionRow:
        confident = sum(len(e) for e in errors.length)
        return cls(condition, clips, frames, confident / max(errors.tiles, 1), _quantiles(errors.length), _quantiles(errors.axis),
                   _quantiles(errors.auto_length))


def _quantiles(errors: list[np.ndarray]) -> tuple[float, float] | None:
    values = np.concatenate(errors) if errors else np.zeros(0)
    return (float(np.median(values)), float(np.quantile(values, 0.8))) if len(values) else None


def prior_restorations(frame: torch.Tensor, motion: Motion, shutter: float, path: CameraPath, index: int) -> dict[str, torch.Tensor]:
    """Frame `index` of a clip (3 x H x W in [0, 1]) restored by the prior, per variant: from its
    estimated motion at its auto `shutter`, and from the path's true chords on the same grid."""
    grid = tuple(motion.displacement.shape[:2])
    chords = truth.exposure_chords(path, index, truth.cell_centres(tuple(frame.shape[-2:]), grid))
    return {PRIOR_ESTIMATED: deblur(frame, motion.chord(shutter), motion.confidence),
            PRIOR_TRUE: deblur(frame, torch.from_numpy(chords).float())}


def measure_clip(setup: quality.Setup, photo_index: int, photo: Path, condition: quality.Condition,
                 errors: ChordErrors | None) -> None:
    """Restore one clip of the set with the prior (both variants, written where the benchmark
    scores variants) and, given `errors`, add its frames' motion errors to them."""
    path = quality.filmed_path(photo_index, condition, setup.frames)
    _, blurred = quality.clip_pair(setup, condition, photo)
    frames = [torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in blurred]
    motions = clip_motions(blurred)
    shutters = frame_shutters(frames, motions)
    restored: dict[str, list[np.ndarray]] = {variant: [] for variant in PRIOR_VARIANTS}
    for index, (frame, motion, shutter) in enumerate(zip(frames, motions, shutters, strict=True)):
        for variant, picture in prior_restorations(frame, motion, shutter, path, index).items():
            restored[variant].append(to_uint8(picture.permute(1, 2, 0).numpy()))
    for variant, pictures in restored.items():
        quality.write_lossless(quality.restored_path(setup, variant, condition, photo), np.stack(pictures))
    if errors is not None:
        size = tuple(frames[0].shape[-2:])
        for index, (motion, shutter) in enumerate(zip(motions, shutters, strict=True)):
            chords = truth.exposure_chords(path, index, truth.view_positions(motion.centres.double().numpy(), size))
            errors.add(motion, chords, path.shutter, shutter)


def run(setup: quality.Setup, photos: list[Path], log=print) -> list[MotionRow]:
    """Restore the whole set with the prior's variants; the motion table's rows, one per
    coherent condition."""
    rows = []
    for condition in quality.CONDITIONS:
        errors = ChordErrors() if condition.name in quality.COHERENT else None
        log(f"prior and motion: {condition.name}")
        for index, photo in enumerate(photos):
            measure_clip(setup, index, photo, condition, errors)
        if errors is not None:
            rows.append(MotionRow.of(condition.name, len(photos), setup.frames, errors))
    return rows


def motion_table(rows: list[MotionRow]) -> str:
    """One line per coherent condition: median / 80th percentile of each error."""
    def cell(value: tuple[float, float] | None, unit: str) -> str:
        return "n/a" if value is None else f"{value[0]:.3g} / {value[1]:.3g}{unit}"

    lines = [f"{'motion':<10} {'clips x frames':>14}  {'confident':>9}  {'length error':<16}  {'axis error':<16}  {'length, auto shutter':<20}"]
    for row in rows:
        lines.append(f"{row.condition:<10} {f'{row.clips} x {row.frames}':>14}  {100 * row.confident:>8.0f}%  {cell(row.length, ' %'):<16}"
                     f"  {cell(row.axis, ' deg'):<16}  {cell(row.auto_length, ' %'):<20}")
    lines += ["Blur predicted from the neighbours (displacement x the clip's true shutter / 2) against the camera path's exposure chords,",
              f"on tiles of confidence >= {CONFIDENT:g}: median / 80th percentile of the length error (% of the true length) and of the",
              "axis error (degrees, modulo 180); auto shutter: the length error at each frame's shutter as `shutter auto` judges it.",
              "Not measured: shake (independent kernels, not the camera path's) and none."]
    return "\n".join(lines)
