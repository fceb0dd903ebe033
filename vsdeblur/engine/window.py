"""The temporal window: which stage runs, which frames stage 2 sees for frame t, and where
scenes cut. Numpy only, so that planning (batch) and the VapourSynth graph need no torch.

The window of frame t is t-r .. t+r, clamped to t's scene (the clip's ends are scene edges
too): a neighbour beyond an edge is replaced by the last frame inside it, the rule of
VapourSynth's std.AverageFrames(scenechange=True). No window ever mixes two scenes.

A scene cut is where the mean absolute difference of two consecutive frames' small luma
thumbnails exceeds a threshold (0..1 of full scale): cheap, and blind to camera motion blur.
Every door (vsdeblur-stream, batch, the VapourSynth filter) uses this one rule.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING

import numpy as np

from vsdeblur.errors import UsageError

if TYPE_CHECKING:
    from vsdeblur.models import Preset
    from vsdeblur.weights import Weights

CutTest = Callable[[int, np.ndarray], bool]  # (index, frame) -> does the frame start a scene?
THUMB = 64  # thumbnail width of the scene-cut rule
_LUMA = (0.2126, 0.7152, 0.0722)  # BT.709 weights of R, G, B


def chosen_stage(weights: Weights, stage: int | None) -> int:
    """The stage to run: the one asked for, else the highest the weights hold."""
    stage = max(weights.stages) if stage is None else stage
    if stage not in (1, 2):
        raise UsageError(f"stage must be 1 or 2, not {stage!r}")
    return stage


def window_radius(preset: Preset, stage: int, radius: int | None) -> int:
    """Frames on each side that a stage reads: stage 2 the radius its weights were trained
    with (asking for another is an error), stage 1 none."""
    if stage == 2 and radius is not None and radius != preset.stage2.radius:
        raise UsageError(
            f"the stage-2 weights were trained with radius {preset.stage2.radius}; "
            f"radius {radius} needs weights trained for it"
        )
    return preset.stage2.radius if stage == 2 else 0


def context_frames(preset: Preset, stage: int, radius: int | None) -> int:
    """Frames on each side that a frame's output depends on: its stage-2 window's, and one more
    where stage 1 reads the motion prior (the window's edge frames' stage 1 reads their
    neighbours)."""
    return window_radius(preset, stage, radius) + (1 if preset.stage1.prior else 0)


def window_indices(t: int, radius: int, scene_start: int, scene_end: int) -> list[int]:
    """Frame indices of t's window; scene_end is the last frame of t's scene (inclusive)."""
    return [min(max(t + k, scene_start), scene_end) for k in range(-radius, radius + 1)]


def scene_window(t: int, radius: int, last: int, cut_after: Callable[[int], bool]) -> list[int]:
    """t's window in a clip of frames 0 .. last read at random (VapourSynth), where
    `cut_after(i)` tells whether a scene cut lies between frames i and i + 1: t's scene's
    edges are searched inside t-r .. t+r, and the window clamped to them."""
    start = t
    while start > max(t - radius, 0) and not cut_after(start - 1):
        start -= 1
    end = t
    while end < min(t + radius, last) and not cut_after(end):
        end += 1
    return window_indices(t, radius, start, end)


def luma(planes: Sequence[np.ndarray], step: int = 1) -> np.ndarray:
    """The R, G and B planes of a frame (any of the engine's dtypes; H x W x 3 frames pass
    `frame.transpose(2, 0, 1)`) as a float32 luma picture in 0..1, every `step`-th pixel."""
    scale = 1.0 / np.iinfo(planes[0].dtype).max if planes[0].dtype.kind == "u" else 1.0
    picture = np.zeros(planes[0][::step, ::step].shape, np.float32)
    for plane, weight in zip(planes, _LUMA, strict=True):
        picture += plane[::step, ::step].astype(np.float32) * np.float32(weight * scale)
    return picture


def luma_thumbnail(planes: Sequence[np.ndarray]) -> np.ndarray:
    """A frame's planes as the scene-cut rule's small luma picture (about THUMB wide)."""
    return luma(planes, max(1, planes[0].shape[1] // THUMB))


def scene_change(previous: np.ndarray, thumbnail: np.ndarray) -> float:
    """How much the picture changed between two frames' luma thumbnails (0..1)."""
    if previous.shape != thumbnail.shape:
        return 1.0
    return float(np.abs(thumbnail - previous).mean())


def starts_scene(change: float, threshold: float) -> bool:
    """The scene-cut rule: a frame whose `scene_change` from the previous one exceeds the
    threshold starts a new scene."""
    return change > threshold


class SceneDetector:
    """Fed frames in order, flags each that starts a new scene (never the first)."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._previous: np.ndarray | None = None

    def __call__(self, frame: np.ndarray) -> bool:
        """Feed the next H x W x 3 frame; True when it starts a new scene."""
        thumb = luma_thumbnail(frame.transpose(2, 0, 1))
        previous, self._previous = self._previous, thumb
        return previous is not None and starts_scene(scene_change(previous, thumb), self.threshold)


def cut_test(cuts: Collection[int] | CutTest | None, threshold: float | None) -> CutTest:
    """One test of the frames of a clip, fed in order: the cuts a caller gives (indices of
    frames that start a scene, or its own test) and, with a threshold, the scene-cut rule."""
    tests: list[CutTest] = []
    if callable(cuts):
        tests.append(cuts)
    elif cuts is not None:
        starts = frozenset(int(c) for c in cuts)
        tests.append(lambda i, _: i in starts)
    if threshold:
        detector = SceneDetector(threshold)
        tests.append(lambda _, f: detector(f))
    # every test sees every frame (the detector keeps state), so no short-circuiting
    return lambda i, f: sum(bool(test(i, f)) for test in tests) > 0
