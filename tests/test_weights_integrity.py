"""Weights whose numbers are wrong although the file parses: a damaged data section, NaN in a
tensor, a network whose output overflows. Each stops with one line instead of black frames.
Real files in the real format, damaged byte by byte; the tiny preset on the CPU."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import save_file

from tests.media import make_weights, overflowing_weights
from vsdeblur.engine import Deblurrer
from vsdeblur.errors import UsageError, WeightsError
from vsdeblur.models import build_model, get_preset
from vsdeblur.stream import main as stream_main
from vsdeblur.weights import CHECKSUM_KEY, default_weights_path, read_weights, save_weights


def layout(path: Path) -> tuple[int, dict]:
    """Where a safetensors file's data section starts, and its header (tensor offsets in it)."""
    raw = path.read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    return 8 + size, json.loads(raw[8 : 8 + size])


def poke(path: Path, tensor: str, value: float) -> None:
    """Write `value` over the first element of a float32 tensor, in place in the file."""
    start, header = layout(path)
    assert header[tensor]["dtype"] == "F32"
    with path.open("r+b") as f:
        f.seek(start + header[tensor]["data_offsets"][0])
        f.write(struct.pack("<f", value))


def flip_a_bit(path: Path) -> None:
    """Flip one bit in the middle of the last tensor's data, in place in the file."""
    start, header = layout(path)
    name = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])
    begin, end = header[name]["data_offsets"]
    raw = bytearray(path.read_bytes())
    raw[start + (begin + end) // 2] ^= 0x04  # in float32 a low mantissa bit: the value stays finite and plausible
    path.write_bytes(raw)


def without_checksum(path: Path) -> None:
    """Rewrite a weights file as files were written before the checksum existed."""
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    del meta[CHECKSUM_KEY]
    save_file(tensors, str(path), metadata=meta)


def stream_error(*args: object) -> str:
    result = CliRunner().invoke(stream_main, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.fixture
def fresh(tmp_path: Path) -> Path:
    return make_weights(tmp_path / "w.safetensors", stages=(1,))


def test_saved_files_carry_a_checksum_of_their_tensors(fresh):
    with safe_open(str(fresh), framework="pt") as f:
        assert len(f.metadata()[CHECKSUM_KEY]) == 64
    read_weights(fresh)


def test_a_flipped_byte_in_the_data_is_found(fresh, tmp_path, sample_clip):
    flip_a_bit(fresh)
    with pytest.raises(WeightsError, match=r"w\.safetensors is damaged: its tensor data does not match the checksum"):
        read_weights(fresh)
    out = tmp_path / "out.mkv"
    assert "is damaged" in stream_error(sample_clip, out, "--weights", fresh, "--device", "cpu")
    assert not out.exists()


def test_nan_in_a_tensor_is_refused_with_or_without_a_checksum(fresh):
    name = "stage1.head.weight"
    poke(fresh, name, math.nan)
    with pytest.raises(WeightsError, match="is damaged"):
        read_weights(fresh)
    without_checksum(fresh)  # the finite check alone must catch it
    with pytest.raises(WeightsError, match=rf"w\.safetensors cannot be used: tensor {name} holds 1 NaN or infinite value \(of \d+\)"):
        read_weights(fresh)
    poke(fresh, name, math.inf)
    with pytest.raises(WeightsError, match=f"tensor {name} holds 1 NaN or infinite value"):
        Deblurrer(weights=fresh)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_every_storage_dtype_matches_its_checksum(tmp_path, dtype):
    # the header's checksum is checked from the file's bytes, which name dtypes their own way
    path = save_weights(tmp_path / "w.safetensors", get_preset("tiny"), {1: build_model("tiny", 1)}, dtype=dtype)
    assert read_weights(path).stages == (1,)
    flip_a_bit(path)
    with pytest.raises(WeightsError, match="is damaged"):
        read_weights(path)


def test_files_from_before_the_checksum_still_load(fresh):
    expected = read_weights(fresh).tensors
    without_checksum(fresh)
    loaded = read_weights(fresh).tensors
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_the_shipped_default_carries_a_checksum():
    path = default_weights_path()
    assert path is not None
    with safe_open(str(path), framework="pt") as f:
        assert CHECKSUM_KEY in f.metadata()
    read_weights(path)  # and it matches


def test_non_finite_tensors_are_never_written(tmp_path):
    cfg = get_preset("tiny")
    model = build_model(cfg, 1)
    with torch.no_grad():
        model.head.weight[0, 0, 0, 0] = math.nan
    with pytest.raises(WeightsError, match=r"refusing to write .*w\.safetensors: tensor stage1\.head\.weight holds 1 NaN"):
        save_weights(tmp_path / "w.safetensors", cfg, {1: model})
    # finite in float32, infinite once stored in float16 (what pipelines/train/ship.py does)
    with torch.no_grad():
        model.head.weight[0, 0, 0, 0] = 1e6
    with pytest.raises(WeightsError, match="holds 1 NaN or infinite value"):
        save_weights(tmp_path / "w.safetensors", cfg, {1: model}, dtype=torch.float16)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stage", [1, 2])
def test_a_network_output_that_is_not_finite_stops_the_engine(tmp_path, stage):
    weights = overflowing_weights(tmp_path / "huge.safetensors")
    frames = [np.random.default_rng(i).integers(0, 256, (40, 56, 3), dtype=np.uint8) for i in range(3)]
    with pytest.raises(UsageError, match="the network's output holds NaN or infinite values"):
        list(Deblurrer(weights=weights, stage=stage, device="cpu").frames(frames))


def test_a_network_output_that_is_not_finite_stops_the_stream(tmp_path, sample_clip):
    weights = overflowing_weights(tmp_path / "huge.safetensors")
    out = tmp_path / "out.mkv"
    line = stream_error(sample_clip, out, "--weights", weights, "--device", "cpu", "--stage", "1")
    assert "the network's output holds NaN or infinite values" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.safetensors"]


def test_a_folder_given_as_weights_is_called_a_folder(tmp_path, sample_clip):
    run = tmp_path / "run"
    run.mkdir()
    make_weights(run / "final.safetensors", stages=(1,))
    with pytest.raises(WeightsError, match=r"run is a folder, not a weights file; pass a \.safetensors file \(it holds final\.safetensors\)"):
        read_weights(run)
    assert "is a folder, not a weights file" in stream_error(sample_clip, tmp_path / "o.mkv", "--weights", run)
