"""The VapourSynth filter: vsdeblur.atrous and core.deblur.Atrous against the engine, stage 1
once per frame under threads and out-of-order requests, scene cuts, format round trips and
errors. Tiny untrained networks on the CPU, small frames."""

from __future__ import annotations

import inspect
import random
import re

import numpy as np
import pytest
import torch
import vapoursynth as vs

import vsdeblur.weights
from tests.media import overflowing_weights, to_arrays, to_clip
from vsdeblur.config import ENGINE, VAPOURSYNTH, vapoursynth_args
from vsdeblur.engine import Deblurrer
from vsdeblur.vs import atrous, graph

core = vs.core
# The filter and the engine run the same code on the same tensors; on the CPU in fp32 they
# agree exactly, and this bound only allows for a different summation order.
FLOAT_TOLERANCE = 1e-5
WIDTH, HEIGHT = 56, 40  # not multiples of 16: the padding path is exercised


def rgb_frames(count: int, seed: int = 0, dtype=np.float32) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(count)]
    return frames if dtype == np.uint8 else [(f / 255).astype(dtype) for f in frames]


def max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    assert len(a) == len(b)
    return max(float(np.abs(x.astype(np.float64) - y.astype(np.float64)).max()) for x, y in zip(a, b, strict=True))


def test_signatures_follow_the_schema(deblur_plugin):
    options = ENGINE.options + VAPOURSYNTH.options
    params = list(inspect.signature(atrous).parameters.values())
    assert [p.name for p in params] == ["clip"] + [o.name for o in options]
    assert [p.default for p in params[1:]] == [o.default for o in options]
    assert core.deblur.Atrous.signature == vapoursynth_args(ENGINE, VAPOURSYNTH)


@pytest.mark.parametrize("stage", [1, 2])
def test_plugin_python_and_engine_agree(tiny_weights, deblur_plugin, stage):
    frames = rgb_frames(5)
    clip = to_clip(frames, vs.RGBS)
    expected = list(Deblurrer(weights=tiny_weights, stage=stage, scene_threshold=0).frames(frames))
    options = {"weights": str(tiny_weights), "stage": stage, "scene_threshold": 0}
    python = to_arrays(atrous(clip, **options))
    plugin = to_arrays(core.deblur.Atrous(clip, **options))
    method = to_arrays(clip.deblur.Atrous(**options))
    assert python[0].dtype == np.float32 and python[0].shape == (HEIGHT, WIDTH, 3)
    assert max_diff(python, expected) <= FLOAT_TOLERANCE
    assert max_diff(plugin, expected) <= FLOAT_TOLERANCE
    assert max_diff(method, expected) <= FLOAT_TOLERANCE


def test_stage1_once_per_frame_with_threads_and_random_order(tiny_weights):
    # the graph atrous builds, given an engine of the test's own whose stats count the runs
    engine = Deblurrer(weights=tiny_weights, scene_threshold=0)
    count = 24
    frames = rgb_frames(count)
    out = graph(to_clip(frames, vs.RGBS), engine, num_streams=2)
    threads = core.num_threads
    core.num_threads = 8
    try:  # every frame requested at once, in shuffled order
        order = list(range(count))
        random.Random(1).shuffle(order)
        futures = {n: out.get_frame_async(n) for n in order}
        results = {n: np.stack([np.asarray(futures[n].result()[p]) for p in range(3)], -1) for n in order}
    finally:
        core.num_threads = threads
    assert engine.stats.stage1 == count
    assert engine.stats.stage2 == count
    expected = list(Deblurrer(weights=tiny_weights, scene_threshold=0).frames(frames))
    assert max_diff([results[n] for n in range(count)], expected) <= FLOAT_TOLERANCE


@pytest.mark.parametrize("prop", ["_SceneChangeNext", "_SceneChangePrev"])
def test_scene_cut_prop_stops_the_window(tiny_weights, prop):
    frames = rgb_frames(6)
    marked = 2 if prop == "_SceneChangeNext" else 3  # either way the cut is between 2 and 3
    clip = to_clip(frames, vs.RGBS, {marked: {prop: 1}})
    out = to_arrays(atrous(clip, weights=tiny_weights, scene_threshold=0))
    engine = Deblurrer(weights=tiny_weights, scene_threshold=0)
    assert max_diff(out, list(engine.frames(frames, cuts=[3]))) <= FLOAT_TOLERANCE
    uncut = list(engine.frames(frames))
    assert np.abs(out[2] - uncut[2]).max() > 10 * FLOAT_TOLERANCE  # the prop changed what frame 2 saw
    ignored = to_arrays(atrous(clip, weights=tiny_weights, scene_threshold=0, scene_props=False))
    assert max_diff(ignored, uncut) <= FLOAT_TOLERANCE


def test_scene_cut_detection_without_props(tiny_weights):
    dark = [np.full((HEIGHT, WIDTH, 3), 0.1, np.float32) + f / 10 for f in rgb_frames(3, seed=1)]
    bright = [np.full((HEIGHT, WIDTH, 3), 0.8, np.float32) + f / 10 for f in rgb_frames(3, seed=2)]
    frames = dark + bright
    out = to_arrays(atrous(to_clip(frames, vs.RGBS), weights=tiny_weights, scene_threshold=0.25))
    expected = list(Deblurrer(weights=tiny_weights, scene_threshold=0).frames(frames, cuts=[3]))
    assert max_diff(out, expected) <= FLOAT_TOLERANCE


def _yuv_clip(fmt: int, count: int = 3) -> vs.VideoNode:
    rgb = to_clip(rgb_frames(count, dtype=np.uint8), vs.RGB24)
    return rgb.resize.Bicubic(format=fmt, matrix_s="709", range_s="limited")


@pytest.mark.parametrize("fmt", [vs.YUV420P8, vs.YUV420P10, vs.RGB24, vs.RGBS, vs.RGBH, vs.GRAY8], ids=lambda f: vs.PresetVideoFormat(f).name)
def test_format_round_trip_keeps_format_and_props(tiny_weights, fmt):
    if fmt in (vs.YUV420P8, vs.YUV420P10):
        clip = _yuv_clip(fmt)
    elif fmt == vs.GRAY8:
        clip = _yuv_clip(vs.YUV420P8).std.ShufflePlanes(0, vs.GRAY)
    else:
        clip = to_clip(rgb_frames(3, dtype={vs.RGB24: np.uint8, vs.RGBH: np.float16}.get(fmt, np.float32)), fmt)
    clip = clip.std.SetFrameProps(Custom=7, _SceneChangeNext=0)
    out = atrous(clip, weights=tiny_weights, scene_threshold=0)
    assert (out.format.id, out.width, out.height, out.num_frames) == (fmt, WIDTH, HEIGHT, 3)
    for n in range(3):
        before, after = clip.get_frame(n), out.get_frame(n)
        assert dict(after.props) == dict(before.props)
        assert not np.array_equal(np.asarray(after[0]), np.asarray(before[0]))  # it did run


def test_rgb24_matches_the_engine_exactly(tiny_weights):
    frames = rgb_frames(4, dtype=np.uint8)
    out = to_arrays(atrous(to_clip(frames, vs.RGB24), weights=tiny_weights, scene_threshold=0))
    expected = list(Deblurrer(weights=tiny_weights, scene_threshold=0).frames(frames))
    assert all(np.array_equal(a, b) for a, b in zip(out, expected, strict=True))


@pytest.mark.parametrize("fmt,dtype,padded", [(vs.RGBH, np.float16, np.float16), (vs.RGB24, np.uint8, np.float16), (vs.RGB48, np.uint16, np.float32)])
def test_fp16_runs_half_precision_between_the_nodes_where_the_source_allows(tiny_weights, fmt, dtype, padded):
    # RGBH means fp16 end to end: stage 1 travels to stage 2 as RGBH (half the copies and the
    # frame cache) for sources whose codes float16 tells apart; 16-bit ones keep float32
    frames = rgb_frames(4, dtype=np.uint8)
    frames = [f.astype(np.float16) / 255 if dtype == np.float16 else f.astype(dtype) * (257 if dtype == np.uint16 else 1) for f in frames]
    engine = Deblurrer(weights=tiny_weights, precision="fp16", scene_threshold=0)
    assert engine.padded_dtype(np.dtype(dtype)) == padded
    assert engine.stage1_padded(frames[0]).dtype == padded
    out = to_arrays(atrous(to_clip(frames, fmt), weights=tiny_weights, precision="fp16", scene_threshold=0))
    expected = list(engine.frames(frames))
    assert out[0].dtype == dtype
    # float16 carries 8-bit and float16 codes to within rounding: at most one code apart
    one_code = {np.float16: 2e-3, np.uint8: 1, np.uint16: 0}[dtype]
    assert max_diff(out, expected) <= one_code


def test_missing_props_give_clear_errors_and_overrides_work(tiny_weights):
    yuv = core.std.BlankClip(width=WIDTH, height=HEIGHT, format=vs.YUV420P8, length=2)
    with pytest.raises(vs.Error, match="_Range"):
        atrous(yuv, weights=tiny_weights)
    with pytest.raises(vs.Error, match="_Matrix"):
        atrous(yuv, weights=tiny_weights, color_range="limited")
    out = atrous(yuv, weights=tiny_weights, color_range="limited", matrix=1)
    assert out.format.id == vs.YUV420P8 and out.get_frame(1).props.get("_Matrix") is None


def test_errors_are_vs_errors_a_script_author_understands(tiny_weights, tmp_path, monkeypatch):
    clip = to_clip(rgb_frames(2), vs.RGBS)
    missing = tmp_path / "nowhere.safetensors"
    with pytest.raises(vs.Error, match="nowhere.safetensors"):
        atrous(clip, weights=missing)
    with monkeypatch.context() as patch:  # as on an installation without the shipped model
        patch.setattr(vsdeblur.weights, "default_weights_path", lambda: None)
        with pytest.raises(vs.Error, match=r"default\.safetensors"):
            atrous(clip)
    with pytest.raises(vs.Error, match="stage must be one of"):
        atrous(clip, weights=tiny_weights, stage=3)
    varying = core.std.Splice([clip, core.std.BlankClip(clip, format=vs.RGBH)], mismatch=True)
    with pytest.raises(vs.Error, match="format or size changes"):
        atrous(varying, weights=tiny_weights)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_cuda_requested_but_absent(tiny_weights, deblur_plugin):
    clip = to_clip(rgb_frames(2), vs.RGBS)
    with pytest.raises(vs.Error, match="CUDA is not available"):
        core.deblur.Atrous(clip, weights=str(tiny_weights), device="cuda")


def test_nothing_on_stdout(tiny_weights, deblur_plugin, capfd):
    clip = to_clip(rgb_frames(3), vs.RGBS)
    out = core.deblur.Atrous(clip, weights=str(tiny_weights))
    for _ in out.frames():
        pass
    assert capfd.readouterr().out == ""


def _one_line_error(call) -> str:
    """The vs.Error that `call` raises: one line, naming the filter once."""
    with pytest.raises(vs.Error) as caught:
        call()
    text = str(caught.value)
    assert "\n" not in text.strip() and text.startswith("deblur.Atrous: ") and text.count("deblur.Atrous") == 1, text
    return text


@pytest.mark.parametrize(
    "options, message",
    [
        ({"tile": 1}, r"tile .*overlap"),  # the tiny preset overlaps 64 px
        ({"tile": -1}, r"tile must be at least 0"),
        ({"stage": 3}, r"stage must be one of 1, 2; got 3"),
        ({"matrix": 99}, r"matrix must be one of 1, 4, .*; got 99"),
        ({"matrix": 0}, r"matrix must be one of"),
        ({"num_streams": 0}, r"num_streams must be at least 1"),
        ({"color_range": "tv"}, r"color_range must be one of full, limited"),
    ],
)
def test_every_argument_is_checked_when_the_filter_is_called(tiny_weights, deblur_plugin, options, message):
    clip = to_clip(rgb_frames(2), vs.RGBS)
    for call in (lambda: atrous(clip, weights=tiny_weights, **options), lambda: core.deblur.Atrous(clip, weights=str(tiny_weights), **options)):
        assert re.search(message, _one_line_error(call))


def test_a_matrix_the_resizer_refuses_fails_when_the_filter_is_called(tiny_weights):
    yuv = _yuv_clip(vs.YUV420P10, count=2)
    for props, matrix in (({"_Matrix": 3}, None), ({"_Matrix": 2}, 10), ({"_Matrix": 14, "_Transfer": 1}, None)):
        clip = yuv.std.SetFrameProps(**props)
        assert "cannot be converted to RGB" in _one_line_error(lambda: atrous(clip, weights=tiny_weights, matrix=matrix))
    # with the props it needs, BT.2020 constant luminance converts
    clip = yuv.std.SetFrameProps(_Matrix=10, _Transfer=1, _Primaries=9)
    assert atrous(clip, weights=tiny_weights).get_frame(1).format.id == vs.YUV420P10


def test_a_network_output_that_is_not_finite_names_the_frame(tmp_path):
    out = atrous(to_clip(rgb_frames(3), vs.RGBS), weights=overflowing_weights(tmp_path / "huge.safetensors"))
    with pytest.raises(vs.Error) as caught:
        out.get_frame(1)
    last = str(caught.value).strip().splitlines()[-1]  # VapourSynth puts a traceback above it
    assert last.startswith("vapoursynth.Error: deblur.Atrous: frame 1: the network's output holds NaN or infinite values")
