"""Blur kernels from camera motion: the point-spread function of one exposure, as a normalised,
anti-aliased K x K tensor (K odd, the kernel's centre at K // 2).

A frame exposed while the camera moves is the mean, in linear light, of the sharp views along
its path (vsdeblur.blur.camera). If the scene point seen at pixel p moves by d(s) over the
exposure (relative to the mid-exposure view), the blurred frame is
    blurred(p) = mean_s sharp(p + d(s)) = sum_q k(q) sharp(p - q),  k = mean_s delta(q + d(s)),
so the kernel's mass lies at -d(s): a straight chord, centred on the mid-exposure view, is
symmetric, and its sign does not matter; a curved path's does.

Each point of the path is splatted with the Keys cubic (a = -0.75), the interpolation kernel
that camera.py's views (PyTorch's bicubic resampling) sample the scene with: a kernel built from
a path is then the exact average of the camera's views along it, and a straight chord, sampled
densely, its continuous limit. A zero-length blur is the unit impulse: deconvolving by it
changes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

CUBIC_A = -0.75  # PyTorch's bicubic (grid_sample, interpolate): what camera.py resamples with
SUPPORT = 2  # the cubic's half-width, pixels
SAMPLES_PER_PIXEL = 8  # along a straight chord: dense enough to be its continuous limit


def cubic(x: torch.Tensor) -> torch.Tensor:
    """The Keys cubic interpolation kernel with a = -0.75 (zero beyond |x| = 2)."""
    x = x.abs()
    a = CUBIC_A
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return torch.where(x <= 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def kernel_size(extent: float) -> int:
    """The odd size that holds a path reaching `extent` pixels from the centre, with the
    cubic's support."""
    return 2 * (math.ceil(extent) + SUPPORT) + 1


def chord_samples(chords: torch.Tensor, samples: int | None = None) -> torch.Tensor:
    """Points evenly spread over each straight exposure chord, centred on zero (mid-exposure):
    ... x S x 2 for chords ... x 2 (dx, dy pixels). S defaults to SAMPLES_PER_PIXEL per pixel
    of the longest chord (one point for no blur)."""
    if samples is None:
        longest = float(chords.detach().norm(dim=-1).max()) if chords.numel() else 0.0
        samples = max(1, math.ceil(longest * SAMPLES_PER_PIXEL))
    s = (torch.arange(samples, dtype=chords.dtype, device=chords.device) + 0.5) / samples - 0.5
    return chords[..., None, :] * s[:, None]


def path_kernels(offsets: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """Kernels of sampled exposure paths: offsets ... x S x 2 are where the scene point seen at
    a pixel lies at S equally spaced instants of the exposure, relative to mid-exposure (dx, dy
    pixels). Returns ... x K x K, each summing to one."""
    if size is None:
        size = kernel_size(float(offsets.detach().abs().max()) if offsets.numel() else 0.0)
    # k(q) = mean_s cubic(qx + dx_s) cubic(qy + dy_s): separable per sample, summed by einsum
    wx = _splat_weights(offsets[..., 0], size)  # ... x S x K
    wy = _splat_weights(offsets[..., 1], size)
    kernel = torch.einsum("...sy,...sx->...yx", wy, wx) / offsets.shape[-2]
    # the cubic weights of any position sum to one: renormalising only removes rounding
    return kernel / kernel.sum(dim=(-2, -1), keepdim=True)


def _splat_weights(offsets: torch.Tensor, size: int) -> torch.Tensor:
    """cubic(q + d) for each offset d (...) and kernel index q - size // 2 (... x K). Only the
    four taps around -d are nonzero: they alone are evaluated (the cubic at every tap was
    most of kernel_moments' time), then placed; taps beyond the kernel are dropped."""
    position = size // 2 - offsets  # where the mass lies, in kernel indices
    first = torch.floor(position) - 1
    index = first[..., None] + torch.arange(4, device=offsets.device, dtype=offsets.dtype)
    weights = cubic(index - position[..., None])
    inside = (index >= 0) & (index < size)
    dense = torch.zeros(*offsets.shape, size, dtype=offsets.dtype, device=offsets.device)
    return dense.scatter_add_(-1, index.clamp(0, size - 1).long(), torch.where(inside, weights, torch.zeros_like(weights)))


def line_kernels(chords: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """Kernels of straight exposure chords ... x 2 (dx, dy pixels, the displacement from the
    start to the end of the exposure): ... x K x K, each summing to one."""
    if size is None:
        size = kernel_size(float(chords.detach().abs().max()) / 2 if chords.numel() else 0.0)
    return path_kernels(chord_samples(chords), size)


def line_kernel(dx: float, dy: float, size: int | None = None) -> torch.Tensor:
    """One straight exposure chord's kernel (float32, on the CPU)."""
    return line_kernels(torch.tensor([dx, dy], dtype=torch.float32), size)


def pose_offsets(poses: np.ndarray, at: tuple[float, float] = (0.0, 0.0), middle: np.ndarray | None = None) -> torch.Tensor:
    """Camera poses (N x 4: dx, dy, roll in radians, log zoom, as vsdeblur.blur.camera draws
    them) as the offsets path_kernels takes at view position `at` (x, y from the view's centre):
    how far the scene point seen there under each pose lies from the one the `middle` pose
    (default: the identity) sees there. Locally a roll or zoom is a translation that grows with
    the distance from the centre, which is why tiles away from it blur more."""
    middle = np.zeros(4) if middle is None else np.asarray(middle, np.float64)
    return torch.from_numpy(_seen(np.asarray(poses, np.float64), at) - _seen(middle[None], at)).float()


def _seen(poses: np.ndarray, at: tuple[float, float]) -> np.ndarray:
    """Where the view pixel `at` lies in the scene under each pose: (dx, dy) + R(roll) at / zoom
    (camera.py's convention), N x 2."""
    roll, scale = poses[:, 2], np.exp(-poses[:, 3])
    x, y = at
    return poses[:, :2] + scale[:, None] * np.stack([x * np.cos(roll) - y * np.sin(roll), x * np.sin(roll) + y * np.cos(roll)], axis=1)


@dataclass(frozen=True)
class Uncertainty:
    """How far a real exposure may be from its straight chord as given: the chord's own error
    (an estimate from the neighbouring frames) and the path's bend and changes of speed within
    the exposure (a handheld camera's wobble: on vsdeblur.blur.camera's paths the departure from
    the chord is 6.5 % of its length across it and 9 % along it, rms). Kernels are drawn from
    it with a fixed seed, so that every call, and every frame of a clip, sees the same draws."""

    length: float = 0.15  # std of the log of the length's error
    axis: float = 8.0  # std of the axis's error, degrees
    bend: float = 0.2  # std of the path's departure from the chord, in chord lengths (see drawn_paths)
    draws: int = 24


EXACT = Uncertainty(length=0.0, axis=0.0, bend=0.0, draws=1)
_SEED = 20261210


def drawn_paths(chords: torch.Tensor, uncertainty: Uncertainty, samples: int | None = None) -> torch.Tensor:
    """Exposure paths around each chord (... x 2): ... x D x S x 2 positions relative to
    mid-exposure. Draw d scales the chord's length by exp(N(0, length)), turns it by N(0, axis)
    and adds 4 s^2 v + s (4 s^2 - 1) w (s in -1/2 .. 1/2: zero at mid-exposure, the two ends
    still one chord apart), v and w each N(0, (bend x length)^2) per axis: a bend, an
    acceleration and a change of speed."""
    draws = uncertainty.draws
    noise = torch.randn(draws, 6, generator=torch.Generator().manual_seed(_SEED), dtype=torch.float64)
    noise[0] = 0  # the first draw is the chord itself
    noise = noise.to(chords.device, chords.dtype)
    length = chords.norm(dim=-1, keepdim=True)[..., None, None]  # ... x 1 x 1 x 1
    angle = torch.atan2(chords[..., 1], chords[..., 0])[..., None] + noise[:, 1] * math.radians(uncertainty.axis)
    scaled = length[..., 0, 0] * torch.exp(noise[:, 0] * uncertainty.length)
    drawn = torch.stack([scaled * torch.cos(angle), scaled * torch.sin(angle)], dim=-1)  # ... x D x 2
    straight = chord_samples(drawn, samples)  # ... x D x S x 2
    count = straight.shape[-2]
    s = ((torch.arange(count, dtype=chords.dtype, device=chords.device) + 0.5) / count - 0.5)[:, None]
    v = noise[:, None, 2:4] * uncertainty.bend * length
    w = noise[:, None, 4:6] * uncertainty.bend * length
    return straight + 4 * s**2 * v + s * (4 * s**2 - 1) * w


def kernel_moments(chords: torch.Tensor, uncertainty: Uncertainty = Uncertainty(), size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean kernel over the paths drawn around each chord (... x K x K) and the mean of
    their autocorrelations (... x (2K - 1) x (2K - 1), centred): the Fourier transforms of
    E[H] and of E|H|^2, so that E|H|^2 - |E[H]|^2 is how uncertain each frequency of the blur is."""
    paths = drawn_paths(chords, uncertainty)
    if size is None:
        size = kernel_size(float(paths.detach().abs().max()) if paths.numel() else 0.0)
    kernels = path_kernels(paths, size)  # ... x D x K x K
    spectrum = torch.fft.rfft2(kernels, s=(2 * size, 2 * size))
    correlation = torch.fft.irfft2(spectrum.abs().square().mean(dim=-3), s=(2 * size, 2 * size))
    correlation = torch.roll(correlation, (size - 1, size - 1), (-2, -1))[..., : 2 * size - 1, : 2 * size - 1]
    return kernels.mean(dim=-3), correlation
