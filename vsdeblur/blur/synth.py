"""Motion blur synthesis from sharp material.

Three ways to blur, all in linear light (an sRGB-like gamma of 2.2 is undone first, because a
camera integrates light, not code values), then the extras real blurred video carries:

- camera shake: a random trajectory (a walk with inertia and sudden jerks, as in Boracchi &
  Foi's model) rasterised into a kernel and convolved with the frame;
- frame averaging, as REDS and GoPro were made: the mean of consecutive sharp frames of a
  high-frame-rate source;
- sub-frame shifts, for sources too slow to average: the global motion between neighbouring
  frames (phase correlation) becomes the trajectory of the kernel for the centre frame;
- extras: signal-dependent noise and a round trip through a lossy codec.

Frames are float32 H x W x 3 arrays in [0, 1].
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

GAMMA = 2.2  # the project's transfer: linear light is code ** GAMMA
LUMA = (0.2126, 0.7152, 0.0722)  # BT.709's weights of R, G and B in a luma or luminance


@dataclass(frozen=True)
class ShakeSpec:
    """The distribution camera-shake kernels are drawn from (lengths in pixels)."""

    min_length: float = 2.0
    max_length: float = 24.0
    max_curvature: float = 1.0  # 0: straight lines; 1: strongly curved, jerky paths
    kernel_size: int = 33  # odd; trajectories are scaled down to fit
    log_lengths: bool = False  # lengths log-uniform: each octave (2-4, 4-8, ...) equally likely


@dataclass(frozen=True)
class ExtrasSpec:
    max_noise: float = 0.012  # std of read noise; shot noise scales with it
    compress_probability: float = 0.5
    quality_range: tuple[int, int] = (3, 12)  # MJPEG qscale (lower is better quality)


def shake_trajectory(rng: np.random.Generator, length: float, curvature: float, points: int = 64) -> np.ndarray:
    """A random camera path of about `length` pixels: N x 2 positions, centred on zero."""
    velocity = rng.normal(size=2)
    velocity /= np.linalg.norm(velocity) + 1e-9
    position = np.zeros(2)
    path = [position.copy()]
    for _ in range(points - 1):
        # inertia keeps the direction; curvature bends it; rare jerks turn it sharply
        turn = rng.normal(scale=0.35 * curvature, size=2)
        if rng.random() < 0.05 * curvature:
            turn += rng.normal(scale=1.5 * curvature, size=2)
        velocity = velocity + turn
        velocity /= np.linalg.norm(velocity) + 1e-9
        position = position + velocity
        path.append(position.copy())
    path = np.array(path)
    extent = np.ptp(path, axis=0).max()
    path = (path - path.mean(axis=0)) * (length / max(extent, 1e-6))
    return path


def rasterise(path: np.ndarray, size: int) -> np.ndarray:
    """Splat a trajectory with bilinear weights into a size x size kernel summing to one.
    Paths longer than the kernel are scaled down to fit."""
    half = size // 2
    extent = np.abs(path).max()
    if extent > half - 1:
        path = path * ((half - 1) / extent)
    # resample densely so that every pixel the path crosses receives weight
    steps = max(2, int(np.ceil(np.linalg.norm(np.diff(path, axis=0), axis=1).sum() * 4)))
    t = np.linspace(0, len(path) - 1, steps)
    dense = np.stack([np.interp(t, np.arange(len(path)), path[:, i]) for i in range(2)], axis=1) + half
    kernel = np.zeros((size, size), np.float64)
    x0, y0 = np.floor(dense[:, 0]).astype(int), np.floor(dense[:, 1]).astype(int)
    fx, fy = dense[:, 0] - x0, dense[:, 1] - y0
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(kernel, (y0 + dy, x0 + dx), w)
    return (kernel / kernel.sum()).astype(np.float32)


def shake_kernel(rng: np.random.Generator, spec: ShakeSpec = ShakeSpec()) -> np.ndarray:
    if spec.log_lengths:
        length = float(np.exp(rng.uniform(np.log(max(spec.min_length, 0.5)), np.log(max(spec.max_length, 0.5)))))
    else:
        length = rng.uniform(spec.min_length, spec.max_length)
    curvature = rng.uniform(0.0, spec.max_curvature)
    return rasterise(shake_trajectory(rng, length, curvature), spec.kernel_size)


def to_linear(image: np.ndarray) -> np.ndarray:
    return np.power(np.clip(image, 0, 1), GAMMA)


def from_linear(image: np.ndarray) -> np.ndarray:
    return np.power(np.clip(image, 0, 1), 1 / GAMMA)


def convolve(image: np.ndarray, kernel: np.ndarray, linear: bool = True) -> np.ndarray:
    """Blur an H x W x 3 image with a kernel, in linear light (what a sensor integrates) or,
    with linear=False, on the code values (what many synthetic datasets do); borders reflect.
    Through the FFT: ten times faster than a direct convolution with 33x33 kernels."""
    k = kernel.shape[0] // 2
    source = to_linear(image) if linear else image
    x = torch.from_numpy(np.ascontiguousarray(source.transpose(2, 0, 1), dtype=np.float32))
    x = F.pad(x[None], (k, k, k, k), mode="reflect")[0]
    h, w = x.shape[-2:]
    spread = torch.zeros(h, w)
    spread[: kernel.shape[0], : kernel.shape[1]] = torch.from_numpy(kernel)
    spread = torch.roll(spread, (-k, -k), (0, 1))  # kernel centre at the origin
    y = torch.fft.irfft2(torch.fft.rfft2(x) * torch.fft.rfft2(spread), s=(h, w))[:, k : h - k, k : w - k]
    y = y.numpy().transpose(1, 2, 0)
    return (from_linear(y) if linear else np.clip(y, 0, 1)).astype(np.float32)


def average_frames(frames: list[np.ndarray]) -> np.ndarray:
    """Average consecutive sharp frames in linear light, as REDS and GoPro were made."""
    return from_linear(np.mean([to_linear(f) for f in frames], axis=0)).astype(np.float32)


def global_shift(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(dx, dy) that moves frame a onto frame b, by phase correlation of their luma."""
    la, lb = a.mean(axis=2), b.mean(axis=2)
    window = np.outer(np.hanning(la.shape[0]), np.hanning(la.shape[1]))
    fa, fb = np.fft.fft2(la * window), np.fft.fft2(lb * window)
    cross = fb * np.conj(fa)
    corr = np.fft.ifft2(cross / (np.abs(cross) + 1e-9)).real
    dy, dx = np.unravel_index(np.argmax(corr), corr.shape)
    h, w = corr.shape
    return np.array([dx - w if dx > w // 2 else dx, dy - h if dy > h // 2 else dy], np.float64)


def subframe_blur(previous: np.ndarray, frame: np.ndarray, following: np.ndarray, exposure: float = 1.0, size: int = 33) -> np.ndarray:
    """Blur `frame` along the global motion from its previous to its following frame, over
    `exposure` (0..1) of the frame interval: what averaging sub-frames would give."""
    back, forth = global_shift(frame, previous), global_shift(frame, following)
    s = np.linspace(-0.5 * exposure, 0.5 * exposure, 33)
    # a quadratic through previous (s=-1), frame (0) and following (+1)
    path = np.stack([(forth - back)[i] / 2 * s + (forth + back)[i] / 2 * s**2 for i in range(2)], axis=1)
    if np.abs(path).max() < 0.25:
        return frame.copy()
    return convolve(frame, rasterise(path, size))


SOFT_SIGMA = (0.5, 3.0)  # Gaussian std along the softest direction, pixels


def soft_kernel(rng: np.random.Generator) -> np.ndarray:
    """A random elliptical Gaussian: soft edges in real footage (defocus, shadows, gradients)
    are often soft in one direction only, which is what motion blur looks like locally."""
    major = rng.uniform(*SOFT_SIGMA)
    minor = major * rng.uniform(0.3, 1.0)
    angle = rng.uniform(0, np.pi)
    radius = int(np.ceil(3 * major))
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1].astype(np.float64)
    u, v = x * np.cos(angle) + y * np.sin(angle), -x * np.sin(angle) + y * np.cos(angle)
    kernel = np.exp(-0.5 * ((u / major) ** 2 + (v / minor) ** 2))
    return (kernel / kernel.sum()).astype(np.float32)


def soften(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Put part of a sharp T x H x W x 3 clip out of focus, the same way in every frame: an
    elliptical Gaussian blur blended in through a smooth random mask (the whole frame, one time
    in three). Real footage is full of soft content that must be left alone; trained only on
    crisp references a model takes all softness for motion blur."""
    kernel = soft_kernel(rng)
    soft = np.stack([convolve(frame, kernel, linear=False) for frame in frames])
    if rng.random() < 1 / 3:
        return soft
    h, w = frames.shape[1:3]
    coarse = torch.from_numpy(rng.random((1, 1, 3, 3), dtype=np.float32))
    mask = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)[0, 0].numpy()
    mask = np.clip((mask - 0.35) / 0.3, 0, 1)[None, :, :, None]
    return (frames * (1 - mask) + soft * mask).astype(np.float32)


def add_extras(image: np.ndarray, rng: np.random.Generator, spec: ExtrasSpec = ExtrasSpec()) -> np.ndarray:
    """Signal-dependent noise, then (sometimes) a lossy JPEG round trip."""
    sigma = rng.uniform(0, spec.max_noise)
    if sigma > 0:
        # read noise plus shot noise, which grows with the signal: at white the std is twice
        # sigma (a variance of sigma * image would make mid-grey several times noisier than
        # any camera's video, and teach a model to smooth clean footage)
        variance = sigma**2 * (1 + 3 * image)
        image = image + rng.normal(size=image.shape).astype(np.float32) * np.sqrt(variance).astype(np.float32)
    image = np.clip(image, 0, 1).astype(np.float32)
    if rng.random() < spec.compress_probability:
        image = jpeg_roundtrip(image, int(rng.integers(*spec.quality_range)))
    return image


def jpeg_roundtrip(image: np.ndarray, qscale: int) -> np.ndarray:
    """Encode and decode with FFmpeg's MJPEG encoder (4:2:0), as a camera or upload would."""
    # PyAV is loaded here, not with the module: the engine's motion prior reads this module's
    # transfer (GAMMA) on machines without PyAV (the GPU machine's bench)
    import av

    h, w = image.shape[:2]
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height, codec.pix_fmt = w - w % 2, h - h % 2, "yuvj420p"
    codec.time_base = Fraction(1, 25)
    codec.options = {"qmin": str(qscale), "qmax": str(qscale)}
    rgb = (np.clip(image[: codec.height, : codec.width], 0, 1) * 255 + 0.5).astype(np.uint8)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuvj420p")
    packets = codec.encode(frame) + codec.encode(None)
    decoder = av.CodecContext.create("mjpeg", "r")
    decoded = [f for p in packets for f in decoder.decode(p)]
    out = decoded[0].to_ndarray(format="rgb24").astype(np.float32) / 255
    result = image.copy()
    result[: codec.height, : codec.width] = out
    return result


class ShakeBlur:
    """Blur a clip frame by frame with camera shake: each frame gets its own kernel, drawn from
    (seed, frame index), so a clip blurs the same way every time. Shaped like the engine
    (`.frames(iterable)` and `.tagged(iterable of (tag, frame))` in, same shapes and dtypes
    out), so it runs anywhere the engine does."""

    def __init__(self, shake: ShakeSpec = ShakeSpec(), noise: float = 0.0, seed: int = 0, linear: bool = True) -> None:
        self.shake, self.noise, self.seed, self.linear = shake, noise, seed, linear

    def frames(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        return (frame for _, frame in self.tagged((None, frame) for frame in frames))

    def tagged(self, items: Iterable[tuple[Any, np.ndarray]]) -> Iterator[tuple[Any, np.ndarray]]:
        for index, (tag, frame) in enumerate(items):
            yield tag, self._blurred(index, frame)

    def _blurred(self, index: int, frame: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng([self.seed, index])
        white = 1.0 if frame.dtype.kind == "f" else float(np.iinfo(frame.dtype).max)
        image = convolve(frame.astype(np.float32) / white, shake_kernel(rng, self.shake), self.linear)
        if self.noise > 0:
            # the noisy sensor was shaken: noise is added after the blur, never blurred
            image = add_extras(image, rng, ExtrasSpec(max_noise=self.noise, compress_probability=0.0))
        return image if frame.dtype.kind == "f" else (image * white + 0.5).astype(frame.dtype)
