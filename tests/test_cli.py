"""The `vsdeblur` command: info and bench, run as a user runs them (a subprocess)."""

from __future__ import annotations

import json
from importlib.metadata import version

import pytest

from tests.media import REPO, run_cli


def test_info_reports_versions_devices_plugin_and_weights():
    result = run_cli("info")
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines() if not line.startswith(("av /", "default")))
    assert lines["vsdeblur"].strip() == "0.1.0"
    assert "cpu" in lines["device"]
    assert "core.deblur" in lines["vapoursynth"]
    assert "default weights" in result.stdout
    backends = [line.split(None, 1)[1] for line in result.stdout.splitlines() if line.startswith("backend ")]
    assert backends[:2] == [f"onnxruntime: onnxruntime {version('onnxruntime')}", f"openvino: openvino {version('openvino')}"]
    assert backends[3] == "auto on cpu: openvino"


def test_bench_prints_a_table_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    result = run_cli("bench", "--preset", "tiny", "--stage", "2", "--size", "96x64", "--frames", "3", "--json", str(out))
    assert result.returncode == 0, result.stderr
    assert "bare networks" in result.stdout and "engine (numpy in, numpy out)" in result.stdout
    data = json.loads(out.read_text())
    assert data["config"]["preset"] == "tiny" and data["config"]["stage"] == 2
    assert [m["frames"] for m in data["measurements"]] == [3, 3]
    assert all(m["fps"] > 0 for m in data["measurements"])
    assert isinstance(data["engine_overhead"], float)


def test_bench_times_the_shipped_wide_window_stage2():
    # the bare-network timing builds the window itself: it must be as wide as the weights'
    weights = REPO / "vsdeblur" / "weights" / "default.safetensors"
    result = run_cli("bench", "--weights", str(weights), "--stage", "2", "--size", "64x48", "--frames", "2", "--rounds", "1")
    assert result.returncode == 0, result.stderr
    assert "stage 2" in result.stdout and "bare networks" in result.stdout


def test_bench_batch_reports_local_and_ray_ratios(tmp_path, tiny_weights_stage1):
    pytest.importorskip("ray")
    out = tmp_path / "bench.json"
    result = run_cli("bench", "--weights", str(tiny_weights_stage1), "--size", "64x48", "--frames", "2", "--rounds", "1",
                 "--batch", "--batch-files", "2", "--json", str(out))
    assert result.returncode == 0, result.stderr
    assert "batch local fps / stream one after another fps" in result.stdout
    data = json.loads(out.read_text())
    assert data["config"]["batch_files"] == 2
    batch = {m["name"]: m for m in data["measurements"][2:]}
    assert list(batch) == ["stream, one file after another", "batch, local executor", "batch, ray executor"]
    assert all(m["frames"] == 4 and m["fps"] > 0 for m in batch.values())
    assert data["batch_local_ratio"] > 0 and data["batch_ray_cost"] > -1


def test_bad_arguments_give_one_line_and_exit_2():
    result = run_cli("bench", "--size", "12x1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["vsdeblur bench: error: size 12x1 is too small: at least 32x32"]
    result = run_cli("bench", "--preset", "nope")
    assert result.returncode == 2
    assert "unknown preset 'nope'" in result.stderr
