"""Camera blur: a continuous camera path integrated over each exposure (vsdeblur.blur.camera)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vsdeblur.blur import camera, truth
from vsdeblur.train.data import BlurRecipe, DeadLeavesSource, Mixture

STRAIGHT = dict(wobble=0.0, max_roll=0.0, max_zoom=0.0, jerk_probability=0.0)


def dot_scene(size: int = 161) -> torch.Tensor:
    """A small round spot of light (smooth enough that bicubic resampling keeps its energy)."""
    y, x = torch.meshgrid(torch.arange(size) - size // 2, torch.arange(size) - size // 2, indexing="ij")
    light = torch.exp(-(x**2 + y**2) / 2.0)
    return light.pow(1 / camera.GAMMA).expand(3, -1, -1).clone()


DOT_LIGHT = float(torch.exp(-(torch.arange(-9, 10) ** 2) / 2.0).sum() ** 2)


def streak(frame: torch.Tensor) -> tuple[float, float]:
    """The light of a filmed spot in linear light: its total, and its spread along its longest
    axis as the length of a uniform streak with that variance (L^2 / 12)."""
    light = frame[0].double().pow(camera.GAMMA)
    y, x = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in light.shape), indexing="ij")
    total = light.sum()
    mx, my = (light * x).sum() / total, (light * y).sum() / total
    cov = torch.stack([torch.stack([(light * (x - mx) ** 2).sum(), (light * (x - mx) * (y - my)).sum()]),
                       torch.stack([(light * (x - mx) * (y - my)).sum(), (light * (y - my) ** 2).sum()])]) / total
    return float(total), float(torch.linalg.eigvalsh(cov)[-1].clamp_min(0).mul(12).sqrt())


def length_of(blurred: torch.Tensor, sharp: torch.Tensor) -> float:
    """The streak's length without the spot's own width."""
    return float(np.sqrt(max(streak(blurred)[1] ** 2 - streak(sharp)[1] ** 2, 0)))


@pytest.mark.parametrize("length", [2.0, 6.0, 14.0])
def test_a_spot_filmed_by_a_panning_camera_becomes_a_streak_of_the_blur_length(length):
    spec = camera.CameraSpec(min_length=length, max_length=length, **STRAIGHT)
    path = camera.draw_path(np.random.default_rng(3), spec, 2)
    blurred, sharp = camera.film(dot_scene(), path, 2, (64, 64))
    for t in range(2):
        assert streak(blurred[t])[0] == pytest.approx(DOT_LIGHT, rel=0.02)  # light is spread, not lost
        # the drift's speed varies slowly, by about a sixth, from frame to frame
        assert length_of(blurred[t], sharp[t]) == pytest.approx(length, rel=0.35, abs=0.5)
    # the mid-exposure views are the scene's own pixels, not resampled copies
    assert torch.allclose(sharp[0], dot_scene()[:, 80 - 32 : 80 + 32, 80 - 32 : 80 + 32], atol=1e-5)


def test_neighbouring_frames_are_blurred_alike_and_move_by_the_camera_motion():
    spec = camera.CameraSpec(min_length=8.0, max_length=8.0, min_shutter=0.5, max_shutter=0.5, **STRAIGHT)
    path = camera.draw_path(np.random.default_rng(5), spec, 4)
    blurred, sharp = camera.film(dot_scene(301), path, 4, (192, 192))
    lengths = [length_of(b, s) for b, s in zip(blurred, sharp)]
    assert all(max(a, b) / min(a, b) < 1.35 for a, b in zip(lengths, lengths[1:]))
    assert np.mean(lengths) == pytest.approx(8.0, rel=0.25)
    # the shutter is open half the frame interval: the spot moves about twice its streak per frame
    centres = [torch.nonzero(s[0] == s[0].max()).double().mean(0) for s in sharp]
    steps = [float(torch.dist(a, b)) for a, b in zip(centres, centres[1:])]
    assert np.mean(steps) == pytest.approx(2 * np.mean(lengths), rel=0.4)


def test_paths_are_drawn_from_the_seed_alone():
    spec = camera.CameraSpec()
    a = camera.draw_path(np.random.default_rng([1, 2]), spec, 5)
    b = camera.draw_path(np.random.default_rng([1, 2]), spec, 5)
    assert np.array_equal(a.poses, b.poses) and a.shutter == b.shutter


def test_log_lengths_make_mild_blur_common():
    spec = camera.CameraSpec(min_length=1.0, max_length=32.0)
    lengths = [camera.draw_path(np.random.default_rng(i), spec, 1).length for i in range(400)]
    assert np.mean(np.array(lengths) < 4) == pytest.approx(0.4, abs=0.08)  # two octaves of five


def test_a_real_clip_keeps_its_content_and_is_blurred_by_the_camera():
    frame = torch.rand(3, 48, 48)
    still = camera.CameraSpec(min_length=0.05, max_length=0.05, **STRAIGHT)
    path = camera.draw_path(np.random.default_rng(0), still, 1)
    assert torch.allclose(camera.shake_frame(frame, path, 0), frame, atol=0.02)
    moving = camera.draw_path(np.random.default_rng(0), camera.CameraSpec(min_length=10.0, max_length=10.0, **STRAIGHT), 1)
    assert (camera.shake_frame(frame, moving, 0) - frame).abs().mean() > 0.1


def test_training_pairs_filmed_by_the_camera():
    recipe = BlurRecipe(camera_probability=1.0, sharp_probability=0.0)
    mixture = Mixture([(DeadLeavesSource(pool=2, side=160), 1.0)], recipe)
    blurred, sharp = mixture.batch(seed=1, step=0, batch=2, size=32, frames=3)
    assert blurred.shape == sharp.shape == (2, 3, 32, 32, 3)
    assert np.isfinite(blurred).all() and 0 <= blurred.min() and blurred.max() <= 1
    again = mixture.batch(seed=1, step=0, batch=2, size=32, frames=3)
    assert np.array_equal(again[0], blurred) and np.array_equal(again[1], sharp)
    assert not np.allclose(blurred, sharp, atol=0.02)


def test_the_true_chord_and_displacement_are_what_the_camera_filmed_where_it_filmed_them():
    # a spot 40 px left of the view's centre, the camera rolling: there the blur is longer than
    # at the centre, and the truth must say so
    spec = camera.CameraSpec(min_length=2.0, max_length=2.0, wobble=0.0, jerk_probability=0.0, max_roll=8.0, max_zoom=0.0)
    path = camera.draw_path(np.random.default_rng(3), spec, 3)
    blurred, sharp = camera.film(dot_scene(), path, 3, (128, 128), centre=(120.0, 80.0))
    spot = truth.view_positions(centroid(sharp[1]), (128, 128))
    chord = truth.exposure_chords(path, 1, spot)
    assert np.linalg.norm(chord) > 2 * np.linalg.norm(truth.exposure_chords(path, 1, np.zeros(2)))
    assert length_of(blurred[1], sharp[1]) == pytest.approx(np.linalg.norm(chord), rel=0.05)
    np.testing.assert_allclose(truth.displacements(path, 1, spot), centroid(sharp[2]) - centroid(sharp[0]), atol=0.1)


def centroid(frame: torch.Tensor) -> np.ndarray:
    """Where a filmed spot's light is (x, y pixels)."""
    light = frame[0].double().pow(camera.GAMMA)
    y, x = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in light.shape), indexing="ij")
    return np.array([float((light * x).sum() / light.sum()), float((light * y).sum() / light.sum())])
