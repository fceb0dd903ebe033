"""One scene-cut rule for every door: vsdeblur-stream, batch, the VapourSynth filter and the
engine cut a clip at the same frames, also when the change between two scenes lies a hair
above or below the threshold. The clip cuts between two noise textures of the same mean
brightness, where a rule on coarse luma and one on full-resolution detail would disagree.
Tiny untrained networks on the CPU; every file is lossless, so outputs compare exactly."""

from __future__ import annotations

import numpy as np
import pytest
import vapoursynth as vs

from tests.media import decoded, to_arrays, to_clip, write_lossless
from vsdeblur.batch import resolved_settings, run_batch
from vsdeblur.engine import Deblurrer
from vsdeblur.engine.window import luma_thumbnail, scene_change
from vsdeblur.stream import stream
from vsdeblur.vs import atrous

CUT = 5  # the first frame of the second texture
# wider than the rule's 64-px thumbnail, so that the thumbnail skips pixels that a
# full-resolution measure would count
WIDTH, HEIGHT = 200, 40


def two_textures(count: int = 9) -> list[np.ndarray]:
    """Frames 0..CUT-1 one noise texture, the rest another of the same mean; a little fresh
    noise on every frame, so that neighbours differ within a scene too."""
    rng = np.random.default_rng(11)
    first, second = (rng.integers(64, 192, (HEIGHT, WIDTH, 3)) for _ in range(2))
    return [((first if i < CUT else second) + rng.integers(-4, 5, (HEIGHT, WIDTH, 3))).astype(np.uint8) for i in range(count)]


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("side", ["just above", "just below"])
def test_every_door_cuts_at_the_same_frames(tiny_weights, tmp_path, side):
    frames = two_textures()
    thumbs = [luma_thumbnail(f.transpose(2, 0, 1)) for f in frames]
    change = scene_change(thumbs[CUT - 1], thumbs[CUT])
    within = max(scene_change(thumbs[i - 1], thumbs[i]) for i in range(1, len(frames)) if i != CUT)
    assert within < 0.9 * change  # the textures' change is the clip's only candidate for a cut
    threshold = change * (0.9995 if side == "just above" else 1.0005)
    cuts = [CUT] if side == "just above" else []

    reference = Deblurrer(weights=tiny_weights, scene_threshold=0)
    expected = list(reference.frames(frames, cuts=cuts))
    other = list(reference.frames(frames, cuts=[CUT] if not cuts else []))
    assert not same(expected, other)  # the cut changes the frames around it: the test can tell

    engine = Deblurrer(weights=tiny_weights, scene_threshold=threshold)
    assert same(list(engine.frames(frames)), expected), "engine"

    filtered = atrous(to_clip(frames, vs.RGB24), weights=tiny_weights, device="cpu", scene_threshold=threshold)
    assert same(to_arrays(filtered), expected), "VapourSynth"

    source = write_lossless(tmp_path / "in.mkv", frames)
    assert same(decoded(source), frames)
    stream(source, tmp_path / "stream.mkv", {"weights": tiny_weights, "device": "cpu", "scene_threshold": threshold, "codec": "ffv1"}, progress=False)
    assert same(decoded(tmp_path / "stream.mkv"), expected), "vsdeblur-stream"

    # chunks of 3 frames: the cut falls inside the second chunk's context, not on a boundary
    values = resolved_settings(None, {"weights": tiny_weights, "device": "cpu", "workers": 1, "chunk_frames": 3, "codec": "ffv1",
                                      "scene_threshold": threshold})
    report = run_batch([str(source)], tmp_path / "batch", values)
    assert report.ok
    assert same(decoded(tmp_path / "batch" / "in.mkv"), expected), "batch"
