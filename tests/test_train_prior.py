"""Training a stage 1 that reads the motion prior: its samples, its start and its run."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vsdeblur.engine import Deblurrer
from vsdeblur.errors import UsageError
from vsdeblur.models.stage1 import PRIOR_CHANNELS
from vsdeblur.train.data import Sample
from vsdeblur.train.loop import StepBatches, Trainer, load_config
from vsdeblur.train.prior import PriorRecipe, prior_crop
from vsdeblur.weights import read_weights

from tests.media import panning_frames, write_png

SHIPPED = Path(__file__).parents[1] / "vsdeblur/weights/default.safetensors"


def write_config(tmp_path, text: str = "") -> Path:
    path = tmp_path / "train.toml"
    path.write_text(
        'stage = 1\npreset = "tiny"\nprior = true\nprior_view = 96\nsteps = 2\nbatch = 2\ncrop = 48\nseed = 3\n'
        "validate_every = 100\ncheckpoint_every = 1\nlog_every = 1\nworkers = 0\n"
        '[blur]\ncamera_probability = 1.0\nmax_length = 8.0\n[[train_data]]\nkind = "dead-leaves"\npool = 4\nside = 160\n' + text
    )
    return path


def _panned_sample(shutter: float | None = 0.5) -> Sample:
    frames = np.stack(panning_frames(3, step=6, width=96, height=96, blur=3)).astype(np.float32) / 255
    return Sample(frames, frames, shutter)


def test_a_sample_without_neighbours_gets_the_blind_prior():
    blurred, _, planes = prior_crop(_panned_sample(), np.random.default_rng(0), PriorRecipe(96, 1.0, 0.0), 48)
    assert planes.shape == (len(PRIOR_CHANNELS), 48, 48)
    # no motion: the deconvolution is the frame itself, no blur, no confidence
    assert np.abs(planes[:3] - (blurred.transpose(2, 0, 1) * 2 - 1)).max() < 1e-5
    assert not planes[3:].any()


def test_a_sample_with_neighbours_gets_their_motion_at_the_shutter():
    recipe = PriorRecipe(96, 0.0, 1.0)  # always the true shutter
    _, _, short = prior_crop(_panned_sample(0.25), np.random.default_rng(0), recipe, 96)
    _, _, long = prior_crop(_panned_sample(1.0), np.random.default_rng(0), recipe, 96)
    confident = long[5] > 0.5
    assert confident.mean() > 0.5
    # a pan of 6 px a frame: the chord is 6 x shutter px along x (in BLUR_UNITs of 8 px)
    assert np.median(np.abs(long[3][confident])) * 8 == pytest.approx(6.0, rel=0.1)
    assert np.median(np.abs(short[3][confident])) * 8 == pytest.approx(1.5, rel=0.1)


def test_prior_batches_hold_the_centre_frame_and_its_planes(tmp_path):
    config = load_config(write_config(tmp_path), {"output": tmp_path / "run"})
    assert config.frames() == 3
    blurred, sharp, planes = StepBatches(config.mixture(), 1, 2, 48, config.frames(), config.prior_recipe())[0]
    assert blurred.shape == sharp.shape == (2, 1, 3, 48, 48) and planes.shape == (2, len(PRIOR_CHANNELS), 48, 48)
    again = StepBatches(config.mixture(), 1, 2, 48, config.frames(), config.prior_recipe())[0]
    assert all(torch.equal(a, b) for a, b in zip((blurred, sharp, planes), again))


def test_training_on_the_prior_starts_as_the_shipped_model(tmp_path):
    config = load_config(write_config(tmp_path), {"output": tmp_path / "run", "preset": "small", "init_weights": SHIPPED})
    model = Trainer(config, out=io.StringIO()).model.eval()
    shipped = read_weights(SHIPPED).build(1).eval()
    assert model.cfg.prior
    x, planes = torch.rand(1, 3, 32, 32) * 2 - 1, torch.randn(1, len(PRIOR_CHANNELS), 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x, planes), shipped(x), atol=1e-5)  # the added channels weigh zero


def test_a_prior_run_exports_weights_the_engine_reads_the_prior_with(tmp_path):
    Trainer(load_config(write_config(tmp_path), {"output": tmp_path / "run"}), out=io.StringIO()).run()
    weights = tmp_path / "run" / "final.safetensors"
    assert read_weights(weights).preset.stage1.prior
    engine = Deblurrer(weights=weights)
    assert engine.reads_prior
    frames = panning_frames(3)
    assert all(o.shape == f.shape for o, f in zip(engine.frames(frames), frames))


def test_a_checkpoint_of_the_other_input_layout_is_refused_in_one_line(tmp_path):
    Trainer(load_config(write_config(tmp_path), {"output": tmp_path / "run", "prior": False, "steps": 1}), out=io.StringIO()).run()
    with pytest.raises(UsageError, match="of preset 'tiny', not of this run's stage 1 of 'tiny' reading the motion prior"):
        Trainer(load_config(write_config(tmp_path), {"output": tmp_path / "run"}), out=io.StringIO()).run()


def test_a_zero_padded_run_starts_from_the_shipped_weights_and_says_so_in_its_weights(tmp_path):
    config = load_config(write_config(tmp_path), {"output": tmp_path / "run", "preset": "small", "init_weights": SHIPPED, "padding": "zeros"})
    model = Trainer(config, out=io.StringIO()).model.eval()
    shipped = read_weights(SHIPPED).build(1).eval()
    assert model.cfg.padding == "zeros" and shipped.cfg.padding == "reflect"
    x, planes = torch.rand(1, 3, 128, 128) * 2 - 1, torch.randn(1, len(PRIOR_CHANNELS), 128, 128)
    with torch.no_grad():
        ours, theirs = model(x, planes), shipped(x)
    inside = (..., slice(48, -48), slice(48, -48))  # beyond small's receptive radius of the edges
    assert torch.allclose(ours[inside], theirs[inside], atol=1e-5) and not torch.allclose(ours, theirs, atol=1e-3)
    Trainer(load_config(write_config(tmp_path), {"output": tmp_path / "tiny", "padding": "zeros"}), out=io.StringIO()).run()
    assert read_weights(tmp_path / "tiny" / "final.safetensors").build(1).cfg.padding == "zeros"


@pytest.mark.parametrize("overrides, message", [
    ({"stage": 2, "stage1_weights": SHIPPED}, "prior is a stage-1 input: it needs stage = 1"),
    ({"stage": 2, "stage1_weights": SHIPPED, "prior": False, "padding": "zeros"}, "padding is a stage-1 setting: it needs stage = 1"),
    ({"padding": "circular"}, "padding must be one of reflect, zeros; got 'circular'"),
    ({"prior_view": 64, "crop": 80}, r"prior_view \(64\) must be at least the crop \(80\)"),
])
def test_bad_prior_recipes_are_one_line(tmp_path, overrides, message):
    with pytest.raises(UsageError, match=message):
        load_config(write_config(tmp_path), overrides)


def test_a_bank_is_filled_once_and_trained_on(tmp_path):
    bank = tmp_path / "bank"
    recipe = write_config(tmp_path, "")
    recipe.write_text(recipe.read_text().replace("prior_view = 96\n", f"prior_view = 96\nprior_bank = \"{bank}\"\n"))
    fill = [sys.executable, str(Path(__file__).parents[1] / "pipelines/train/prior_bank.py"), "--config", str(recipe), "--count", "3"]
    first = subprocess.run(fill, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in bank.glob("*.npz")) == ["000000.npz", "000001.npz", "000002.npz"]
    stored = {p.name: p.stat().st_mtime_ns for p in bank.glob("*.npz")}
    again = subprocess.run(fill, capture_output=True, text=True, timeout=600)
    assert "0 samples made" in again.stdout and stored == {p.name: p.stat().st_mtime_ns for p in bank.glob("*.npz")}
    (bank / "000001.npz").unlink()  # a bank filled by parts has gaps while it fills
    config = load_config(recipe, {"output": tmp_path / "run"})
    blurred, sharp, planes = StepBatches(config.mixture(), 1, 2, 48, config.frames(), config.prior_recipe())[0]
    assert blurred.shape == sharp.shape == (2, 1, 3, 48, 48) and planes.shape == (2, len(PRIOR_CHANNELS), 48, 48)
    Trainer(config, out=io.StringIO()).run()
    assert read_weights(tmp_path / "run" / "final.safetensors").preset.stage1.prior


def test_a_bank_folder_without_samples_is_one_line(tmp_path):
    (tmp_path / "bank").mkdir()
    config = load_config(write_config(tmp_path), {"output": tmp_path / "run", "prior_bank": tmp_path / "bank"})
    with pytest.raises(UsageError, match="is not a prior bank"):
        Trainer(config, out=io.StringIO()).run()


def test_a_prior_run_validates_photos_filmed_as_clips(tmp_path):
    from vsdeblur.train.validate import ValidationSet

    write_png(tmp_path / "val" / "photo.png", panning_frames(1, width=96, height=64)[0])
    config = load_config(write_config(tmp_path), {"output": tmp_path / "run"})
    filmed = ValidationSet([{"kind": "images", "path": tmp_path / "val"}], config.recipe(), frames=3, filmed_images=True)
    single = ValidationSet([{"kind": "images", "path": tmp_path / "val"}], config.recipe(), frames=3)
    assert [len(c.blurred) for c in single.clips] == [1]
    (clip,) = filmed.clips
    assert len(clip.blurred) == len(clip.sharp) == 3 and clip.blurred[0].shape == (64, 96, 3)
    assert not np.array_equal(clip.sharp[0], clip.sharp[2])  # the camera moved: neighbours to tell it
