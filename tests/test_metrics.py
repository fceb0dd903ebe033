"""VMAF through libvmaf in PyAV's filter graph: identical clips score about 100, blur scores
clearly lower, the reference goes to libvmaf's reference input, the number agrees with FFmpeg
scoring the same two files on its own, and frames too small for VMAF are refused in words."""

from __future__ import annotations

import gc
import json

import av
import av.filter
import numpy as np
import pytest

from tests.media import write_lossless
from vsdeblur.evaluate import decoded, evaluate
from vsdeblur.metrics import VMAF_MIN_SIDE, VmafMeter, clip_vmaf, vmaf_unavailable
from vsdeblur.train.data import dead_leaves
from vsdeblur.blur import ShakeBlur, ShakeSpec


def panned_clip(count: int = 4, height: int = 96, width: int = 96) -> list[np.ndarray]:
    """A slow pan across a dead-leaves picture: VMAF's motion feature sees real motion."""
    rng = np.random.default_rng(11)
    big = (dead_leaves(rng, max(height, width) + 4 * count) * 255 + 0.5).astype(np.uint8)
    return [np.ascontiguousarray(big[2 * t : 2 * t + height, 3 * t : 3 * t + width]) for t in range(count)]


def blurred(frames: list[np.ndarray], length: float = 6) -> list[np.ndarray]:
    return list(ShakeBlur(ShakeSpec(min_length=length, max_length=length + 1), seed=3).frames(frames))


def ffmpeg_vmaf(distorted, reference, log) -> float:
    """FFmpeg alone: both files opened by `movie` sources, converted to YUV by its scale filter
    (BT.601 limited range, what the pipeline assumes for untagged SD), scored by libvmaf, and
    the pooled mean read from libvmaf's own log."""

    def run() -> None:
        graph = av.filter.Graph()
        vmaf = graph.add("libvmaf", model="version=vmaf_v0.6.1", log_path=str(log), log_fmt="json")
        for pad, path in enumerate((distorted, reference)):
            movie = graph.add("movie", filename=str(path))
            scale = graph.add("scale", out_color_matrix="bt601", out_range="tv", flags="bicubic+accurate_rnd+full_chroma_int")
            yuv = graph.add("format", pix_fmts="yuv444p")
            movie.link_to(scale)
            scale.link_to(yuv)
            yuv.link_to(vmaf, 0, pad)
        sink = graph.add("buffersink")
        vmaf.link_to(sink)
        graph.configure()
        while True:
            try:
                sink.pull()
            except av.EOFError:
                return

    run()
    gc.collect()  # libvmaf writes its log when the graph is freed
    return json.loads(log.read_text())["pooled_metrics"]["vmaf"]["mean"]


def test_identical_clips_score_about_100_and_blur_clearly_less():
    sharp = panned_clip()
    with VmafMeter() as meter:
        for frame in sharp:
            meter.add(frame, frame)
        identical = meter.scores()
    # the first frame has no motion to go by, which the model marks down a little
    assert identical[1:] == pytest.approx([100.0] * 3, abs=1e-3) and identical[0] > 97
    assert clip_vmaf(blurred(sharp, 6), sharp) < 80
    assert clip_vmaf(blurred(sharp, 12), sharp) < clip_vmaf(blurred(sharp, 3), sharp) - 10


def test_the_reference_goes_to_libvmafs_reference_input_and_agrees_with_ffmpeg(tmp_path):
    sharp = panned_clip(5, 72, 104)
    soft = blurred(sharp, 4)
    write_lossless(tmp_path / "sharp.mkv", sharp)
    write_lossless(tmp_path / "blurred.mkv", soft)
    ours = clip_vmaf(decoded(tmp_path / "blurred.mkv"), decoded(tmp_path / "sharp.mkv"))
    assert ours == pytest.approx(ffmpeg_vmaf(tmp_path / "blurred.mkv", tmp_path / "sharp.mkv", tmp_path / "ffmpeg.json"), abs=0.01)
    # VMAF is not symmetric: the two inputs the other way round give another number
    assert abs(clip_vmaf(sharp, soft) - ours) > 1


def test_odd_sizes_are_scored_and_small_ones_refused_in_words():
    odd = panned_clip(3, 61, 97)
    assert clip_vmaf(odd, odd) > 99
    assert vmaf_unavailable(97, 61) is None
    assert vmaf_unavailable(64, 40) == f"VMAF needs frames of at least {VMAF_MIN_SIDE}x{VMAF_MIN_SIDE} pixels, these are 64x40"
    with pytest.raises(ValueError, match="VMAF needs frames of at least"):
        clip_vmaf(panned_clip(2, 16, 16), panned_clip(2, 16, 16))


def test_eval_of_frames_too_small_for_vmaf_scores_the_rest():
    # libvmaf crashes the process on 16x16 frames: eval must not hand them to it
    sharp = panned_clip(3, 16, 16)
    result = evaluate(sharp, [np.roll(f, 1, axis=1) for f in sharp], sharp)
    assert result.restored.vmaf is None and result.gain.vmaf is None and result.restored.psnr == float("inf")
    assert "no VMAF: VMAF needs frames of at least" in result.table()
    assert result.as_dict()["vmaf_skipped"].endswith("these are 16x16")
