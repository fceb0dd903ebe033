"""`vsdeblur benchmark`'s motion table, and its rows for the deconvolution prior (vsdeblur.prior)
alone: the floor, without training, that a trained model must beat.

Every clip of the set was filmed along a known camera path (quality.filmed_path), so each
frame's true exposure chords are known too (vsdeblur.blur.truth). Each frame's motion is
estimated from its blurred neighbours' luma (vsdeblur.motion.estimate; from the one neighbour it
has at the clip's ends, as a deblurrer sees a clip), and

- the motion table compares the blur it predicts at the clip's true shutter (displacement x
  shutter / 2) with the true chords at the estimator's tile centres, on tiles of confidence
  >= CONFIDENT: the length error in % of the true length and the axis error in degrees
  (vsdeblur.metrics); and the length error at the shutter that the `auto` setting judges from
  the frames (auto_shutter). Only the coherent conditions are measured: under `shake` the blur
  is independent kernels that the camera path does not give (its 1/100 s exposures barely
  move), and `none` has no blur;
- two variants restore every clip of every condition with vsdeblur.prior.deblur: from the
  estimated chords (the clip's true shutter) with the estimator's confidence, and from the true
  chords on the same grid with full confidence. They are written beside the stream's variants
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
from vsdeblur.motion import Motion, estimate
from vsdeblur.prior import deblur

CONFIDENT = 0.5  # the tiles the motion table counts (pipelines/motion/measure.py reports on the same)
PRIOR_ESTIMATED = "prior (estimated motion)"
PRIOR_TRUE = "prior (true path)"
PRIOR_VARIANTS = (PRIOR_ESTIMATED, PRIOR_TRUE)
LUMA = torch.tensor([0.2126, 0.7152, 0.0722])  # BT.709


def to_luma(rgb: torch.Tensor) -> torch.Tensor:
    """8-bit luma of RGB code values (3 x H x W in [0, 1]), as a video stores it."""
    return (torch.einsum("c...,c->...", rgb, LUMA) * 255).round() / 255


def auto_shutter(lumas: list[torch.Tensor], motions: list[Motion]) -> float | None:
    """The clip's shutter (share of the frame interval) as the `auto` setting judges it from the
    blurred frames: vsdeblur.motion.shutter's pooled_shutter over each frame's
    shutter_evidence(luma, motion). That module is not in this branch yet: None, and the
    motion table's auto column reads n/a."""
    return None


def clip_motions(lumas: list[torch.Tensor]) -> list[Motion]:
    """Each frame's motion from its neighbours; at the clip's ends from the one it has."""
    return [estimate(lumas[t - 1] if t > 0 else None, luma, lumas[t + 1] if t + 1 < len(lumas) else None)
            for t, luma in enumerate(lumas)]


@dataclass
class ChordErrors:
    """One condition's blur predicted from the motion against the true chords, pooled over its
    clips' frames: per confident tile, length errors (%) at the true and the auto shutter and
    axis errors (degrees)."""

    tiles: int = 0
    length: list[np.ndarray] = field(default_factory=list)
    axis: list[np.ndarray] = field(default_factory=list)
    auto_length: list[np.ndarray] | None = field(default_factory=list)  # None: no auto shutter

    def add(self, motion: Motion, chords: np.ndarray, shutter: float, auto: float | None) -> None:
        """One frame's tiles: its motion and the true chords at its tile centres."""
        keep = (motion.confidence >= CONFIDENT).numpy()
        self.tiles += keep.size
        displacement, chords = motion.displacement.double().numpy()[keep], chords[keep]
        self.length.append(chord_length_error(displacement * shutter / 2, chords))
        self.axis.append(chord_axis_error(displacement, chords))
        if auto is None or self.auto_length is None:
            self.auto_length = None
        else:
            self.auto_length.append(chord_length_error(displacement * auto / 2, chords))


@dataclass
class MotionRow:
    """One condition's line of the motion table: (median, 80th percentile) of each error over
    the confident tiles, None where there is none (auto_length: no auto shutter yet)."""

    condition: str
    clips: int
    frames: int
    confident: float  # share of the tiles
    length: tuple[float, float] | None  # % of the true length, at the clip's true shutter
    axis: tuple[float, float] | None  # degrees
    auto_length: tuple[float, float] | None  # %, at the shutter auto_shutter judges

    @classmethod
    def of(cls, condition: str, clips: int, frames: int, errors: ChordErrors) -> MotionRow:
        confident = sum(len(e) for e in errors.length)
        return cls(condition, clips, frames, confident / max(errors.tiles, 1), _quantiles(errors.length), _quantiles(errors.axis),
                   None if errors.auto_length is None else _quantiles(errors.auto_length))


def _quantiles(errors: list[np.ndarray]) -> tuple[float, float] | None:
    values = np.concatenate(errors) if errors else np.zeros(0)
    return (float(np.median(values)), float(np.quantile(values, 0.8))) if len(values) else None


def prior_restorations(frame: torch.Tensor, motion: Motion, path: CameraPath, index: int) -> dict[str, torch.Tensor]:
    """Frame `index` of a clip (3 x H x W in [0, 1]) restored by the prior, per variant: from its
    estimated motion at the path's shutter, and from the path's true chords on the same grid."""
    grid = tuple(motion.displacement.shape[:2])
    chords = truth.exposure_chords(path, index, truth.cell_centres(tuple(frame.shape[-2:]), grid))
    return {PRIOR_ESTIMATED: deblur(frame, motion.chord(path.shutter), motion.confidence),
            PRIOR_TRUE: deblur(frame, torch.from_numpy(chords).float())}


def measure_clip(setup: quality.Setup, photo_index: int, photo: Path, condition: quality.Condition,
                 errors: ChordErrors | None) -> None:
    """Restore one clip of the set with the prior (both variants, written where the benchmark
    scores variants) and, given `errors`, add its frames' motion errors to them."""
    path = quality.filmed_path(photo_index, condition, setup.frames)
    _, blurred = quality.clip_pair(setup, condition, photo)
    frames = [torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in blurred]
    lumas = [to_luma(f) for f in frames]
    motions = clip_motions(lumas)
    restored: dict[str, list[np.ndarray]] = {variant: [] for variant in PRIOR_VARIANTS}
    for index, (frame, motion) in enumerate(zip(frames, motions, strict=True)):
        for variant, picture in prior_restorations(frame, motion, path, index).items():
            restored[variant].append(to_uint8(picture.permute(1, 2, 0).numpy()))
    for variant, pictures in restored.items():
        quality.write_lossless(quality.restored_path(setup, variant, condition, photo), np.stack(pictures))
    if errors is not None:
        auto = auto_shutter(lumas, motions)
        size = tuple(frames[0].shape[-2:])
        for index, motion in enumerate(motions):
            chords = truth.exposure_chords(path, index, truth.view_positions(motion.centres.double().numpy(), size))
            errors.add(motion, chords, path.shutter, auto)


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
              "axis error (degrees, modulo 180); auto shutter: the length error at the shutter judged from the frames (n/a: not yet).",
              "Not measured: shake (independent kernels, not the camera path's) and none."]
    return "\n".join(lines)
