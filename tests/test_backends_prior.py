"""Stage 1 reading the prior (models.stage1.PRIOR_CHANNELS) on every runner: PyTorch, ONNX
Runtime and OpenVINO give the same output for the same image and prior, and the prior changes
it; the prior is refused where the weights' stage 1 does not read it, and required where it
does; a blind stage 1 (the shipped default) exports as before, and a prior model never runs a
blind model's cached graph."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import onnx
import pytest
import torch

from vsdeblur.backends.export import MANIFEST, cached_export
from vsdeblur.backends.onnxruntime import OnnxRuntimeBackend
from vsdeblur.backends.runtime import Runtime
from vsdeblur.backends.tensorrt import dynamic_profile
from vsdeblur.models import build_model, get_preset
from vsdeblur.models.stage1 import PRIOR_CHANNELS
from vsdeblur.weights import Weights, read_weights, save_weights

CPU = torch.device("cpu")
SHAPES = [(1, 32, 48), (2, 64, 32)]  # N, H, W: two sizes and batches, each side a multiple of 16
# (backend, precision) -> the largest |runner - PyTorch fp32| accepted: fp32 runtimes agree to
# float rounding (measured: 1.5e-6 at most); bf16 keeps 8 bits of mantissa, and its residual
# misses by some 0.01 on this stage 1 and these inputs (measured: 0.0103 at most, either runner)
RUNNERS = {
    ("torch", "fp32"): 1e-5,
    ("onnxruntime", "fp32"): 1e-4,
    ("openvino", "fp32"): 1e-4,
    ("torch", "bf16"): 0.04,
    ("openvino", "bf16"): 0.04,
}
MISMATCH = "a stage 1 whose preset says prior takes the prior, and no other does; this one"


def prior_weights(path: Path, preset: str) -> Path:
    """A preset's untrained stage 1 (seed 0), widened to read the prior, with random weights on
    the prior's input channels (with_prior leaves them zero, and the prior would change
    nothing), as strong as the image's."""
    blind = get_preset(preset)
    reading = dataclasses.replace(blind, stage1=dataclasses.replace(blind.stage1, prior=True))
    torch.manual_seed(0)
    network = build_model(blind, 1).with_prior()
    with torch.no_grad():
        head = network.head.weight
        head[:, 3:] = torch.randn_like(head[:, 3:]) * head[:, :3].std()
    return save_weights(path, reading, {1: network}, recipe={"note": "untrained, reading the prior, for tests"})


@pytest.fixture(scope="module")
def small_prior(tmp_path_factory) -> Weights:
    return read_weights(prior_weights(tmp_path_factory.mktemp("weights") / "small-prior.safetensors", "small"))


def inputs(n: int, h: int, w: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An image in [-1, 1] and a prior: a deconvolved image in [-1, 1], a blur vector of a few
    pixels and a confidence in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    image, deconvolved = (torch.rand(n, 3, h, w, generator=generator) * 2 - 1 for _ in range(2))
    blur = torch.randn(n, 2, h, w, generator=generator) * 4
    confidence = torch.rand(n, 1, h, w, generator=generator)
    return image, torch.cat([deconvolved, blur, confidence], dim=1)


def runner_of(weights: Weights, backend: str, precision: str):
    """The engine's runner of stage 1 alone for a backend and precision on the CPU."""
    return Runtime(CPU, backend, precision).runner(weights, {1: weights.build(1)})


@pytest.mark.parametrize("backend,precision", list(RUNNERS))
def test_every_runner_reads_the_prior_as_pytorch_does(backend, precision, small_prior):
    reference, runner = runner_of(small_prior, "torch", "fp32"), runner_of(small_prior, backend, precision)
    tolerance = RUNNERS[backend, precision]
    for seed, shape in enumerate(SHAPES):
        x, prior = inputs(*shape, seed)
        with torch.no_grad():
            expected, got = reference.stage1(x, prior), runner.stage1(x, prior)
            other_prior = runner.stage1(x, inputs(*shape, seed + 10)[1])
        assert got.shape == x.shape
        assert (got.float() - expected).abs().max() <= tolerance
        # the prior matters: far more than the runner's own error
        assert (other_prior.float() - got.float()).abs().max() > 0.2


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino"])
def test_a_prior_is_taken_exactly_where_the_stage_1_reads_it(backend, small_prior, tiny_weights):
    x, prior = inputs(1, 32, 32, seed=0)
    with pytest.raises(ValueError, match=f"^{MISMATCH} reads the prior: pass one$"):
        runner_of(small_prior, backend, "fp32").stage1(x)
    blind = runner_of(read_weights(tiny_weights), backend, "fp32")
    with pytest.raises(ValueError, match=f"^{MISMATCH} is blind: pass no prior$"):
        blind.stage1(x, prior)
    assert blind.stage1(x).shape == x.shape


def test_the_shipped_blind_stage_1_exports_with_the_image_alone():
    runner = OnnxRuntimeBackend(None, stage=1)  # the shipped default, exported into the session's cache
    description = json.loads((runner.folder / MANIFEST).read_text())
    assert description["preset"]["stage1"]["prior"] is False
    assert description["graphs"]["stage1"]["inputs"] == [{"name": "input", "shape": ["N", 3, "H", "W"], "dtype": "float32"}]
    graph = onnx.load(str(runner.folder / "stage1.onnx")).graph
    assert [port.name for port in graph.input] == ["input"]
    assert [port.name for port in graph.output] == ["output"]


def test_a_prior_graph_has_its_second_input_beside_the_image(small_prior):
    folder = cached_export(small_prior)
    spec = json.loads((folder / MANIFEST).read_text())["graphs"]["stage1"]
    prior = {"name": "prior", "shape": ["N", len(PRIOR_CHANNELS), "H", "W"], "dtype": "float32"}
    assert spec["inputs"] == [{"name": "input", "shape": ["N", 3, "H", "W"], "dtype": "float32"}, prior]
    assert [port.name for port in onnx.load(str(folder / spec["file"])).graph.input] == ["input", "prior"]
    # TensorRT's optimisation profile (not installed here) binds every input the manifest lists
    profile = dynamic_profile(spec, opt_size=(1920, 1080), max_size=(3840, 2160))
    assert profile["prior"] == ((1, 6, 2, 2), (1, 6, 1080, 1920), (1, 6, 2160, 3840))
    assert profile["input"] == ((1, 3, 2, 2), (1, 3, 1080, 1920), (1, 3, 2160, 3840))


def test_a_prior_model_never_runs_a_blind_cached_graph(tiny_weights_stage1, tmp_path, capsys):
    reading = read_weights(prior_weights(tmp_path / "tiny-prior.safetensors", "tiny"))
    folder = cached_export(reading, root=tmp_path / "cache")
    # the blind model's export, put where the prior model's is, its manifest claiming the prior
    # model's tensors: what the cache key alone would take for the prior model's graphs
    blind = cached_export(read_weights(tiny_weights_stage1), root=tmp_path / "blind")
    description = json.loads((blind / MANIFEST).read_text())
    description["weights_tensors_sha256"] = json.loads((folder / MANIFEST).read_text())["weights_tensors_sha256"]
    shutil.rmtree(folder)
    shutil.copytree(blind, folder)
    (folder / MANIFEST).write_text(json.dumps(description))
    capsys.readouterr()

    runner = OnnxRuntimeBackend(reading, cache=tmp_path / "cache")
    assert runner.folder == folder
    assert "its stage-1 graph takes input, not input, prior; exporting tiny-prior.safetensors (fp32) again" in capsys.readouterr().err
    x, prior = inputs(1, 32, 32, seed=0)
    with torch.no_grad():
        expected = runner_of(reading, "torch", "fp32").stage1(x, prior)
    assert (runner.stage1(x, prior) - expected).abs().max() <= 1e-4
