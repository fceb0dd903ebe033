"""The engine's padded random-access methods (what the VapourSynth filter drives): the same
output as `frames`, and safe from several threads with one encoder run per frame."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tests.media import restore
from vsdeblur.engine import Deblurrer


def clip(count: int, height: int = 40, width: int = 56) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def test_padded_stage1_and_stage2_match_frames(tiny_weights):
    engine = Deblurrer(weights=tiny_weights, scene_threshold=0)
    frames = clip(5)
    padded = [engine.stage1_padded(f) for f in frames]
    assert padded[0].shape == (3, *engine.padded_size(40, 56)) == (3, 48, 64)
    outputs = [restore(engine, padded, frames, t) for t in range(5)]
    expected = list(Deblurrer(weights=tiny_weights, scene_threshold=0).frames(frames))
    assert all(np.array_equal(a, b) for a, b in zip(outputs, expected, strict=True))


def test_concurrent_windows_encode_each_frame_once(tiny_weights):
    engine = Deblurrer(weights=tiny_weights, scene_threshold=0)
    frames = clip(8)
    padded = [engine.stage1_padded(f) for f in frames]
    with ThreadPoolExecutor(4) as pool:
        outputs = list(pool.map(lambda t: restore(engine, padded, frames, t), [5, 2, 7, 0, 3, 6, 1, 4]))
    assert engine.stats.encoder == 8
    expected = list(Deblurrer(weights=tiny_weights, scene_threshold=0).frames(frames))
    order = [5, 2, 7, 0, 3, 6, 1, 4]
    assert all(np.array_equal(outputs[i], expected[t]) for i, t in enumerate(order))
