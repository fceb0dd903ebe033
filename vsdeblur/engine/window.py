"""The temporal window: which frames stage 2 sees for frame t, and where scenes cut.

The window of frame t is t-r .. t+r, clamped to t's scene (the clip's ends are scene edges
too): a neighbour beyond an edge is replaced by the last frame inside it, the rule of
VapourSynth's std.AverageFrames(scenechange=True). No window ever mixes two scenes.
"""

from __future__ import annotations

import numpy as np


def window_indices(t: int, radius: int, scene_start: int, scene_end: int) -> list[int]:
    """Frame indices of t's window; scene_end is the last frame of t's scene (inclusive)."""
    return [min(max(t + k, scene_start), scene_end) for k in range(-radius, radius + 1)]


class SceneDetector:
    """Flags a cut when the mean absolute difference of two frames' small luma thumbnails
    exceeds `threshold` (0..1 of full scale). Cheap, and blind to camera motion blur."""

    THUMB = 64  # thumbnail width

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._previous: np.ndarray | None = None

    @staticmethod
    def _thumbnail(frame: np.ndarray) -> np.ndarray:
        step = max(1, frame.shape[1] // SceneDetector.THUMB)
        small = frame[::step, ::step].astype(np.float32)
        if frame.dtype.kind == "u":
            small /= np.iinfo(frame.dtype).max
        return small @ np.array([0.2126, 0.7152, 0.0722], np.float32)

    def __call__(self, frame: np.ndarray) -> bool:
        """Feed the next frame; True when it starts a new scene."""
        thumb = self._thumbnail(frame)
        previous, self._previous = self._previous, thumb
        return previous is not None and previous.shape == thumb.shape and float(np.abs(thumb - previous).mean()) > self.threshold
