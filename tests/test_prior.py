"""The deconvolution prior (vsdeblur.prior): kernels that blur as the virtual camera films, and a
tiled deconvolution that restores a known blur, leaves unblurred frames alone and has no seams."""

from __future__ import annotations

import math

import av
import numpy as np
import pytest
import torch

from tests.conftest import SAMPLE_CLIP
from vsdeblur.blur import camera, synth
from vsdeblur.metrics import psnr
from vsdeblur.prior import PriorSettings, deblur, estimate_noise
from vsdeblur.prior.deconvolve import pool_field
from vsdeblur.prior.kernel import EXACT, line_kernel, path_kernels, pose_offsets

TILES = PriorSettings(tile=1)  # one tile per cell of the field, however small the frame


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


@pytest.mark.parametrize("confidence", [1.0, 0.5])
def test_no_blur_gives_the_frame_back(frame, confidence):
    assert torch.allclose(deblur(frame, torch.zeros(2), confidence), frame, atol=1e-6)
    assert torch.allclose(deblur(frame, torch.zeros(3, 4, 2), confidence), frame, atol=1e-6)


def test_zero_confidence_gives_the_frame_back(frame):
    field = torch.tensor([6.0, 2.0]).expand(2, 3, 2)
    assert torch.allclose(deblur(frame, field, 0.0, settings=TILES), frame, atol=1e-6)
    # half the tiles trusted: where only an untrusted one reaches (from its centre to the
    # frame's corner) the frame comes back untouched
    confidence = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    out = deblur(frame, field, confidence, settings=TILES)
    assert torch.allclose(out[:, 72:, :20], frame[:, 72:, :20], atol=1e-6)
    assert not torch.allclose(out[:, :23, :20], frame[:, :23, :20], atol=1e-3)


def test_half_confidence_goes_half_way_in_linear_light(frame):
    field = torch.tensor([[[6.0, 2.0], [-3.0, 5.0]]])
    full = deblur(frame, field, 1.0, settings=TILES)
    half = deblur(frame, field, torch.full((1, 2), 0.5), settings=TILES)
    middle = (frame.pow(camera.GAMMA) + full.pow(camera.GAMMA)) / 2
    unclipped = (full > 0) & (full < 1)  # where the full restoration was not clipped
    assert torch.allclose(half.pow(camera.GAMMA)[unclipped], middle[unclipped], atol=1e-5)
    assert not torch.allclose(half, full, atol=1e-2)


def quantised(image: torch.Tensor) -> torch.Tensor:
    return (image * 255).round() / 255


@pytest.mark.parametrize("chord", [(8.0, 3.0), (-3.0, 12.0)])
def test_a_known_straight_blur_is_undone(frame, chord):
    half = (chord[0] / 2, chord[1] / 2)
    blurred = quantised(filmed(frame, camera_path([(-half[0], -half[1]), half])))
    to_image = lambda x: x.permute(1, 2, 0).numpy()  # noqa: E731
    before = psnr(to_image(blurred), to_image(frame))
    gain = lambda settings: psnr(to_image(deblur(blurred, torch.tensor(chord), settings=settings)), to_image(frame)) - before  # noqa: E731
    # told that the chord is exact, the prior undoes most of the blur; by default it allows for
    # the chord's error and a real exposure's bends, and undoes less
    assert gain(PriorSettings(uncertainty=EXACT)) >= 3
    assert gain(PriorSettings()) >= 0.5


def test_a_bent_exposure_is_undone_from_its_chord_only_allowing_for_the_bend(frame):
    points = [(-5.0, 0.0), (-2.0, 2.0), (0.0, 2.5), (3.0, 1.5), (5.0, -1.0)]
    blurred = quantised(filmed(frame, camera_path(points)))
    chord = torch.tensor(points[-1]) - torch.tensor(points[0])
    to_image = lambda x: x.permute(1, 2, 0).numpy()  # noqa: E731
    before = psnr(to_image(blurred), to_image(frame))
    gain = lambda settings: psnr(to_image(deblur(blurred, chord, settings=settings)), to_image(frame)) - before  # noqa: E731
    uncertain, exact = gain(PriorSettings()), gain(PriorSettings(uncertainty=EXACT))
    assert uncertain >= 0.5 and uncertain >= exact + 3, (uncertain, exact)


def test_tiles_with_different_blurs_have_no_seams():
    field = torch.tensor([[[6.0, 0.0], [0.0, 9.0], [-4.0, 4.0]], [[12.0, 5.0], [0.0, 0.0], [2.0, -7.0]]])
    grey = torch.full((3, 72, 120), 0.4)
    assert torch.allclose(deblur(grey, field, settings=TILES), grey, atol=1e-5)
    # a smooth gradient stays smooth where the tiles meet (every 36 and 40 pixels): its second
    # differences grow by less than a hard seam's 1e-3 (the frame's own edges, where the scene
    # beyond is unknown, left aside)
    y, x = torch.meshgrid(torch.linspace(0, 1, 72), torch.linspace(0, 1, 120), indexing="ij")
    smooth = (0.2 + 0.5 * x * (1 - 0.3 * y) + 0.1 * torch.sin(3 * y)).expand(3, -1, -1)
    out = deblur(smooth, field, noise=0.002, settings=TILES)
    bumps = lambda z, dim: z[:, 12:-12, 12:-12].diff(dim=dim).diff(dim=dim).abs().max()  # noqa: E731
    for dim in (1, 2):
        assert bumps(out, dim) < bumps(smooth, dim) + 5e-4


# exact kernels (no uncertainty) have zeros in their spectrum: noiseless, only the rule's
# floor on lambda keeps 0 / 0 from the result
SETTINGS = (PriorSettings(tile=1), PriorSettings(tile=1, uncertainty=EXACT))


@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize("value", [0.0, 1.0, 0.5])
def test_flat_frames_stay_flat_and_finite(value, settings):
    flat = torch.full((3, 40, 64), value)
    for noise in (None, 0.0):
        out = deblur(flat, torch.tensor([[[16.0, 0.0], [0.0, 0.0]]]), noise=noise, settings=settings)
        assert torch.isfinite(out).all()
        assert torch.allclose(out, flat, atol=1e-5)


@pytest.mark.parametrize("settings", SETTINGS)
def test_black_and_white_halves_stay_finite_and_in_range(settings):
    image = torch.zeros(3, 40, 64)
    image[:, :, 32:] = 1
    out = deblur(image, torch.tensor([16.0, 0.0]), noise=0.0, settings=settings)
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_the_noise_estimate_finds_added_noise(frame):
    smooth = torch.nn.functional.avg_pool2d(frame[None], 5, stride=1, padding=2, count_include_pad=False)[0]
    noisy = smooth + 0.02 * torch.randn(smooth.shape, generator=torch.Generator().manual_seed(1))
    assert estimate_noise(noisy) == pytest.approx(0.02, rel=0.25)
    assert estimate_noise(torch.full((3, 20, 20), 0.5)) == pytest.approx(1 / (255 * math.sqrt(12)))


def test_a_plain_gradient_prior_smooths_what_the_rule_leaves_alone(frame):
    # a blur of a fifth of a pixel: the rule barely touches the frame, a plain gradient prior
    # of fixed weight (the design it replaces) smooths it
    field = torch.tensor([0.2, 0.0])
    assert (deblur(frame, field) - frame).abs().max() < 1 / 255
    plain = deblur(frame, field, settings=PriorSettings(nsr=0.05, keep_passed=False))
    assert (plain - frame).abs().max() > 4 / 255


def test_a_field_has_rows_columns_and_two_components(frame):
    with pytest.raises(ValueError, match="rows x cols x 2"):
        deblur(frame, torch.zeros(3, 2))


def test_a_fine_field_is_pooled_by_confidence():
    field = torch.zeros(4, 6, 2)
    field[:, :3] = torch.tensor([8.0, 0.0])
    field[:, 3:] = torch.tensor([0.0, 8.0])
    confidence = torch.ones(4, 6)
    confidence[:, 2] = 0  # untrusted: it does not pull the middle tile's chord
    chords, trust = pool_field(field, confidence, (40, 60), 20)
    assert chords.shape == (2, 3, 2)
    assert torch.allclose(chords[:, 0], torch.tensor([8.0, 0.0]).expand(2, 2))
    # the middle tile covers columns 2 (untrusted) and 3
    assert torch.allclose(chords[:, 1], torch.tensor([0.0, 8.0]).expand(2, 2))
    assert torch.allclose(trust, torch.tensor([1.0, 0.5, 1.0]).expand(2, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_restores_as_the_cpu_does(frame):
    field = torch.tensor([[[6.0, 2.0], [0.0, 9.0]]])
    cpu = deblur(frame, field, settings=TILES)
    cuda = deblur(frame.cuda(), field.cuda(), settings=TILES)
    assert cuda.device.type == "cuda" and torch.allclose(cuda.cpu(), cpu, atol=1e-4)
