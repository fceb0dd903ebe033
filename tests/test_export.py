"""`vsdeblur export` and the runners of its graphs (ONNX Runtime, OpenVINO), against the PyTorch
networks the graphs came from."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.media import REPO, run_cli
from vsdeblur.backends.onnxruntime import OnnxRuntimeBackend
from vsdeblur.backends.openvino import OpenVinoBackend
from vsdeblur.errors import UsageError
from vsdeblur.backends.export import MANIFEST, aggregate_inputs, cached_export, export_onnx
from vsdeblur.models import Preset, fold_scales, get_preset
from vsdeblur.weights import read_weights

RUNNERS = [OnnxRuntimeBackend, OpenVinoBackend]
SHAPES = [(1, 32, 48), (2, 64, 32)]  # N, H, W: two sizes and batches, each side a multiple of 16


@pytest.fixture(scope="module")
def exported(tiny_weights, tmp_path_factory):
    """The tiny model's graphs, exported as a user does."""
    folder = tmp_path_factory.mktemp("export") / "tiny-onnx"
    result = run_cli("export", str(tiny_weights), "--output", str(folder))
    assert result.returncode == 0, result.stderr
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == ["stage1", "encode", "aggregate"]
    return folder


@pytest.fixture(scope="module")
def networks(tiny_weights):
    weights = read_weights(tiny_weights)
    return {stage: fold_scales(weights.build(stage)).eval() for stage in (1, 2)}


def frames(n: int, h: int, w: int, count: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(n, 3, h, w, generator=generator) * 2 - 1 for _ in range(count)]


def test_export_writes_three_graphs_and_their_description(exported):
    assert sorted(p.name for p in exported.iterdir()) == sorted(["stage1.onnx", "encode.onnx", "aggregate.onnx", MANIFEST])
    assert not list(exported.parent.glob(".*.part")), "the partial folder is left behind"
    description = json.loads((exported / MANIFEST).read_text())
    tiny = get_preset("tiny")
    assert Preset.from_dict(description["preset"]) == tiny and description["stages"] == [1, 2]
    assert description["radius"] == 1 and description["multiples"] == {"1": 2, "2": 16}
    assert (description["value_range"], description["layout"], description["channels"]) == ([-1.0, 1.0], "NCHW", "RGB")
    graphs = description["graphs"]
    assert graphs["stage1"]["inputs"] == [{"name": "input", "shape": ["N", 3, "H", "W"], "dtype": "float32"}]
    assert [p["name"] for p in graphs["encode"]["outputs"]] == [f"level{i}" for i in range(5)]
    assert graphs["encode"]["outputs"][4]["shape"] == ["N", 8, "H/16", "W/16"]
    # the centre image, the centre's full-resolution features, levels 1-4 of each of 3 frames
    names = [p["name"] for p in graphs["aggregate"]["inputs"]]
    assert names == [p.name for p in aggregate_inputs(tiny)] and len(names) == 2 + 3 * 4
    assert names[:3] == ["centre", "frame1_level0", "frame0_level1"]
    assert all(diff < 1e-4 for diff in description["check"]["max_abs_diff"].values()), description["check"]


@pytest.mark.parametrize("runner", RUNNERS, ids=lambda r: r.name)
def test_runner_matches_pytorch_on_two_sizes(runner, exported, networks):
    backend = runner(exported)
    stage1, mlfa = networks[1], networks[2]
    for seed, (n, h, w) in enumerate(SHAPES):
        window = frames(n, h, w, 3, seed)
        with torch.no_grad():
            assert (backend.stage1(window[0]) - stage1(window[0])).abs().max() < 1e-4
            pyramid, expected = backend.encode(window[0]), mlfa.encode(window[0])
            assert [t.shape for t in pyramid] == [t.shape for t in expected]
            assert max((a - b).abs().max() for a, b in zip(pyramid, expected)) < 1e-4
            # the window as the engine runs it: each frame encoded once, then aggregated
            restored = backend.aggregate([backend.encode(f) for f in window], window[1])
            assert restored.shape == (n, 3, h, w)
            assert (restored - mlfa(window)).abs().max() < 1e-4


def test_a_weights_file_is_exported_into_the_cache_once_in_fp16(tiny_weights_stage1, tmp_path):
    folder = cached_export(read_weights(tiny_weights_stage1), "fp16", tmp_path)
    assert list(tmp_path.iterdir()) == [folder]
    description = json.loads((folder / MANIFEST).read_text())
    assert description["stages"] == [1] and description["precision"] == "fp16"
    written = (folder / MANIFEST).stat().st_mtime_ns
    x = frames(1, 32, 48, 1, seed=5)[0]
    assert cached_export(read_weights(tiny_weights_stage1), "fp16", tmp_path) == folder
    assert (folder / MANIFEST).stat().st_mtime_ns == written, "the cached export was written again"
    # a runner takes an export folder as it is (vs-mlrt users run the fp16 graphs on ONNX
    # Runtime); the engine's ONNX Runtime backend computes in fp32 only
    backend = OnnxRuntimeBackend(folder)
    with pytest.raises(UsageError, match="^backend 'onnxruntime' computes in fp32, not fp16$"):
        OnnxRuntimeBackend(tiny_weights_stage1, precision="fp16", cache=tmp_path)
    restored = backend.stage1(x)
    assert restored.dtype == torch.float32  # images stay float32 around an fp16 network
    with torch.no_grad():
        expected = fold_scales(read_weights(tiny_weights_stage1).build(1)).eval()(x)
    assert (restored - expected).abs().max() < 1e-2
    with pytest.raises(UsageError, match="stage 1 only"):
        backend.encode(x)


@pytest.mark.parametrize("runner, package, extra", [(OnnxRuntimeBackend, "onnxruntime", "onnx"), (OpenVinoBackend, "openvino", "openvino")])
def test_a_missing_runtime_is_one_line_naming_the_extra(runner, package, extra, tiny_weights, monkeypatch):
    monkeypatch.setitem(sys.modules, package, None)  # `import package` now fails as when it is not installed
    with pytest.raises(UsageError) as caught:
        runner(tiny_weights)
    assert str(caught.value) == f"backend '{package}' needs the {package} package: pip install 'vsdeblur[{extra}]'"


def test_export_without_the_exporter_is_one_line(tiny_weights, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(UsageError, match=r"needs the onnxscript package: pip install 'vsdeblur\[onnx\]'"):
        export_onnx(read_weights(tiny_weights), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_refuses_bad_weights_and_a_non_empty_output(tiny_weights, tmp_path):
    result = run_cli("export", str(tmp_path / "missing.safetensors"), "--output", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"vsdeblur export: error: weights file not found: {tmp_path / 'missing.safetensors'}"]
    assert not (tmp_path / "out").exists()

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    result = run_cli("export", str(tiny_weights), "--output", str(taken))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"vsdeblur export: error: {taken} exists and is not an empty folder; choose a new one"]
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]


def test_openvino_sends_no_telemetry(exported, tmp_path):
    # importing openvino registers a client id under ~/intel and sends a usage event unless
    # telemetry is opted out; vsdeblur must neither write there nor phone home
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    code = (
        "import os, sys\n"
        "from vsdeblur.backends.openvino import OpenVinoBackend\n"
        f"OpenVinoBackend({str(exported)!r})\n"
        "assert 'CI' not in os.environ\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "intel").exists()
