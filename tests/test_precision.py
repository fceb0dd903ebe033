"""Precision: what `auto` picks, images kept in fp32 around reduced-precision networks, and
the reduced-precision defects a CPU can show (fp16 normalisation, fp16 tile sums)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tests.media import restore, run_cli
from vsdeblur.backends import device
from vsdeblur.engine import Deblurrer
from vsdeblur.engine.tiling import blend, plan_tiles
from vsdeblur.models import build_model, get_preset
from vsdeblur.models.stage2 import MLFA, similarity_weighted

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "flags,expected",
    [
        ({"avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}, "bf16"),
        ({"avx512f", "avx512_bf16"}, "bf16"),
        ({"amx_bf16"}, "bf16"),
        ({"avx2", "avx512f", "avx512_vnni", "avx512_fp16"}, "fp32"),
        (set(), "fp32"),
    ],
)
def test_auto_is_bf16_exactly_where_the_cpu_has_bf16_instructions(monkeypatch, tiny_weights, flags, expected):
    monkeypatch.setattr(device, "cpu_flags", lambda: flags)
    name, why = device.auto_precision(CPU)
    assert name == expected
    assert why.startswith("the CPU has neither" if expected == "fp32" else "the CPU has")
    engine = Deblurrer(weights=tiny_weights, device="cpu", precision="auto")
    assert engine.runtime.precision == expected and engine.dtype == device.torch_dtype(expected)
    assert next(engine.models[1].parameters()).dtype == device.torch_dtype(expected)
    # asking for a precision is not second-guessed
    assert Deblurrer(weights=tiny_weights, device="cpu", precision="fp32").dtype == torch.float32


def test_proc_cpuinfo_and_pytorch_agree_on_the_bf16_flags(monkeypatch):
    if not hasattr(torch.cpu, "get_capabilities"):
        pytest.skip("this PyTorch reads only /proc/cpuinfo")
    with open("/proc/cpuinfo") as f:
        assert "flags" in f.read(), "no /proc/cpuinfo flags to compare with"
    from_pytorch = device.cpu_flags() & {"amx_bf16", "avx512_bf16"}
    monkeypatch.delattr(torch.cpu, "get_capabilities")
    assert device.cpu_flags() & {"amx_bf16", "avx512_bf16"} == from_pytorch


def test_info_says_what_auto_picks_and_why():
    name, why = device.auto_precision(CPU)
    result = run_cli("info")
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("precision"))
    assert f"auto on cpu: {name} ({why})" in line


def identity_networks() -> dict[int, torch.nn.Module]:
    """Tiny stage 1 and stage 2 whose output layers are zero: each adds a zero residual to
    its image, so the whole pipeline must hand its input back unchanged."""
    torch.manual_seed(0)
    cfg = get_preset("tiny")
    models = {s: build_model(cfg, s) for s in (1, 2)}
    for model in models.values():
        model.out.scale.data.zero_()
        model.out.bias.data.zero_()
    return models


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_images_stay_fp32_around_reduced_precision_networks(precision):
    # 16-bit frames through networks that add nothing: the input conversion, both global
    # residual additions, the stage-1 output that stage 2 reads and the tile blend must all
    # keep the picture's precision (bf16 alone is ~256 16-bit codes apart near white)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 65536, (48, 72, 3), dtype=np.uint16) for _ in range(3)]
    engine = Deblurrer.from_models(get_preset("tiny"), identity_networks(), precision=precision, scene_threshold=0)
    for out, frame in zip(engine.frames(frames), frames, strict=True):
        assert np.array_equal(out, frame)
    tiled = Deblurrer.from_models(get_preset("tiny"), identity_networks(), precision=precision, tile=32, overlap=8)
    assert len(tiled.networks.tiles(tiled.transfer.upload(frames[0]))) > 1
    assert np.array_equal(tiled.image(frames[0]), frames[0])
    # the padded random-access path (VapourSynth) hands stage-1 images between its calls
    padded = [engine.stage1_padded(f) for f in frames]
    for t, frame in enumerate(frames):
        assert np.array_equal(restore(engine, padded, frames, t), frame)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_zero_feature_gives_no_nan(dtype):
    features = [torch.zeros(1, 8, 6, 6, dtype=dtype), torch.randn(1, 8, 6, 6).to(dtype), torch.zeros(1, 8, 6, 6, dtype=dtype)]
    for centre in (0, 1):
        assert torch.isfinite(similarity_weighted(features, centre)).all()
    # and through stage 2's aggregation, a neighbour whose pyramid is all zero (a black frame)
    torch.manual_seed(0)
    model = MLFA(get_preset("tiny").stage2).to(dtype).eval()
    with torch.inference_mode():
        image = torch.rand(1, 3, 32, 32, dtype=dtype)
        pyramid = model.encode(image)
        black = [torch.zeros_like(level) for level in pyramid]
        assert torch.isfinite(model.aggregate([black, pyramid, pyramid], image)).all()


class _Ops(TorchDispatchMode):
    """Names of the ATen operators that run inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


def test_tile_blend_sums_in_fp32_and_copies_no_weights():
    tiles = plan_tiles(96, 160, 64, 16, 2, CPU)
    assert len(tiles) > 2 and all(t.weight.device == CPU and t.weight.dtype == torch.float32 for t in tiles)
    like = torch.zeros(1, 3, 96, 160, dtype=torch.float16)
    torch.manual_seed(0)
    results = [torch.rand(1, 3, t.ys.stop - t.ys.start, t.xs.stop - t.xs.start).half() for t in tiles]
    with _Ops() as ops:
        out = blend(tiles, lambda i, _: results[i], like)
    # the weights were built where they are used: no conversion or device copy per tile
    # (on CUDA, a host-to-device copy per tile and frame synchronises the stream)
    assert "aten._to_copy.default" not in ops.names
    # the same blend in float64: fp32 sums are within float rounding, fp16 sums are not
    expected = torch.zeros(1, 3, 96, 160, dtype=torch.float64)
    total = torch.zeros(1, 1, 96, 160, dtype=torch.float64)
    for t, r in zip(tiles, results):
        expected[..., t.ys, t.xs] += r.double() * t.weight.double()
        total[..., t.ys, t.xs] += t.weight.double()
    expected /= total
    assert out.dtype == torch.float32
    assert (out.double() - expected).abs().max() < 1e-6


def test_bench_compares_precisions_on_a_real_clip(tmp_path, sample_clip):
    out = tmp_path / "bench.json"
    result = run_cli("bench", "--preset", "tiny", "--clip", str(sample_clip), "--frames", "2", "--rounds", "1",
                 "--precision", "bf16,fp32", "--json", str(out))
    assert result.returncode == 0, result.stderr
    assert "bf16 against fp32: engine" in result.stdout
    data = json.loads(out.read_text())
    assert (data["config"]["width"], data["config"]["height"], data["config"]["frames"]) == (1280, 720, 2)
    assert [m["name"] for m in data["measurements"]] == [
        "bare networks [bf16]", "engine (numpy in, numpy out) [bf16]", "bare networks [fp32]", "engine (numpy in, numpy out) [fp32]"]
    [comparison] = data["comparisons"]
    assert comparison["configuration"] == "bf16" and comparison["reference"] == "fp32" and comparison["engine_speedup"] > 0
    # the same untrained networks in bf16: close to fp32, yet not identical
    assert 30 < comparison["psnr_db"] < 100 and comparison["max_difference"] >= 1


@pytest.mark.parametrize(
    "args,message",
    [
        (["--precision", "fp32,fp32"], "precision 'fp32' is listed twice in 'fp32,fp32'"),
        (["--precision", "auto,fp8"], "command line: precision must be one of auto, fp32, fp16, bf16; got 'fp8'"),
        (["--clip", "missing.mp4"], "clip not found: missing.mp4"),
    ],
)
def test_bench_refuses_bad_precision_lists_and_clips(args, message):
    result = run_cli("bench", "--preset", "tiny", "--frames", "1", "--rounds", "1", *args)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"vsdeblur bench: error: {message}"]
