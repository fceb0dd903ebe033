"""The deconvolution prior (vsdeblur.prior): kernels that blur as the virtual camera films."""

from __future__ import annotations

import math

import av
import numpy as np
import pytest
import torch

from tests.conftest import SAMPLE_CLIP
from vsdeblur.blur import camera, synth
from vsdeblur.prior.kernel import line_kernel, path_kernels, pose_offsets


@pytest.fixture(scope="module")
def frame() -> torch.Tensor:
    """A 96 x 128 piece of the sample clip's first frame (fur, grass, edges), 3 x H x W in [0, 1]."""
    with av.open(str(SAMPLE_CLIP)) as container:
        image = next(container.decode(video=0)).to_ndarray(format="rgb24")
    return torch.from_numpy(image[300:396, 560:688].copy()).permute(2, 0, 1).float() / 255


def camera_path(points: list[tuple[float, float]], shutter: float = 1.0) -> camera.CameraPath:
    """A translation-only camera path through `points` (dx, dy) at times spread over the
    exposure of frame 0: two points make it straight."""
    times = np.linspace(-0.5, 0.5, len(points)) * shutter
    poses = np.zeros((len(points), 4))
    poses[:, :2] = points
    return camera.CameraPath(times, poses, shutter, 0.0)


def filmed(image: torch.Tensor, path: camera.CameraPath) -> torch.Tensor:
    """camera.py's own rendering of frame 0's exposure along `path`."""
    return camera.shake_frame(image, path, 0)


def blurred_by(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """The image convolved with the kernel in linear light (synth.convolve)."""
    result = synth.convolve(image.permute(1, 2, 0).numpy(), kernel.numpy())
    return torch.from_numpy(result).permute(2, 0, 1)


def interior_psnr(a: torch.Tensor, b: torch.Tensor, border: int = 16) -> float:
    """PSNR in dB of float images away from the border, where the camera's and the test's
    reflections of the frame differ."""
    a, b = a[:, border:-border, border:-border], b[:, border:-border, border:-border]
    return float(10 * torch.log10(1 / (a - b).square().mean()))


@pytest.mark.parametrize("chord", [(3.0, 0.0), (5.3, 2.1), (-7.7, 9.2), (0.6, -0.4), (14.0, 3.0)])
def test_a_straight_chord_blurs_as_the_camera_films_it(frame, chord):
    half = (chord[0] / 2, chord[1] / 2)
    filmed_frame = filmed(frame, camera_path([(-half[0], -half[1]), half]))
    assert interior_psnr(blurred_by(frame, line_kernel(*chord)), filmed_frame) >= 45


def test_a_curved_path_blurs_as_the_camera_films_it_and_its_direction_counts(frame):
    # an accelerating, bending pan: the kernel is lopsided about mid-exposure
    points = [(-4.0, 0.0), (-1.5, 1.0), (0.0, 1.5), (3.0, 1.0), (8.0, -1.0)]
    path = camera_path(points)
    poses = path.exposure(0, math.hypot(*frame.shape[-2:]) / 2) - path.at(np.zeros(1))
    kernel = path_kernels(pose_offsets(poses))
    filmed_frame = filmed(frame, path)
    assert interior_psnr(blurred_by(frame, kernel), filmed_frame) >= 45
    assert interior_psnr(blurred_by(frame, kernel.flip(0, 1)), filmed_frame) < 35


def test_a_kernel_resamples_as_the_camera_does(frame):
    # one view half a pixel off: the kernel is the camera's interpolation kernel itself
    offset = np.array([[0.5, -0.25, 0.0, 0.0]])
    h, w = frame.shape[-2:]
    view = camera.views(frame.pow(camera.GAMMA), offset, ((w - 1) / 2, (h - 1) / 2), (h, w))[0].clamp(0, 1).pow(1 / camera.GAMMA)
    # the same resampling: equal to float rounding (Keys' a = -0.5 instead of -0.75: 48 dB)
    assert interior_psnr(blurred_by(frame, path_kernels(pose_offsets(offset))), view) >= 60


def test_a_roll_blurs_the_edges_more_than_the_centre():
    poses = np.zeros((9, 4))
    poses[:, 2] = np.radians(np.linspace(-0.5, 0.5, 9))
    centre, edge = pose_offsets(poses), pose_offsets(poses, at=(300.0, 0.0))
    assert float(centre.abs().max()) == 0
    assert float(edge[:, 1].max() - edge[:, 1].min()) == pytest.approx(300 * math.radians(1.0), rel=1e-3)
