"""The option schema: one source of defaults for flags, TOML files and keyword arguments."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from vsdeblur.config import ENGINE, load_toml, resolve
from vsdeblur.engine import Deblurrer
from vsdeblur.errors import UsageError


def test_deblurrer_defaults_come_from_the_schema():
    params = inspect.signature(Deblurrer).parameters
    for option in ENGINE.options:
        assert params[option.name].default == option.default, option.name


def test_toml_flat_or_in_tables_and_flags_override(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text('tile = 512\n[engine]\nprecision = "bf16"\nensemble = true\n')
    values = resolve([ENGINE], job, {"tile": 256, "device": None})
    assert values["tile"] == 256  # the flag wins over the file
    assert values["precision"] == "bf16" and values["ensemble"] is True  # the file wins over defaults
    assert values["device"] == "auto"  # untouched default


@pytest.mark.parametrize(
    "text,message",
    [
        ("tiles = 3\n", "unknown key 'tiles' in the top level"),
        ("[engine]\ncodec = 'x'\n", r"unknown key 'codec' in \[engine\]"),
        ("precision = 'fp8'\n", "precision must be one of auto, fp32, fp16, bf16; got 'fp8'"),
        ("tile = 'big'\n", "tile must be an integer, not 'big'"),
        ("tile = -4\n", "tile must be at least 0; got -4"),
        ("ensemble = 1\n", "ensemble must be true or false, not 1"),
        ("scene_threshold = 2.0\n", "scene_threshold must be at most 1.0"),
        ("tile = [\n", "is not valid TOML"),
    ],
)
def test_bad_toml_gets_one_clear_line(tmp_path, text, message):
    job = tmp_path / "job.toml"
    job.write_text(text)
    with pytest.raises(UsageError, match=message) as info:
        load_toml(job, [ENGINE])
    assert "\n" not in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(UsageError, match="config file not found"):
        load_toml(tmp_path / "none.toml", [ENGINE])


def test_paths_in_a_job_file_are_taken_from_its_folder(tmp_path, monkeypatch):
    """`weights = "models/a.safetensors"` means the file beside the job, from any folder; a path
    on the command line stays relative to the current folder."""
    (tmp_path / "jobs").mkdir()
    job = tmp_path / "jobs" / "job.toml"
    monkeypatch.chdir(tmp_path)
    job.write_text('weights = "models/a.safetensors"\n')
    assert load_toml(job, [ENGINE])["weights"] == tmp_path / "jobs" / "models" / "a.safetensors"
    assert load_toml(Path("jobs/job.toml"), [ENGINE])["weights"] == Path("jobs/models/a.safetensors")
    job.write_text(f'[engine]\nweights = "{tmp_path / "elsewhere.safetensors"}"\n')
    assert load_toml(job, [ENGINE])["weights"] == tmp_path / "elsewhere.safetensors"
    job.write_text('weights = "~/w.safetensors"\n')
    assert load_toml(job, [ENGINE])["weights"] == Path.home() / "w.safetensors"
    job.write_text('weights = "a.safetensors"\n')
    values = resolve([ENGINE], job, {"weights": Path("b.safetensors")})
    assert values["weights"] == Path("b.safetensors")  # the flag, as given
