"""The engine's graph backends (ONNX Runtime, OpenVINO) through every door: vsdeblur-stream,
the VapourSynth filter and batch run the shipped model on the sample clip within half an 8-bit
code value of PyTorch fp32, with the engine's padding, window and cuts unchanged. The graphs
are exported once per session into the session's private cache (conftest.private_cache)."""

from __future__ import annotations

import json
import sys

import av
import numpy as np
import pytest
import torch
import vapoursynth as vs

from tests.media import decoded, run_cli, to_arrays, to_clip, write_lossless
from vsdeblur.backends.graphs import GraphRunner
from vsdeblur.batch import resolved_settings, run_batch
from vsdeblur.engine import Deblurrer
from vsdeblur.backends.device import auto_precision
from vsdeblur.backends.runtime import Runtime, runtime_on
from vsdeblur.errors import UsageError
from vsdeblur.stream import stream
from vsdeblur.vs import atrous

GRAPH_BACKENDS = ["onnxruntime", "openvino"]
FRAMES = 4
HALF_CODE = 0.5 / 255


@pytest.fixture(scope="module")
def sample(sample_clip, tmp_path_factory) -> tuple[list[np.ndarray], object]:
    """The middle 256x144 of the sample clip's first frames, and a lossless RGB file of just
    them (FFV1)."""
    with av.open(str(sample_clip)) as source:
        frames = [_middle(f.to_ndarray(format="rgb24")) for _, f in zip(range(FRAMES), source.decode(video=0))]
    return frames, write_lossless(tmp_path_factory.mktemp("sample") / "sample.mkv", frames)


def _middle(rgb: np.ndarray, width: int = 256, height: int = 144) -> np.ndarray:
    top, left = (rgb.shape[0] - height) // 2, (rgb.shape[1] - width) // 2
    return np.ascontiguousarray(rgb[top : top + height, left : left + width])


@pytest.fixture(scope="module")
def reference(sample) -> list[np.ndarray]:
    """PyTorch fp32 on float frames: the output every backend is held to."""
    frames, _ = sample
    return list(Deblurrer(precision="fp32").frames([f.astype(np.float32) / 255 for f in frames]))


def code_distance(outputs: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """Largest difference in 8-bit code values between 8-bit outputs and float references."""
    assert len(outputs) == len(reference)
    return max(float(np.abs(o.astype(np.float64) - r.astype(np.float64) * 255).max()) for o, r in zip(outputs, reference, strict=True))


@pytest.mark.parametrize("backend", GRAPH_BACKENDS)
def test_backend_matches_pytorch_through_every_door(backend, sample, reference, tmp_path, monkeypatch):
    frames, path = sample
    graph_runs = []  # every door must run the graphs, not fall back to the modules
    # a spy on a private method: a fallback to the modules gives the same output, so no public output shows the graphs ran
    run = GraphRunner._run
    monkeypatch.setattr(GraphRunner, "_run", lambda self, *a: graph_runs.append(a[0]) or run(self, *a))

    def ran_graphs() -> bool:
        ran = {"stage1", "encode", "aggregate"} <= set(graph_runs)
        graph_runs.clear()
        return ran

    floats = [f.astype(np.float32) / 255 for f in frames]
    engine = Deblurrer(backend=backend, precision="fp32")
    assert engine.runtime.backend == backend
    out = list(engine.frames(floats))
    assert max(float(np.abs(a - b).max()) for a, b in zip(out, reference, strict=True)) <= HALF_CODE
    assert ran_graphs()

    planes = to_arrays(atrous(to_clip(floats, vs.RGBS), backend=backend, precision="fp32"))
    assert max(float(np.abs(a - b).max()) for a, b in zip(planes, reference, strict=True)) <= HALF_CODE
    assert ran_graphs()

    # files are 8-bit: rounding puts a value within half a code of the reference's at most
    # one code from the reference's own rounding
    settings = {"backend": backend, "precision": "fp32", "codec": "ffv1"}
    stream(path, tmp_path / "stream.mkv", settings, progress=False)
    assert code_distance(decoded(tmp_path / "stream.mkv"), reference) <= 0.5 + 0.5 + 1e-6
    assert ran_graphs()

    values = resolved_settings(None, {**settings, "device": "cpu", "workers": 1, "chunk_frames": 2})
    assert run_batch([str(path)], tmp_path / "batch", values).ok
    assert code_distance(decoded(tmp_path / "batch" / "sample.mkv"), reference) <= 0.5 + 0.5 + 1e-6
    assert ran_graphs()


@pytest.mark.parametrize("backend,package,extra", [("onnxruntime", "onnxruntime", "onnx"), ("openvino", "openvino", "openvino")])
def test_a_backend_that_is_not_installed_is_one_line(backend, package, extra, monkeypatch, tiny_weights):
    monkeypatch.setitem(sys.modules, package, None)  # what an absent package looks like to import
    with pytest.raises(UsageError, match=rf"^backend '{backend}' needs the {package} package: pip install 'vsdeblur\[{extra}\]'$"):
        Deblurrer(weights=tiny_weights, backend=backend)


def test_auto_takes_openvino_on_a_cpu_and_torch_without_it(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert runtime_on(cpu, "auto", "fp32") == Runtime(cpu, "openvino", "fp32")
    assert runtime_on(cpu, "auto", "bf16") == Runtime(cpu, "openvino", "bf16")
    assert runtime_on(cpu, "auto", "auto") == Runtime(cpu, "openvino", auto_precision(cpu)[0])
    assert runtime_on(cuda, "auto", "fp16") == Runtime(cuda, "torch", "fp16")
    assert runtime_on(cpu, "openvino", "bf16").export_precision == "fp32"  # OpenVINO computes bf16 from the fp32 graphs
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert runtime_on(cpu, "auto", "fp32") == Runtime(cpu, "torch", "fp32")


@pytest.mark.parametrize(
    "options,message",
    [
        ({"backend": "onnxruntime", "precision": "bf16"}, "backend 'onnxruntime' computes in fp32 on a CPU, not bf16"),
        ({"backend": "openvino", "precision": "fp16"}, "backend 'openvino' computes in fp32 or bf16 on a CPU, not fp16"),
        ({"backend": "tvm"}, "Deblurrer: backend must be one of auto, torch, onnxruntime, openvino, tensorrt; got 'tvm'"),
        ({"backend": "openvino", "compile": True}, "compile applies to backend torch; openvino optimises its graphs itself"),
    ],
)
def test_backend_errors_name_the_problem(options, message, tiny_weights):
    with pytest.raises(UsageError, match=f"^{message}$"):
        Deblurrer(weights=tiny_weights, **options)


def test_graph_backends_need_a_weights_file(tiny_weights):
    from vsdeblur.weights import read_weights

    weights = read_weights(tiny_weights)
    models = {s: weights.build(s) for s in (1, 2)}
    with pytest.raises(UsageError, match="runs exported graphs of a weights file"):
        Deblurrer.from_models(weights.preset, models, backend="onnxruntime")


def test_tensorrt_asks_for_a_gpu_and_its_precisions(tiny_weights):
    with pytest.raises(UsageError, match=r"^backend 'tensorrt' runs on an NVIDIA GPU; use device cuda, or backend torch on cpu$"):
        Deblurrer(weights=tiny_weights, backend="tensorrt", device="cpu")
    with pytest.raises(UsageError, match=r"^backend 'openvino' runs on the CPU; use device cpu, or backend torch on cuda$"):
        runtime_on(torch.device("cuda"), "openvino", "auto")
    trt = runtime_on(torch.device("cuda"), "tensorrt", "auto")
    assert trt == Runtime(torch.device("cuda"), "tensorrt", "fp16") and trt.export_precision == "fp16"
    with pytest.raises(UsageError, match=r"^backend 'tensorrt' computes in fp16 or fp32 on a GPU, not bf16$"):
        runtime_on(torch.device("cuda"), "tensorrt", "bf16")


def test_tensorrt_not_installed_is_one_line(monkeypatch, tiny_weights):
    from vsdeblur.backends.tensorrt import TensorRtBackend

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(UsageError, match=r"^backend 'tensorrt' needs the tensorrt package: pip install 'vsdeblur\[tensorrt\]'$"):
        TensorRtBackend(tiny_weights)


def test_tensorrt_profiles_follow_the_manifest_shapes():
    from vsdeblur.backends.tensorrt import dynamic_profile, engine_key, port_shape, static_profile

    level2 = {"name": "frame0_level2", "shape": ["N", 32, "H/4", "W/4"], "dtype": "float16"}
    centre = {"name": "centre", "shape": ["N", 3, "H", "W"], "dtype": "float32"}
    assert port_shape(level2, 1088, 1920) == (1, 32, 272, 480)
    spec = {"multiple": 16, "inputs": [centre, level2]}
    profile = dynamic_profile(spec, opt_size=(1920, 1080), max_size=(3840, 2160))
    assert profile["centre"] == ((1, 3, 16, 16), (1, 3, 1088, 1920), (1, 3, 2160, 3840))
    assert profile["frame0_level2"] == ((1, 32, 4, 4), (1, 32, 272, 480), (1, 32, 540, 960))
    assert static_profile({"centre": (1, 3, 368, 640)}) == {"centre": ((1, 3, 368, 640),) * 3}
    # an engine is rebuilt when its graph, shapes, TensorRT or GPU change, and only then
    key = engine_key("graph", profile, "11.4", "H200 sm90")
    assert key == engine_key("graph", dict(reversed(profile.items())), "11.4", "H200 sm90")
    others = [engine_key("other", profile, "11.4", "H200 sm90"), engine_key("graph", static_profile({"centre": (1, 3, 368, 640)}), "11.4", "H200 sm90"),
              engine_key("graph", profile, "10.8", "H200 sm90"), engine_key("graph", profile, "11.4", "RTX 4090 sm89")]
    assert key not in others and len(set(others)) == 4


def test_bench_compares_backends_side_by_side(tmp_path):
    out = tmp_path / "bench.json"
    result = run_cli("bench", "--preset", "tiny", "--size", "64x48", "--frames", "2", "--rounds", "1",
                 "--backend", "onnxruntime,torch", "--precision", "bf16,fp32", "--json", str(out))
    assert result.returncode == 0, result.stderr
    # ONNX Runtime has no bf16 on a CPU: that pair is left out, saying why
    assert "skipped onnxruntime bf16: backend 'onnxruntime' computes in fp32 on a CPU, not bf16" in result.stdout
    data = json.loads(out.read_text())
    assert data["config"]["backend"] == ["onnxruntime", "torch", "torch"]
    assert [m["name"] for m in data["measurements"]] == [
        f"{what} [{label}]" for label in ("onnxruntime fp32", "torch bf16", "torch fp32")
        for what in ("bare networks", "engine (numpy in, numpy out)")]
    onnx, bf16 = data["comparisons"]
    assert (onnx["configuration"], onnx["reference"], bf16["configuration"]) == ("onnxruntime fp32", "torch fp32", "torch bf16")
    assert onnx["max_difference"] <= 1 and onnx["engine_speedup"] > 0


def test_bench_refuses_a_backend_list_that_leaves_nothing():
    result = run_cli("bench", "--preset", "tiny", "--frames", "1", "--rounds", "1", "--backend", "onnxruntime", "--precision", "bf16")
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["vsdeblur bench: error: backend 'onnxruntime' computes in fp32 on a CPU, not bf16"]


def test_an_unusable_cache_is_one_line(tmp_path, monkeypatch, tiny_weights):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    with pytest.raises(UsageError, match=rf"^cannot create the ONNX cache {blocker}/vsdeblur/onnx: Not a directory; point XDG_CACHE_HOME at a writable folder$"):
        Deblurrer(weights=tiny_weights, backend="onnxruntime")


def test_a_stage_1_runner_loads_stage_1_alone(tiny_weights):
    from vsdeblur.backends.onnxruntime import OnnxRuntimeBackend

    runner = OnnxRuntimeBackend(tiny_weights, stage=1)
    x = torch.zeros(1, 3, 32, 32)
    assert runner.stage1(x).shape == x.shape
    with pytest.raises(UsageError, match=r": this runner has the graphs of stage 1 only, not encode$"):
        runner.encode(x)
