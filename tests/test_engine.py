"""The engine: formats, the temporal window and its cache, scene cuts, tiling, ensemble,
precision, and clear errors for bad input. Untrained tiny networks on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.media import restore
from vsdeblur.engine import Deblurrer
from vsdeblur.engine.tiling import pad_to_multiple
from vsdeblur.engine.window import window_indices
from vsdeblur.errors import UsageError, WeightsError


def clip(count: int, height: int = 40, width: int = 56, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def reference_outputs(engine: Deblurrer, frames: list[np.ndarray], scenes: list[range]) -> list[np.ndarray]:
    """What stage 2 must produce, computed the slow obvious way: stage 1 on every frame, then
    the networks directly on each clamped window."""
    m1, m2 = engine.models[1], engine.models[2]
    with torch.inference_mode():
        s1 = [m1(engine.transfer.upload(f)).clamp(-1, 1) for f in frames]
        outputs = []
        for scene in scenes:
            for t in scene:
                window = [s1[j] for j in window_indices(t, engine.radius, scene.start, scene.stop - 1)]
                y = m2(window).clamp(-1, 1)
                outputs.append(engine.transfer.download(y, frames[t].shape, frames[t].dtype).result())
    return outputs


def test_linear_pass_runs_each_part_once_per_frame(tiny_weights):
    engine = Deblurrer(weights=tiny_weights, scene_threshold=0)
    frames = clip(9)
    out = list(engine.frames(frames))
    assert len(out) == 9
    assert all(o.shape == f.shape and o.dtype == np.uint8 for o, f in zip(out, frames))
    assert (engine.stats.stage1, engine.stats.encoder, engine.stats.stage2) == (9, 9, 9)


def test_window_clamps_at_clip_ends_and_matches_direct_computation(tiny_weights):
    engine = Deblurrer(weights=tiny_weights, scene_threshold=0)
    frames = clip(5)
    out = list(engine.frames(frames))
    expected = reference_outputs(engine, frames, [range(0, 5)])
    for o, e in zip(out, expected):
        assert np.abs(o.astype(int) - e.astype(int)).max() <= 1


def test_no_window_crosses_a_scene_cut(tiny_weights):
    engine = Deblurrer(weights=tiny_weights, scene_threshold=0)
    frames = clip(7)
    together = list(engine.frames(frames, cuts=[3]))
    first = list(engine.frames(frames[:3]))
    second = list(engine.frames(frames[3:]))
    for a, b in zip(together, first + second):
        assert np.array_equal(a, b)
    # without the cut, the frames next to it do see across
    uncut = list(engine.frames(frames))
    assert not np.array_equal(uncut[2], together[2])
    assert engine.stats.stage1 == 7 + 3 + 4 + 7


def test_cut_callback_and_builtin_detector(tiny_weights):
    dark = [np.full((40, 56, 3), 20, np.uint8) + f // 8 for f in clip(4, seed=1)]
    bright = [np.full((40, 56, 3), 230, np.uint8) - f // 8 for f in clip(4, seed=2)]
    frames = dark + bright
    expected = list(Deblurrer(weights=tiny_weights, scene_threshold=0).frames(frames, cuts=[4]))
    by_callback = Deblurrer(weights=tiny_weights, scene_threshold=0).frames(frames, cuts=lambda i, f: i == 4)
    by_detector = Deblurrer(weights=tiny_weights, scene_threshold=0.25).frames(frames)
    for a, b, c in zip(expected, by_callback, by_detector):
        assert np.array_equal(a, b) and np.array_equal(a, c)


def test_stage1_only(tiny_weights):
    engine = Deblurrer(weights=tiny_weights, stage=1)
    assert engine.stage == 1
    out = list(engine.frames(clip(4)))
    assert len(out) == 4 and (engine.stats.stage1, engine.stats.encoder, engine.stats.stage2) == (4, 0, 0)


def test_output_is_lazy_and_the_window_bounded(tiny_weights):
    engine = Deblurrer(weights=tiny_weights, scene_threshold=0)
    pulled = []

    def source():
        for i, f in enumerate(clip(50)):
            pulled.append(i)
            yield f

    outputs = engine.frames(source())
    next(outputs)
    # output 0 needs frames 0 and 1 (radius 1); one more is pulled while it is handed over
    assert len(pulled) <= 3
    assert sum(1 for _ in outputs) == 49


def test_results_own_their_memory(tiny_weights):
    # a caller may keep every frame of a clip: each must be its own array, holding no view
    # of the engine's tensors or (on CUDA) of page-locked staging memory
    engine = Deblurrer(weights=tiny_weights, scene_threshold=0)
    frames = clip(5)
    padded = [engine.stage1_padded(f) for f in frames[:3]]
    kept = list(engine.frames(frames)) + padded + [engine.stage2_padded(padded, [0, 1, 2], frames[1])]
    for out in kept:
        assert out.flags.owndata and out.base is None
    for i, a in enumerate(kept):
        assert not any(np.shares_memory(a, b) for b in kept[i + 1 :])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float16, np.float32])
def test_dtypes_round_trip(tiny_weights, dtype):
    engine = Deblurrer(weights=tiny_weights, stage=1)
    base = clip(1)[0].astype(np.float32) / 255
    frame = (base * 65535).round().astype(np.uint16) if dtype == np.uint16 else (base * 255).astype(np.uint8) if dtype == np.uint8 else base.astype(dtype)
    out = engine.image(frame)
    assert out.dtype == dtype and out.shape == frame.shape
    # every dtype describes the same picture: results agree to 8-bit precision
    scale = {np.uint8: 255, np.uint16: 65535}.get(dtype, 1)
    ref = Deblurrer(weights=tiny_weights, stage=1).image(base)
    assert np.abs(out.astype(np.float64) / scale - ref).max() < 3 / 255


@pytest.mark.parametrize("size", [(32, 32), (33, 47), (187, 333), (100, 61)])
def test_any_size_is_padded_and_cropped_back(tiny_weights, size):
    frame = clip(1, *size)[0]
    out = Deblurrer(weights=tiny_weights).image(frame)
    assert out.shape == frame.shape


def test_padding_reflects():
    x = torch.arange(3.0).reshape(1, 1, 1, 3).expand(1, 1, 3, 3)
    assert pad_to_multiple(x, 4)[0, 0, 0].tolist() == [0.0, 1.0, 2.0, 1.0]


def test_tiled_equals_untiled_when_overlap_covers_the_receptive_field(tiny_weights):
    # Bound: a tile contributes only pixels >= overlap/4 from its inner edges, so with
    # overlap/4 >= receptive-field radius (tiny stage 1: 26 px) the outputs agree to float
    # rounding: max abs difference <= 1e-5 on [0, 1] float frames.
    frame = np.random.default_rng(0).random((300, 420, 3), dtype=np.float32)
    whole = Deblurrer(weights=tiny_weights, stage=1, tile=0).image(frame)
    engine = Deblurrer(weights=tiny_weights, stage=1, tile=256, overlap=112)
    tiled = engine.image(frame)
    assert len(engine.networks.tiles(engine.transfer.upload(frame))) == 6  # really tiled: 2 rows x 3 columns
    assert np.abs(tiled - whole).max() <= 1e-5


def test_stage2_tiles_agree_too(tiny_weights):
    # tiny stage 2 sees 123 px (plus stage 1's 26): overlap 608 keeps 152 px of margin
    frame = np.random.default_rng(1).random((96, 1400, 3), dtype=np.float32)
    whole = Deblurrer(weights=tiny_weights, tile=0).image(frame)
    tiled = Deblurrer(weights=tiny_weights, tile=1216, overlap=608).image(frame)
    assert np.abs(tiled - whole).max() <= 1e-5


def test_small_overlap_blends_without_seams(tiny_weights):
    # Below the receptive field, tiles differ near their cuts; feathering keeps the worst
    # pixel far below a visible step (bound: 0.1 on [0, 1]) and the mean tiny.
    frame = np.random.default_rng(2).random((200, 300, 3), dtype=np.float32)
    whole = Deblurrer(weights=tiny_weights, stage=1, tile=0).image(frame)
    tiled = Deblurrer(weights=tiny_weights, stage=1, tile=128, overlap=32).image(frame)
    diff = np.abs(tiled - whole)
    assert diff.max() < 0.1 and diff.mean() < 0.01


def test_ensemble_is_equivariant_to_flips_and_rotations(tiny_weights):
    frame = np.random.default_rng(3).random((64, 80, 3), dtype=np.float32)
    engine = Deblurrer(weights=tiny_weights, ensemble=True)
    out = engine.image(frame)
    assert np.allclose(engine.image(frame[:, ::-1].copy()), out[:, ::-1], atol=1e-5)
    assert np.allclose(engine.image(np.rot90(frame).copy()), np.rot90(out), atol=1e-5)
    plain = Deblurrer(weights=tiny_weights)
    assert not np.allclose(plain.image(frame[:, ::-1].copy()), plain.image(frame)[:, ::-1], atol=1e-3)


@pytest.mark.parametrize("precision,tolerance", [("bf16", 0.06), ("fp16", 0.01)])
def test_reduced_precision_stays_close(tiny_weights, precision, tolerance):
    frame = np.random.default_rng(4).random((48, 64, 3), dtype=np.float32)
    ref = Deblurrer(weights=tiny_weights, precision="fp32").image(frame)
    out = Deblurrer(weights=tiny_weights, precision=precision).image(frame)
    assert out.dtype == np.float32 and np.abs(out - ref).max() < tolerance


def test_random_access_keeps_the_last_few_windows(tiny_weights):
    # one cache policy: a frame is encoded once while a recent window may still read it;
    # random access cannot know when that ends, so it keeps four windows' worth (radius 1: 12)
    engine = Deblurrer(weights=tiny_weights, scene_threshold=0)
    frames = clip(20)
    padded = [engine.stage1_padded(f) for f in frames]
    for t in range(20):
        restore(engine, padded, frames, t)
    assert engine.stats.encoder == 20
    restore(engine, padded, frames, 17)  # frames 16-18 are still kept
    assert engine.stats.encoder == 20
    restore(engine, padded, frames, 1)  # frames 0-2 were dropped long ago
    assert engine.stats.encoder == 23


@pytest.mark.parametrize(
    "frame,message",
    [
        (np.zeros((40, 40, 3), np.int32), "frame 0 has dtype int32; use uint8, uint16, float16 or float32"),
        (np.zeros((40, 40, 4), np.uint8), r"frame 0 must be H x W x 3 \(RGB\); got shape \(40, 40, 4\)"),
        (np.zeros((40, 40), np.uint8), r"must be H x W x 3 \(RGB\); got shape \(40, 40\)"),
        (np.zeros((1, 1, 3), np.uint8), "frame 0 is 1x1; vsdeblur needs at least 32x32 pixels"),
        (np.full((40, 40, 3), np.nan, np.float32), "frame 0 contains NaN or infinite values"),
        ([[1, 2, 3]], "frame 0 must be a numpy array, not list"),
    ],
)
def test_bad_frames_get_clear_errors(tiny_weights, frame, message):
    with pytest.raises(UsageError, match=message):
        list(Deblurrer(weights=tiny_weights).frames([frame]))


def test_frame_size_must_not_change(tiny_weights):
    frames = clip(2) + clip(1, 48, 56)
    with pytest.raises(UsageError, match="frame 2 is 56x48 but the clip started at 56x40"):
        list(Deblurrer(weights=tiny_weights).frames(frames))


@pytest.mark.parametrize(
    "options,error,message",
    [
        ({"preset": "paper"}, UsageError, "was trained as preset 'tiny', not 'paper'"),
        ({"radius": 2}, UsageError, "trained with radius 1; radius 2 needs weights trained for it"),
        ({"device": "cuda:7"} if not torch.cuda.is_available() else {"device": "tpu"}, UsageError, "device"),
        ({"precision": "fp8"}, UsageError, "^Deblurrer: precision must be one of auto, fp32, fp16, bf16; got 'fp8'$"),
        ({"stage": 3}, UsageError, "^Deblurrer: stage must be one of 1, 2; got 3$"),
        ({"tile": 64, "overlap": 48}, UsageError, "tile size 64 must be at least twice the overlap"),
    ],
)
def test_bad_options_get_clear_errors(tiny_weights, options, error, message):
    with pytest.raises(error, match=message):
        engine = Deblurrer(weights=tiny_weights, **options)
        engine.image(clip(1, 200, 200)[0])


def test_the_window_follows_the_weights_unless_told(tmp_path, tiny_weights):
    from vsdeblur.weights import read_weights, save_weights

    loaded = read_weights(tiny_weights)
    wide = tmp_path / "r2.safetensors"
    save_weights(wide, loaded.preset.with_radius(2), {1: loaded.build(1), 2: loaded.build(2).widened(2)})
    engine = Deblurrer(weights=wide)
    assert engine.radius == 2
    frames = clip(6)
    # the outer frames start with no say: the same frames as the radius-1 original
    for a, b in zip(engine.frames(frames), Deblurrer(weights=tiny_weights).frames(frames)):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    with pytest.raises(UsageError, match="trained with radius 2; radius 1 needs weights trained for it"):
        Deblurrer(weights=wide, radius=1)


def test_corrupt_weights_are_refused(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        Deblurrer(weights=bad)


def test_compiled_networks_compile_once_over_cuts_and_clip_ends(monkeypatch):
    # Dynamo's own guards decide when a graph recompiles; the "eager" backend keeps them and
    # skips Inductor's code generation (minutes on a small CPU), which does not change them
    import functools

    import torch._dynamo
    from torch._dynamo.utils import counters

    from vsdeblur.models import build_model, get_preset

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    cfg = get_preset("tiny")
    models = {s: build_model(cfg, s) for s in (1, 2)}
    frames = clip(7)
    compiled = list(Deblurrer.from_models(cfg, models, compile=True, scene_threshold=0).frames(frames, cuts=[3]))
    # one graph each for stage 1, the encoder and the aggregation, whatever the window repeats
    assert counters["stats"]["unique_graphs"] == 3
    eager = Deblurrer.from_models(cfg, models, scene_threshold=0).frames(frames, cuts=[3])
    for a, b in zip(compiled, eager, strict=True):
        assert np.array_equal(a, b)
    torch._dynamo.reset()
