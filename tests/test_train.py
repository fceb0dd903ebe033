"""Training: blur synthesis, data sources, metrics, and the loop (tiny preset, generated data)."""

from __future__ import annotations

import dataclasses
import io
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from tests.media import make_weights, write_lossless, write_png
from vsdeblur import metrics
from vsdeblur.blur import synth
from vsdeblur.errors import UsageError
from vsdeblur.train.data import BlurRecipe, Clip, DeadLeavesSource, ImageSource, Mixture, PairedSource, VideoSource, make_pair
from vsdeblur.train.loop import StepBatches, Trainer, load_config
from vsdeblur.models import build_model, get_preset
from vsdeblur.weights import read_weights, save_weights


# ---- synthesis -------------------------------------------------------------------------------


def test_shake_kernels_are_normalised_and_as_long_as_asked():
    rng = np.random.default_rng(0)
    for length in (3.0, 10.0, 20.0):
        path = synth.shake_trajectory(rng, length, curvature=0.5)
        assert np.ptp(path, axis=0).max() == pytest.approx(length)
        kernel = synth.rasterise(path, 33)
        assert kernel.sum() == pytest.approx(1.0, abs=1e-5) and (kernel >= 0).all()
        ys, xs = np.nonzero(kernel > 1e-4)
        assert max(np.ptp(ys), np.ptp(xs)) == pytest.approx(length, abs=2.5)


def test_straight_paths_without_curvature():
    path = synth.shake_trajectory(np.random.default_rng(1), 12.0, curvature=0.0)
    dx, dy = path[-1] - path[0]
    # every point lies on the line from the first to the last point
    offsets = np.abs(dx * (path[:, 1] - path[0, 1]) - dy * (path[:, 0] - path[0, 0])) / np.hypot(dx, dy)
    assert offsets.max() < 1e-6


def test_convolution_with_a_delta_is_the_identity_and_blur_blurs():
    image = np.random.default_rng(2).random((40, 50, 3), dtype=np.float32)
    delta = np.zeros((9, 9), np.float32)
    delta[4, 4] = 1
    assert np.allclose(synth.convolve(image, delta), image, atol=1e-3)  # FFT rounding, amplified near black by the gamma
    blurred = synth.convolve(image, synth.shake_kernel(np.random.default_rng(3)))
    assert np.abs(np.diff(blurred, axis=1)).mean() < 0.5 * np.abs(np.diff(image, axis=1)).mean()


def test_soften_blurs_every_frame_alike_and_leaves_flat_colour_alone():
    rng = np.random.default_rng(6)
    clip = np.repeat(rng.random((1, 48, 64, 3), dtype=np.float32), 3, axis=0)
    detail = lambda x: np.abs(np.diff(x, axis=1)).mean() + np.abs(np.diff(x, axis=2)).mean()
    for seed in range(6):  # whole-frame and masked softening both occur in six draws
        soft = synth.soften(clip, np.random.default_rng(seed))
        assert soft.shape == clip.shape and soft.dtype == np.float32
        assert detail(soft) < 0.9 * detail(clip)
        assert np.array_equal(soft[0], soft[2])  # the same focus in every frame of the clip
    flat = np.full((1, 32, 32, 3), 0.25, np.float32)
    assert np.allclose(synth.soften(flat, np.random.default_rng(0)), flat, atol=1e-6)


def test_log_uniform_lengths_favour_mild_blur():
    spec = synth.ShakeSpec(min_length=2.0, max_length=32.0, log_lengths=True)
    rng = np.random.default_rng(7)
    extents = [np.ptp(np.argwhere(synth.shake_kernel(rng, spec) > 0), axis=0).max() for _ in range(200)]
    # each octave is equally likely: about half the paths are under 8 px (a uniform draw: 13 %)
    assert 0.35 < np.mean(np.array(extents) < 8) < 0.65


def test_frame_averaging_and_subframe_shifts():
    frame = np.random.default_rng(4).random((64, 80, 3), dtype=np.float32)
    assert np.allclose(synth.average_frames([frame, frame, frame]), frame, atol=1e-5)
    assert np.allclose(synth.subframe_blur(frame, frame, frame), frame)  # no motion, no blur
    moved = [np.roll(frame, s, axis=1) for s in (-6, 0, 6)]
    assert synth.global_shift(moved[1], moved[2]).tolist() == [6, 0]
    blurred = synth.subframe_blur(*moved)
    # horizontal motion blurs along x only
    assert np.abs(np.diff(blurred, axis=1)).mean() < 0.7 * np.abs(np.diff(frame, axis=1)).mean()


def test_extras_add_noise_and_compression():
    image = np.full((32, 32, 3), 0.5, np.float32)
    spec = synth.ExtrasSpec(max_noise=0.05, compress_probability=1.0)
    noisy = synth.add_extras(image, np.random.default_rng(5), spec)
    assert noisy.dtype == np.float32 and noisy.shape == image.shape
    assert 0 < np.abs(noisy - image).mean() < 0.1


def test_pairs_are_aligned_and_deterministic():
    mix = Mixture([(DeadLeavesSource(pool=4, side=160), 1.0)], BlurRecipe())
    blurred, sharp = mix.batch(seed=1, step=3, batch=2, size=48, frames=3)
    assert blurred.shape == sharp.shape == (2, 3, 48, 48, 3)
    again = mix.batch(seed=1, step=3, batch=2, size=48, frames=3)
    assert np.array_equal(again[0], blurred) and np.array_equal(again[1], sharp)
    assert not np.array_equal(mix.batch(seed=1, step=4, batch=2, size=48, frames=3)[0], blurred)
    # a pair from a delta "blur" is the sharp crop itself: blurred and sharp line up
    recipe = BlurRecipe(shake=synth.ShakeSpec(0.0, 0.0, 0.0, 9), extras=synth.ExtrasSpec(0.0, 0.0), subframe_probability=0.0)
    clip = Clip(np.random.default_rng(6).random((3, 40, 40, 3), dtype=np.float32))
    b, s = make_pair(clip, np.random.default_rng(7), recipe)
    assert b.shape == s.shape == (1, 32, 32, 3) and np.allclose(b, s, atol=1e-3)


def test_reference_extras_put_grain_in_the_answer_too():
    clean = np.full((3, 40, 40, 3), 0.5, np.float32)
    base = BlurRecipe(shake=synth.ShakeSpec(0.0, 0.0, 0.0, 9), extras=synth.ExtrasSpec(0.02, 0.0), subframe_probability=0.0, sharp_probability=1.0)
    _, untouched = make_pair(Clip(clean), np.random.default_rng(1), base)
    assert np.array_equal(untouched, clean[1:2, 4:-4, 4:-4])
    blurred, grainy = make_pair(Clip(clean), np.random.default_rng(1), dataclasses.replace(base, reference_extras_probability=1.0))
    grain = (grainy - 0.5).std()
    assert 0.002 < grain < 0.05
    # the input carries the reference's grain and fresh grain on top of it: more than either
    assert (blurred - 0.5).std() > grain and np.corrcoef((blurred - 0.5).ravel(), (grainy - 0.5).ravel())[0, 1] > 0.3


# ---- data sources ----------------------------------------------------------------------------


def test_image_video_and_paired_sources(tmp_path):
    rng = np.random.default_rng(8)
    images = [rng.integers(0, 256, (72, 72, 3), dtype=np.uint8) for _ in range(3)]
    for i, image in enumerate(images):
        write_png(tmp_path / "images" / f"{i}.png", image)
        for layout_dir in (tmp_path / "reds" / "train_blur" / "000", tmp_path / "reds" / "train_sharp" / "000",
                           tmp_path / "gopro" / "train" / "GOPR0001" / "blur", tmp_path / "gopro" / "train" / "GOPR0001" / "sharp"):
            write_png(layout_dir / f"{i:08d}.png", image)
    write_lossless(tmp_path / "clip.mkv", images)
    for source in (ImageSource(tmp_path / "images"), VideoSource(tmp_path / "clip.mkv"),
                   PairedSource(tmp_path / "reds", "reds"), PairedSource(tmp_path / "gopro", "gopro")):
        clip = source.sample(np.random.default_rng(9), 48, 3)
        assert clip.sharp.shape == (3, 48, 48, 3) and clip.sharp.dtype == np.float32
        assert 0 <= clip.sharp.min() and clip.sharp.max() <= 1
    paired = PairedSource(tmp_path / "reds", "reds").sample(np.random.default_rng(9), 48, 2)
    assert np.array_equal(paired.blurred, paired.sharp)  # the same files on both sides
    video = VideoSource(tmp_path / "clip.mkv").sample(np.random.default_rng(1), 72, 3)
    assert np.array_equal(video.sharp * 255, np.stack(images))  # lossless FFV1: every frame, in order
    with pytest.raises(UsageError, match="no reds train sequences"):
        PairedSource(tmp_path / "images", "reds")
    with pytest.raises(UsageError, match="training data path not found"):
        ImageSource(tmp_path / "missing")


def test_image_scales_above_one_soften_the_detail(tmp_path):
    noise = np.random.default_rng(2).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    write_png(tmp_path / "noise.png", noise)

    def detail(scales) -> float:
        clip = ImageSource(tmp_path, scales=scales).sample(np.random.default_rng(3), 48, 1)
        return float(np.abs(np.diff(clip.sharp, axis=2)).mean())

    native, softer = detail((1.0, 1.0)), detail((1.8, 1.8))
    assert softer < 0.6 * native
    with pytest.raises(UsageError, match="scales must be"):
        ImageSource(tmp_path, scales=(1.0, 0.5))


def test_pan_sets_how_far_image_sequences_move_between_frames(tmp_path):
    write_png(tmp_path / "noise.png", np.random.default_rng(2).integers(0, 256, (256, 256, 3), dtype=np.uint8))

    def shift(pan: float, seed: int) -> tuple[int, int]:
        """The whole-pixel motion from frame 0 to frame 1, found by exhaustive search."""
        a, b = ImageSource(tmp_path, scales=(1.0, 1.0), pan=pan).sample(np.random.default_rng(seed), 64, 3).sharp[:2]
        errors = {(dy, dx): np.abs(a[20 + dy : 44 + dy, 20 + dx : 44 + dx] - b[20:44, 20:44]).mean()
                  for dy in range(-18, 19) for dx in range(-18, 19)}
        return min(errors, key=errors.get)

    assert {shift(0.0, seed) for seed in range(3)} == {(0, 0)}
    wide = [max(map(abs, shift(16.0, seed))) for seed in range(6)]
    assert max(wide) > 4 and max(wide) <= 16
    with pytest.raises(UsageError, match="pan must be"):
        ImageSource(tmp_path, pan=-1.0)


def test_decord_reader_matches_pyav(tmp_path):
    pytest.importorskip("decord")
    frames = [np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8) for i in range(4)]
    write_lossless(tmp_path / "clip.mkv", frames)
    a = VideoSource(tmp_path / "clip.mkv").sample(np.random.default_rng(3), 64, 2)
    b = VideoSource(tmp_path / "clip.mkv", reader="decord").sample(np.random.default_rng(3), 64, 2)
    assert np.array_equal(a.sharp, b.sharp)


# ---- metrics ---------------------------------------------------------------------------------


def test_psnr_and_ssim_conventions():
    a = np.full((32, 32, 3), 100, np.uint8)
    b = a.copy()
    assert metrics.psnr(a, b) == float("inf") and metrics.ssim(a, b) == pytest.approx(1.0)
    b[:] = 110  # MSE 100 -> 10 log10(255^2 / 100)
    assert metrics.psnr(a, b) == pytest.approx(10 * np.log10(255**2 / 100))
    # float input is quantised to 8 bits first
    assert metrics.psnr(a / 255, b) == pytest.approx(metrics.psnr(a, b))
    image = np.random.default_rng(0).random((64, 64, 3), dtype=np.float32)
    soft = synth.convolve(image, np.full((5, 5), 1 / 25, np.float32))
    assert 0 < metrics.ssim(soft, image) < 0.9


def test_ssim_equals_the_textbook_formula_in_float64():
    # Wang et al. 2004 written out directly: 11x11 Gaussian (sigma 1.5) over every valid window
    rng = np.random.default_rng(4)
    a = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for c in range(3):
        x, y = a[..., c].astype(np.float64), b[..., c].astype(np.float64)
        for i in range(20 - 10):
            for j in range(24 - 10):
                px, py = x[i : i + 11, j : j + 11], y[i : i + 11, j : j + 11]
                mx, my = (w * px).sum(), (w * py).sum()
                vx, vy, cxy = (w * px * px).sum() - mx**2, (w * py * py).sum() - my**2, (w * px * py).sum() - mx * my
                values.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    assert metrics.ssim(a, b) == pytest.approx(np.mean(values), abs=1e-6)


# ---- the loop --------------------------------------------------------------------------------


def write_config(tmp_path, text: str = "") -> object:
    path = tmp_path / "train.toml"
    path.write_text(
        'stage = 1\npreset = "tiny"\nsteps = 6\nbatch = 2\ncrop = 48\nlr = 2e-3\nseed = 3\n'
        "validate_every = 3\ncheckpoint_every = 3\nlog_every = 1\n"
        '[blur]\nkernel_size = 9\nmax_length = 6.0\n[[train_data]]\nkind = "dead-leaves"\npool = 4\nside = 128\n' + text
    )
    return path


def test_loss_drops_on_held_out_crops(tmp_path):
    # Held-out crops from the same generator; the untrained network starts near the identity
    # (its output layers are initialised small), so learning shows as beating the identity.
    config = load_config(
        write_config(tmp_path, ""),
        {"steps": 120, "output": tmp_path / "run", "batch": 4, "lr": 3e-3},
    )
    config.blur.update(kernel_size=15, min_length=4.0, max_length=10.0, max_noise=0.0, compress_probability=0.0)
    trainer = Trainer(config, out=io.StringIO())
    blurred, sharp = StepBatches(trainer.mixture, seed=999, batch=16, crop=48, frames=1)[0]

    def held_out_loss() -> float:
        trainer.model.eval()
        with torch.no_grad():
            return float((trainer.model(blurred[:, 0]) - sharp[:, 0]).abs().mean())

    identity = float((blurred - sharp).abs().mean())
    before = held_out_loss()
    trainer.run(resume=False)
    after = held_out_loss()
    assert after < 0.985 * before and after < 0.99 * identity


def test_checkpoint_resumes_exactly(tmp_path):
    straight = Trainer(load_config(write_config(tmp_path), {"output": tmp_path / "a"}), out=io.StringIO())
    straight.run()
    first = Trainer(load_config(write_config(tmp_path), {"output": tmp_path / "b", "steps": 3}), out=io.StringIO())
    first.run()
    resumed = Trainer(load_config(write_config(tmp_path), {"output": tmp_path / "b"}), out=io.StringIO())
    resumed.run()
    assert resumed.step == straight.step == 6
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    for k, v in straight.optimizer.state_dict()["state"].items():
        for name, tensor in v.items():
            assert torch.equal(tensor, resumed.optimizer.state_dict()["state"][k][name])
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, 7))


def test_any_number_of_worker_processes_delivers_the_same_batches(tmp_path):
    # the same batches in the same order: the same loss at every step and the same weights
    runs = {}
    for workers in (1, 2):
        trainer = Trainer(load_config(write_config(tmp_path), {"output": tmp_path / f"w{workers}", "workers": workers}), out=io.StringIO())
        trainer.run()
        log = [json.loads(line) for line in (tmp_path / f"w{workers}" / "log.jsonl").read_text().splitlines()]
        runs[workers] = [r["loss"] for r in log if "loss" in r], trainer.model.state_dict()
    (losses, weights), (other_losses, other_weights) = runs[1], runs[2]
    assert len(losses) == 6 and losses == other_losses
    assert all(torch.equal(weights[k], other_weights[k]) for k in weights)


def last_validation_psnr(run: Path) -> float:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if "val_psnr" in line][-1]["val_psnr"]


def test_validation_exports_weights_with_recipe(tmp_path, tiny_weights):
    images = tmp_path / "val"
    write_png(images / "a.png", np.random.default_rng(1).integers(0, 256, (64, 80, 3), dtype=np.uint8))
    config = load_config(write_config(tmp_path, f'[[val_data]]\nkind = "images"\npath = "{images}"\n'), {"output": tmp_path / "run"})
    out = io.StringIO()
    weights = Trainer(config, out=out).run()
    assert "validation at step 3: PSNR" in out.getvalue()
    w = read_weights(weights)
    assert w.preset.name == "tiny" and w.stages == (1,)
    assert w.recipe["train"]["lr"] == 2e-3 and w.recipe["blur"]["kernel_size"] == 9
    assert w.info["steps"] in (3, 6) and "val_psnr" in w.info and "val_blurred_psnr" in w.info
    final = read_weights(tmp_path / "run" / "final.safetensors")  # the last step, best or not
    assert final.info["steps"] == 6 and final.info["val_psnr"] == last_validation_psnr(tmp_path / "run")


def test_keep_every_exports_the_model_of_those_steps(tmp_path):
    images = tmp_path / "val"
    write_png(images / "a.png", np.random.default_rng(1).integers(0, 256, (64, 80, 3), dtype=np.uint8))
    config = load_config(write_config(tmp_path, f'[[val_data]]\nkind = "images"\npath = "{images}"\n'),
                         {"output": tmp_path / "run", "keep_every": 2})
    trainer = Trainer(config, out=io.StringIO())
    trainer.run()
    kept = sorted((tmp_path / "run").glob("weights-*.safetensors"))
    assert [p.name for p in kept] == ["weights-2.safetensors", "weights-4.safetensors", "weights-6.safetensors"]
    assert [read_weights(p).info["steps"] for p in kept] == [2, 4, 6]
    assert "val_psnr" not in read_weights(kept[0]).info  # step 2 was not validated (every 3)
    final = read_weights(tmp_path / "run" / "final.safetensors")
    assert read_weights(kept[2]).info["val_psnr"] == final.info["val_psnr"]
    last = read_weights(kept[2]).build(1).state_dict()
    assert all(torch.equal(v, last[k]) for k, v in trainer.model.state_dict().items())


def test_stage2_trains_on_frozen_stage1_outputs(tmp_path, tiny_weights):
    config = load_config(write_config(tmp_path, ""), {"output": tmp_path / "s2", "stage": 2, "stage1_weights": tiny_weights, "steps": 2})
    trainer = Trainer(config, out=io.StringIO())
    before = {k: v.clone() for k, v in trainer.stage1.state_dict().items()}
    w = read_weights(trainer.run())
    assert w.stages == (1, 2)
    assert all(torch.equal(before[k], v) for k, v in trainer.stage1.state_dict().items())


def test_a_longer_stage2_window_trains_from_a_shorter_ones_weights(tmp_path, tiny_weights):
    config = load_config(write_config(tmp_path), {"output": tmp_path / "r2", "stage": 2, "stage1_weights": tiny_weights,
                                                  "init_weights": tiny_weights, "radius": 2, "steps": 2})
    trainer = Trainer(config, out=io.StringIO())
    start = read_weights(tiny_weights).build(2).widened(2).state_dict()
    assert all(torch.equal(v, start[k]) for k, v in trainer.model.state_dict().items())
    w = read_weights(trainer.run())
    assert w.preset.stage2.radius == 2 and w.build(2).frames == 5
    assert w.preset.stage1 == read_weights(tiny_weights).preset.stage1
    config = load_config(write_config(tmp_path), {"output": tmp_path / "r1", "stage": 2, "stage1_weights": tiny_weights,
                                                  "init_weights": w.path})
    with pytest.raises(UsageError, match="holds a stage 2 of radius 2: it cannot start one of radius 1"):
        Trainer(config, out=io.StringIO())


def test_weights_of_another_size_are_refused_naming_the_difference(tmp_path):
    tiny = get_preset("tiny")
    wider = dataclasses.replace(tiny, stage1=dataclasses.replace(tiny.stage1, head_width=tiny.stage1.head_width * 2))
    other = save_weights(tmp_path / "wider.safetensors", wider, {1: build_model(wider, 1)})
    config = load_config(write_config(tmp_path), {"output": tmp_path / "run", "init_weights": other})
    with pytest.raises(UsageError, match=f"does not fit this run's preset 'tiny': stage1.head_width {tiny.stage1.head_width * 2} "
                                         f"\\(expected {tiny.stage1.head_width}\\)$"):
        Trainer(config, out=io.StringIO())


def test_a_larger_stage1_starts_as_the_smaller_trained_one(tmp_path):
    small = read_weights(Path(__file__).parents[1] / "vsdeblur/weights/default.safetensors").build(1).eval()
    config = load_config(write_config(tmp_path), {"output": tmp_path / "run", "preset": "medium",
                                                   "init_weights": Path(__file__).parents[1] / "vsdeblur/weights/default.safetensors"})
    trainer = Trainer(config, out=io.StringIO())
    assert trainer.model.cfg == get_preset("medium").stage1
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(trainer.model.eval()(x), small(x), atol=1e-5)


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_training_runs_the_networks_in_the_asked_precision(tmp_path, precision, dtype):
    config = load_config(write_config(tmp_path), {"output": tmp_path / "run", "precision": precision, "steps": 2})
    trainer = Trainer(config, out=io.StringIO())
    seen = []
    trainer.model.head.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    trainer.run(resume=False)
    assert seen and set(seen) == {dtype}
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert read_weights(tmp_path / "run" / "final.safetensors").info["precision"] == precision.replace("bf16", "bfloat16").replace("fp32", "float32")


def test_a_checkpoint_of_another_preset_is_refused_in_one_line(tmp_path):
    Trainer(load_config(write_config(tmp_path), {"output": tmp_path / "run", "steps": 3}), out=io.StringIO()).run()
    other = load_config(write_config(tmp_path), {"output": tmp_path / "run", "preset": "small"})
    with pytest.raises(UsageError, match="run/checkpoint.safetensors is a checkpoint of stage 1 of preset 'tiny', not of this run's stage 1 of 'small'"):
        Trainer(other, out=io.StringIO()).run()


def test_ship_puts_a_new_stage1_before_an_existing_stage2(tmp_path, tiny_weights):
    ship = [sys.executable, str(Path(__file__).parents[1] / "pipelines/train/ship.py")]
    stage1 = make_weights(tmp_path / "s1.safetensors", stages=(1,), seed=5)
    done = subprocess.run(ship + [str(stage1), str(tmp_path / "both.safetensors"), "--stage2-from", str(tiny_weights)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    both, first, second = (read_weights(p) for p in (tmp_path / "both.safetensors", stage1, tiny_weights))
    assert tuple(both.stages) == (1, 2)
    assert both.info["stage2"]["from"] == tiny_weights.name  # not the folder it was in on this machine
    for stage, source in ((1, first), (2, second)):
        mine, theirs = both.build(stage).state_dict(), source.build(stage).state_dict()
        assert all(torch.equal(mine[k], theirs[k].half().float()) for k in mine)
    small = make_weights(tmp_path / "small.safetensors", preset="small", stages=(1, 2))
    done = subprocess.run(ship + [str(stage1), str(tmp_path / "bad.safetensors"), "--stage2-from", str(small)], capture_output=True, text=True)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "does not fit preset 'tiny'" in done.stderr
    assert not (tmp_path / "bad.safetensors").exists()


def test_bad_training_configs(tmp_path):
    with pytest.raises(UsageError, match="unknown key 'stepz'"):
        load_config(_write(tmp_path, "stepz = 3\n"))
    with pytest.raises(UsageError, match="stage 2 trains on stage-1 outputs: set stage1_weights"):
        load_config(_write(tmp_path, 'stage = 2\n[[train_data]]\nkind = "dead-leaves"\n'))
    with pytest.raises(UsageError, match="no \\[\\[train_data\\]\\] sources"):
        load_config(_write(tmp_path, "stage = 1\n"))
    with pytest.raises(UsageError, match="unknown data source kind 'photos'"):
        Trainer(load_config(_write(tmp_path, '[[train_data]]\nkind = "photos"\n')))


@pytest.mark.slow
def test_sigterm_stops_training_with_one_line(tmp_path):
    # Large batches keep the workers' queue threads busy handing batches over: stopped right
    # after the first step, a worker that shuts down the usual way aborts (8 runs of 8), and
    # torch prints a page of traceback after "terminated"; a worker that leaves at once but does
    # not silence its resource sharer prints the main process's hang-up (4 of 8).
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace("batch = 2", "batch = 16\nworkers = 2").replace("crop = 48", "crop = 192")
                      .replace("steps = 6", "steps = 100000").replace("validate_every = 3", "validate_every = 1000"))
    for run in range(2):
        proc = subprocess.Popen([sys.executable, "-m", "vsdeblur", "train", "--config", str(config),
                                 "--output", str(tmp_path / f"run{run}")], stderr=subprocess.PIPE, text=True)
        first = proc.stderr.readline()
        assert first.startswith("step "), first + proc.communicate(timeout=60)[1]
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=120)
        lines = [line for line in rest.splitlines() if not line.startswith("step ")]
        assert proc.returncode == 143 and lines == ["vsdeblur train: terminated"], rest


def test_an_unreadable_training_image_stops_the_run_with_one_line(tmp_path):
    images = tmp_path / "images"
    write_png(images / "good.png", np.random.default_rng(1).integers(0, 256, (96, 96, 3), dtype=np.uint8))
    (images / "broken.png").write_bytes(b"not a picture")
    config = tmp_path / "train.toml"
    config.write_text(f'preset = "tiny"\nsteps = 20\nbatch = 2\ncrop = 32\n[blur]\nkernel_size = 9\n[[train_data]]\nkind = "images"\npath = "{images}"\n')
    done = subprocess.run([sys.executable, "-m", "vsdeblur", "train", "--config", str(config), "--output", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot read image" in lines[0] and "broken.png" in lines[0], done.stderr
    assert not (tmp_path / "run").exists()  # no output folder, no empty log


def _write(tmp_path, text: str):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return path


def test_relative_output_is_relative_to_the_config_file(tmp_path, monkeypatch):
    # the CLI passes every option, unset ones as None: those must not disable the rule
    (tmp_path / "recipes").mkdir()
    path = tmp_path / "recipes" / "train.toml"
    path.write_text('output = "../runs/x"\n[[train_data]]\nkind = "dead-leaves"\n')
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "b")  # where "../runs/x" would land if taken from here
    assert load_config(path, {"output": None, "steps": None}).output == (tmp_path / "runs" / "x").resolve()
    assert load_config(path, {"output": Path("elsewhere")}).output == Path("elsewhere")


def test_a_recipe_is_its_base_with_the_keys_it_gives_replaced(tmp_path):
    (tmp_path / "older").mkdir()
    (tmp_path / "older" / "first.toml").write_text(
        'preset = "tiny"\nsteps = 10\nseed = 1\noutput = "runs/first"\n[blur]\nmax_length = 6.0\nmax_noise = 0.0\n'
        '[[train_data]]\nkind = "images"\npath = "photos"\n[[val_data]]\nkind = "images"\npath = "held-out"\n')
    (tmp_path / "second.toml").write_text(
        'base = "older/first.toml"\nsteps = 20\n[blur]\nmax_noise = 0.01\n[[train_data]]\nkind = "dead-leaves"\n')
    (tmp_path / "third.toml").write_text('base = "second.toml"\nseed = 3\noutput = "runs/third"\n')
    config = load_config(tmp_path / "third.toml")
    assert (config.steps, config.seed, config.preset) == (20, 3, "tiny")
    assert (config.blur["max_length"], config.blur["max_noise"]) == (6.0, 0.01)  # [blur] key by key
    assert config.train_data == [{"kind": "dead-leaves"}]  # lists whole
    assert config.val_data == [{"kind": "images", "path": str((tmp_path / "older" / "held-out").resolve())}]
    assert config.output == (tmp_path / "runs" / "third").resolve()  # relative to the file that names it
    assert load_config(tmp_path / "second.toml").output == (tmp_path / "older" / "runs" / "first").resolve()
    (tmp_path / "older" / "first.toml").write_text('base = "../third.toml"\n')
    with pytest.raises(UsageError, match="base recipes form a loop"):
        load_config(tmp_path / "third.toml")
    (tmp_path / "lost.toml").write_text('base = "nowhere.toml"\n')
    with pytest.raises(UsageError, match="config file not found: .*nowhere.toml"):
        load_config(tmp_path / "lost.toml")


@pytest.mark.parametrize("recipe", sorted((Path(__file__).parents[1] / "pipelines" / "train").glob("*.toml")), ids=lambda p: p.name)
def test_committed_training_recipes_load(recipe):
    config = load_config(recipe)
    assert config.output.is_absolute() and config.output.parent.name == "runs"
    assert config.train_data and config.val_data  # every shipped recipe validates on held-out data


def test_budget_schedule_falls_linearly_to_min_lr():
    from vsdeblur.train.loop import budget_lr

    assert budget_lr(5e-4, 1e-5, 100, 300, 50) == 5e-4
    assert budget_lr(5e-4, 1e-5, 100, 300, 100) == 5e-4
    assert budget_lr(5e-4, 1e-5, 100, 300, 200) == pytest.approx((5e-4 + 1e-5) / 2)
    assert budget_lr(5e-4, 1e-5, 100, 300, 300) == pytest.approx(1e-5)
    assert budget_lr(5e-4, 1e-5, 100, 300, 400) == pytest.approx(1e-5)


def test_decay_start_sets_the_rate_of_every_step(tmp_path):
    config = load_config(write_config(tmp_path), {"output": tmp_path / "run", "steps": 4, "decay_start": 2})
    trainer = Trainer(config, out=io.StringIO())
    trainer.run(resume=False)
    rates = [r["lr"] for r in map(json.loads, (tmp_path / "run" / "log.jsonl").read_text().splitlines()) if "lr" in r]
    # log line n holds the rate step n ran with; the line ends at min_lr when the budget ends
    assert rates == pytest.approx([2e-3, 2e-3, 2e-3, (2e-3 + config.min_lr) / 2])


def test_size_run_fits_steps_to_the_measured_synthesis_rate(tmp_path):
    script = Path(__file__).parents[1] / "pipelines" / "train" / "size-run.py"
    (tmp_path / "recipes").mkdir()
    recipe = write_config(tmp_path / "recipes")
    recipe.write_text("decay_start = 3\n" + recipe.read_text())  # half of its 6 steps
    (tmp_path / "sized").mkdir()
    sized = tmp_path / "sized" / "run.toml"
    done = subprocess.run([sys.executable, str(script), str(recipe), "30", str(sized), "--workers", "3", "--measure", "0.5"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rate = float(done.stdout.split("(")[1].split()[0])  # samples/s per core, as measured, to 2 decimals
    config = load_config(sized)
    # 3 workers, 30 s, batch 2, 3 candidates; the printed rate is rounded, the script's is not
    fewest, most = (int(r * 3 * 0.8 * 30 / 2 / 3) for r in (rate - 0.005, rate + 0.005))
    keep = config.keep_every
    assert fewest <= keep <= most and (config.steps, config.checkpoint_every) == (3 * keep, keep)
    assert config.decay_start == round(3 * keep / 2) and config.workers == 3
    assert (config.preset, config.crop, config.blur["kernel_size"]) == ("tiny", 48, 9)  # the rest is the recipe's
    assert sized.read_text().startswith('base = "../recipes/train.toml"')
    missing = subprocess.run([sys.executable, str(script), str(tmp_path / "none.toml"), "30", str(tmp_path / "out.toml")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert "config file not found" in missing.stderr and not (tmp_path / "out.toml").exists()


def recorded_paths(recipe: object) -> list[str]:
    """Every string in a recorded recipe that names a file or folder (holds a slash)."""
    if isinstance(recipe, dict):
        return [p for value in recipe.values() for p in recorded_paths(value)]
    if isinstance(recipe, list):
        return [p for value in recipe for p in recorded_paths(value)]
    return [recipe] if isinstance(recipe, str) and "/" in recipe else []


def test_weights_record_the_recipe_paths_relative_to_the_recipe_not_the_machine(tmp_path, tiny_weights):
    # the shipped default once recorded /work/... folders for its output, data and initial weights
    images = tmp_path / "data" / "val"
    write_png(images / "a.png", np.random.default_rng(1).integers(0, 256, (64, 80, 3), dtype=np.uint8))
    (tmp_path / "recipes").mkdir()
    recipe = write_config(tmp_path / "recipes", '[[val_data]]\nkind = "images"\npath = "../data/val"\n')
    config = load_config(recipe, {"output": tmp_path / "runs" / "x", "steps": 2, "init_weights": tiny_weights})
    run = Path(Trainer(config, out=io.StringIO()).run()).parent
    with safe_open(str(run / "checkpoint.safetensors"), framework="pt") as f:
        in_checkpoint = json.loads(f.metadata()["checkpoint"])["recipe"]
    for recorded in (read_weights(run / "weights.safetensors").recipe, read_weights(run / "final.safetensors").recipe, in_checkpoint):
        paths = recorded_paths(recorded)
        assert paths and not [p for p in paths if Path(p).is_absolute() or str(tmp_path) in p], paths
        assert recorded["recipe_file"] == "train.toml"
        assert recorded["train"]["output"] == "../runs/x" and recorded["val_data"][0]["path"] == "../data/val"
        # a path from the recipe's folder names the file that was used
        assert (recipe.parent / recorded["train"]["init_weights"]).resolve() == tiny_weights.resolve()
