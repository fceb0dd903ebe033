"""What a stage 1 that reads the motion prior is given beside its frame (stage1.PRIOR_CHANNELS):
the camera's motion from the frame's neighbours (vsdeblur.motion), the exposure's blur that it
predicts at the shutter, the frame deconvolved by that blur (vsdeblur.prior), and the blur and
its confidence as planes over the frame.

The data flow is one way: the neighbours' luma -> motion -> blur chords -> prior -> stage 1.
A frame without a neighbour in its scene (a one-frame clip, a picture, a frame between two
cuts) has no motion: zero blur and zero confidence, the prior is the frame itself, and stage 1
runs blind on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vsdeblur.engine.tiling import pad_to_multiple
from vsdeblur.engine.window import luma
from vsdeblur.models.stage1 import BLUR_UNIT
from vsdeblur.motion import (DEFAULT_SHUTTER, Motion, PairMotion, PreparedFrame, combine, estimate_pair, prepare,
                             shutter_evidence, still)
from vsdeblur.prior import PriorSettings, deblur, estimate_noise, luminance

Planes = np.ndarray | Sequence[np.ndarray]  # an H x W x 3 frame or its three H x W planes
# two edge steps restore a 640x360 frame's edges as well as four, at two thirds of the time
# (docs/training.md, "The deconvolution prior"); larger frames are less edge still
DECONVOLUTION = PriorSettings(iterations=2)
BLIND_NOTE = (
    "a frame without a neighbour in its scene (a single picture, a one-frame clip, a frame between "
    "two cuts) has no motion to tell its blur: stage 1 runs blind on it"
)


class PriorInputs:
    """The prior's planes of one frame, for a stage 1 that reads them.

    shutter: the `shutter` option (a share of the frame interval, or "auto"); multiple and
    memory_format: how the engine pads and lays out its frames; note: called with BLIND_NOTE
    when a frame has no neighbour.

    A stream hands consecutive frames over as the same objects from call to call: each frame
    is prepared once and each interval measured once (the last few are kept, by identity).
    Random access hands new objects and measures afresh; both measure the same way
    (motion_of), so every door gives a frame the same motion."""

    def __init__(self, shutter: float | str, multiple: int, memory_format: torch.memory_format, note: Callable[[str], None]) -> None:
        self.shutter, self.multiple, self.memory_format, self.note = shutter, multiple, memory_format, note
        self.intervals = Intervals()

    def __call__(self, x: torch.Tensor, current: Planes, previous: Planes | None, following: Planes | None) -> torch.Tensor:
        """x: the current frame as the engine uploaded it (1 x 3 x H' x W' in [-1, 1], padded);
        the frames as the caller holds them (None: no neighbour on that side). Returns
        1 x len(PRIOR_CHANNELS) x H' x W', padded as x is."""
        height, width = _size(current)
        frame = (x[0, :, :height, :width].float() + 1) / 2
        if previous is None and following is None:
            self.note(BLIND_NOTE)
        frames = [None if f is None else self.intervals.prepared(f, lambda f=f: _luma(f, x.device)) for f in (previous, current, following)]
        motion = motion_of(*frames, pair=self.intervals.pair)
        planes = prior_planes(frame, motion, self.shutter)[None].contiguous(memory_format=self.memory_format)
        return pad_to_multiple(planes, self.multiple)



class Intervals:
    """Prepared frames and measured intervals, the last KEPT of each, by the identity of the
    objects they were made from: consecutive calls along a video prepare each frame once and
    measure each interval once. The objects are held, so an identity is never reused."""

    KEPT = 3  # a stream's window of t-1 .. t+1

    def __init__(self) -> None:
        self._prepared: list[tuple[object, PreparedFrame]] = []
        self._pairs: list[tuple[PreparedFrame, PreparedFrame, PairMotion]] = []

    def prepared(self, frame: object, luma_of: Callable[[], torch.Tensor]) -> PreparedFrame:
        """`frame` prepared (from luma_of()), once while it is among the last KEPT."""
        for held, prepared_ in self._prepared:
            if held is frame:
                return prepared_
        prepared_ = prepare(luma_of())
        self._prepared = [*self._prepared[1 - self.KEPT :], (frame, prepared_)]
        return prepared_

    def pair(self, current: PreparedFrame, other: PreparedFrame) -> PairMotion:
        """estimate_pair(current, other), once while it is among the last KEPT."""
        for a, b, pair in self._pairs:
            if a is current and b is other:
                return pair
        pair = estimate_pair(current, other)
        self._pairs = [*self._pairs[1 - self.KEPT :], (current, other, pair)]
        return pair


def motion_of(previous: PreparedFrame | None, current: PreparedFrame, following: PreparedFrame | None,
              pair: Callable[[PreparedFrame, PreparedFrame], PairMotion] = estimate_pair) -> Motion:
    """Frame t's motion, the one way every door and the trainer measure it: the interval before
    t measured on t-1's tiles and reversed, the one after on t's (so that a video measures each
    interval once, as t-1's next and as t's previous); None: no neighbour on that side."""
    before = pair(previous, current).reversed() if previous is not None else None
    after = pair(current, following) if following is not None else None
    if before is None and after is None:
        return still(current)
    return combine(before, after)


def prior_planes(frame: torch.Tensor, motion: Motion, shutter: float | str) -> torch.Tensor:
    """The PRIOR_CHANNELS planes (len x H x W) of a 3 x H x W frame in [0, 1] given its motion
    (motion_of) and the `shutter` option: the engine's and the trainer's one way."""
    height, width = frame.shape[-2:]
    noise = estimate_noise(luminance(frame))  # the auto shutter's and the deconvolution's
    chords = motion.chord(frame_shutter(frame, motion, shutter, noise))
    restored = deblur(frame, chords, motion.confidence, noise, DECONVOLUTION) * 2 - 1
    field = field_planes(chords / BLUR_UNIT, motion.confidence, motion.centres, height, width)
    return torch.cat([restored, field])


def frame_shutter(frame: torch.Tensor, motion: Motion, shutter: float | str, noise: float | None = None) -> float:
    """The shutter set, or with `auto` the frame's own estimate (its blur along its motion),
    DEFAULT_SHUTTER where the frame holds no evidence. Per frame, so that every door, reading
    frames in any order, gives each frame the same. `noise`: the frame's luma's, if known."""
    if shutter != "auto":
        return float(shutter)
    estimate_, weight = shutter_evidence(frame, motion, noise)
    return estimate_ if weight > 0 else DEFAULT_SHUTTER


def field_planes(chords: torch.Tensor, confidence: torch.Tensor, centres: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A field over a grid of tiles (rows x cols x 2 chords, rows x cols confidence, centres
    rows x cols x 2 as x, y) as 3 x H x W planes (dx, dy, confidence): linear between the
    tiles' centres, the nearest tile's values beyond the outer ones."""
    values = torch.cat([chords, confidence[..., None]], dim=-1).permute(2, 0, 1)[None].float()
    device = values.device
    rows = _grid_coordinate(torch.arange(height, device=device, dtype=torch.float32), centres[:, 0, 1].to(device).contiguous())
    cols = _grid_coordinate(torch.arange(width, device=device, dtype=torch.float32), centres[0, :, 0].to(device).contiguous())
    grid = torch.stack(torch.broadcast_tensors(cols[None, :], rows[:, None]), dim=-1)[None]
    return F.grid_sample(values, grid, mode="bilinear", padding_mode="border", align_corners=True)[0]


def _grid_coordinate(positions: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Pixel positions as grid_sample's coordinates (-1 .. 1 over the tiles, align_corners)
    along one axis whose tile centres increase: fractional tile indices, clamped to the ends."""
    count = len(centres)
    if count == 1:
        return torch.zeros_like(positions)
    upper = torch.searchsorted(centres, positions).clamp(1, count - 1)
    low, high = centres[upper - 1], centres[upper]
    index = (upper - 1) + ((positions - low) / (high - low)).clamp(0, 1)
    index = torch.where(positions < centres[0], 0.0, index)
    return index * (2 / (count - 1)) - 1


def _luma(frame: Planes, device: torch.device) -> torch.Tensor:
    """A frame's luma (H x W in [0, 1]) on the device, from the frame as its caller holds it."""
    planes = frame.transpose(2, 0, 1) if isinstance(frame, np.ndarray) else frame
    return torch.from_numpy(luma(planes)).to(device)


def _size(frame: Planes) -> tuple[int, int]:
    shape = frame.shape if isinstance(frame, np.ndarray) else frame[0].shape
    return shape[0], shape[1]
