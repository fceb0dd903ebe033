"""The option schema: one source of defaults for flags, TOML files and keyword arguments."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from vsdeblur.config import BLUR, ENCODE, ENGINE, SYNTH, TRAIN, EngineSettings, load_toml, resolve
from vsdeblur.engine import Deblurrer
from vsdeblur.errors import UsageError


def test_engine_settings_are_the_schema_checked_and_frozen():
    settings = EngineSettings()
    assert settings.as_dict() == ENGINE.defaults()
    assert [f.name for f in dataclasses.fields(settings)] == [o.name for o in ENGINE.options]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.tile = 64
    with pytest.raises(UsageError, match="tile must be at least 0; got -4"):
        settings.replace(tile=-4)
    assert EngineSettings.of({"tile": 64, "codec": "libx264"}) == EngineSettings(tile=64)  # other groups' keys ignored


def test_deblurrer_takes_settings_or_checked_keywords(tiny_weights):
    with pytest.raises(UsageError, match="Deblurrer: unknown option 'tiles'"):
        Deblurrer(weights=tiny_weights, tiles=64)
    with pytest.raises(UsageError, match="precision must be one of auto, fp32, fp16, bf16; got 'fp8'"):
        Deblurrer(weights=tiny_weights, precision="fp8")
    engine = Deblurrer(EngineSettings(weights=tiny_weights, precision="bf16"), precision="fp32")  # keywords replace
    assert engine.settings == EngineSettings(weights=tiny_weights, precision="fp32")
    assert engine.runtime.precision == "fp32"


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


def test_blur_defaults_are_those_of_the_classes_that_draw_the_blur():
    """BLUR holds its defaults as literals (config.py imports no torch); the dataclasses that
    draw the blur have their own. Each option's default must be its field's."""
    from dataclasses import MISSING, fields

    from vsdeblur.blur import CameraSpec, ExtrasSpec, ShakeSpec
    from vsdeblur.train.data import BlurRecipe

    field_defaults: dict[str, object] = {}
    for spec in (CameraSpec, BlurRecipe, ExtrasSpec, ShakeSpec):  # the shake's lengths win over the camera's
        field_defaults |= {f.name: f.default for f in fields(spec) if f.default is not MISSING}
    for option in BLUR.options:
        assert option.default == field_defaults[option.name], option.name


def test_synth_shares_the_blur_options_it_draws_kernels_with():
    assert all(SYNTH[name] is BLUR[name] for name in ("min_length", "max_length", "max_curvature", "kernel_size"))


def test_a_base_file_is_that_file_with_the_keys_given_replaced(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "base.toml").write_text('weights = "models/a.safetensors"\ntile = 512\n[encode]\ncrf = 20\ncodec = "libx265"\n')
    job = tmp_path / "job.toml"
    job.write_text('base = "shared/base.toml"\n[engine]\ntile = 256\n[encode]\ncrf = 16\n')
    values = resolve([ENGINE, ENCODE], job, {"codec": "ffv1"})
    assert values["weights"] == tmp_path / "shared" / "models" / "a.safetensors"  # from the folder of the file that names it
    assert (values["tile"], values["crf"], values["codec"]) == (256, 16, "ffv1")  # table keys one by one; the flag last
    (tmp_path / "shared" / "base.toml").write_text('base = "../job.toml"\n')
    with pytest.raises(UsageError, match="base recipes form a loop"):
        load_toml(job, [ENGINE, ENCODE])


RECIPE_SOURCES = '[[train_data]]\nkind = "images"\npath = "photos"\n'


@pytest.mark.parametrize(
    "text,message",
    [
        ("max_noise = 0.1\n" + RECIPE_SOURCES, "unknown key 'max_noise' in the top level; known keys: stage, preset"),
        ("blur = 3\n" + RECIPE_SOURCES, r"\[blur\] must be a table"),
        ("[blur]\nsteps = 3\n", r"unknown key 'steps' in \[blur\]; known keys: min_length"),
        ("[blur]\nmax_shutter = 2.0\n", "max_shutter must be at most 1.0; got 2.0"),
        ("train_data = [1]\n", r"train_data entries must be tables \(\[\[train_data\]\]\)"),
        ('[[val_data]]\nkind = "images"\npath = 3\n', r"path in \[\[val_data\]\] must be a string, not 3"),
        ("base = 3\n", "base must be the file name of another recipe, not 3"),
    ],
)
def test_bad_training_recipes_get_one_clear_line(tmp_path, text, message):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(text)
    with pytest.raises(UsageError, match=message) as info:
        load_toml(recipe, [TRAIN, BLUR])
    assert "\n" not in str(info.value)


def test_paths_in_arrays_of_tables_are_taken_from_the_file_and_resolved_on_request(tmp_path):
    (tmp_path / "recipes").mkdir()
    recipe = tmp_path / "recipes" / "r.toml"
    recipe.write_text('output = "../runs/r"\n' + RECIPE_SOURCES + '[[train_data]]\nkind = "dead-leaves"\n')
    as_written = load_toml(recipe, [TRAIN, BLUR])
    assert as_written["output"] == tmp_path / "recipes" / ".." / "runs" / "r"
    assert as_written["train_data"] == [{"kind": "images", "path": str(tmp_path / "recipes" / "photos")}, {"kind": "dead-leaves"}]
    resolved = load_toml(recipe, [TRAIN, BLUR], absolute_paths=True)
    assert resolved["output"] == (tmp_path / "runs" / "r").resolve()


@pytest.mark.parametrize(
    "value,expected",
    [("auto", "auto"), ("180deg", 0.5), ("360deg", 1.0), ("0.25", 0.25), (0.5, 0.5), (1, 1.0), (" 90DEG ", 0.25)],
)
def test_shutter_is_a_share_an_angle_or_auto(value, expected):
    assert EngineSettings(shutter=value).shutter == expected


@pytest.mark.parametrize(
    "value,message",
    [
        ("1.5", "shutter must lie in (0, 1]"),
        ("0", "shutter must lie in (0, 1]"),
        ("nan", "shutter must lie in (0, 1]"),
        ("400deg", "shutter angle must lie in (0, 360] degrees; got '400deg'"),
        ("0deg", "shutter angle must lie in (0, 360] degrees; got '0deg'"),
        ("fast", "shutter must be auto, a share of the frame interval in (0, 1] or an angle such as 180deg; got 'fast'"),
    ],
)
def test_a_bad_shutter_is_one_line_and_exit_2(value, message, sample_clip, tmp_path):
    import subprocess
    import sys

    output = tmp_path / "out.mkv"
    done = subprocess.run([sys.executable, "-m", "vsdeblur.stream", str(sample_clip), str(output), "--shutter", value],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and message in done.stderr
    assert not output.exists()


def test_shutter_in_a_job_file(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text('shutter = "172.8deg"\n')
    assert resolve([ENGINE], job, {})["shutter"] == pytest.approx(0.48)
    job.write_text("shutter = 2\n")
    with pytest.raises(UsageError, match=r"job.toml: shutter must lie in \(0, 1\]"):
        resolve([ENGINE], job, {})


def test_the_recipes_padding_choices_are_the_presets_table():
    """config.py imports no torch, so TRAIN's padding key lists its words itself: they must be
    presets.PADDINGS, the table the networks are built from."""
    from vsdeblur.models.presets import PADDINGS

    assert TRAIN["padding"].choices == PADDINGS
