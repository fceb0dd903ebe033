"""The shutter (the share of the frame interval an exposure lasts), estimated from the video.

The motion estimator gives how far frame t's content moves over two frame intervals, t-1 to
t+1 (`Motion.displacement`, D per tile); frame t's own blur is its exposure chord, of length L.
At a steady camera speed L = shutter x |D| / 2, so the shutter is 2 L / |D| once L is read from
the frame itself. The axis of the blur is known (D's), only its length is not.

A straight exposure averages the scene along the chord in linear light: along the axis the
kernel is a box of length L, whose derivative is two opposite impulses L apart. The frame's
derivative along the axis is the sharp frame's convolved with them, so its autocorrelation
along the axis has a trough at lag L (Yitzhaky and Kopeika 1997), wherever the sharp
derivatives themselves are correlated over less than L. Real content is smooth, its
derivatives correlated over pixels: the derivative's spectrum is read twice, once as it is
(long blurs) and once whitened where the noise leaves signal (short blurs), and the two
normalised autocorrelations averaged (_axis_power). Each candidate shutter s puts the
trough at lag s |D_i| / 2 in tile i: the tiles' normalised autocorrelations at those lags,
averaged with the tiles' confidence, are one curve over s for the whole frame, and its lowest
point is the frame's shutter. Tiles whose open-shutter chord |D| / 2 is too short to show a
trough are left out; so is a frame without both neighbours (a one-sided displacement assumes
the speed of one interval held over two). docs/training.md, "The shutter, estimated", has the
choice of method, measured.

Frames are pooled over a clip by a weighted median: the path's unsteadiness makes single
frames' chords differ from the mean motion by about 10 % (docs/training.md, "Motion from the
neighbours"), and some frames (flat, or moving little) mislead outright.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from vsdeblur.blur.synth import GAMMA
from vsdeblur.motion.estimator import Motion
from vsdeblur.prior.deconvolve import estimate_noise, luminance

DEFAULT_SHUTTER = 0.5  # the 180-degree rule, film's common convention: what no evidence gives
MIN_SHUTTER = 0.05  # the shortest shutter a frame's curve considers
STEP = 0.01  # the candidates' spacing; the lowest one is refined between its neighbours
CONFIDENT = 0.5  # tiles whose motion is less certain do not say where the trough should be
MIN_CHORD = 2.0  # pixels: an open shutter's chord (|D| / 2) shorter than this shows no trough
MAX_LAG = 0.35  # the longest lag considered, in tile sides: a Hann-windowed tile's
#                 autocorrelation fades towards half its side
TAPER = 0.3  # cycles per pixel: a Gaussian taper of the derivative's spectrum, whose highest
#              frequencies are mostly noise, 8-bit rounding and aliasing
BINS_PER_CYCLE = 8  # bins of the projected spectrum per 1 / side: the lags reach 0.35 sides, so
#                    a frequency moved by half a bin turns the cosine by 0.14 rad at most
MIN_WEIGHT = 0.5  # pooled evidence below this (half a frame's worth) is none


def shutter_evidence(frame: torch.Tensor, motion: Motion, noise: float | None = None) -> tuple[float, float]:
    """Frame t's shutter, from its own blur and its motion `estimate(t-1, t, t+1)`: (shutter in
    (0, 1], weight >= 0). `frame` is 3 x H x W RGB or H x W luma, code values in [0, 1]. The
    weight is the share of the frame's tiles (by confidence) that are confident and move enough
    (|D| / 2 >= MIN_CHORD), so a frame is worth one at most; it is zero where the frame holds no
    evidence: no neighbour on either side, no such tile, or a curve without a trough. `noise`:
    the frame's luma's noise in code values, if the caller has it (None: estimate_noise)."""
    if motion.sides != 2:
        return DEFAULT_SHUTTER, 0.0
    luma, noise = _linear_luma(frame, noise)
    side = _tile_side(motion.centres)
    if side is None:
        return DEFAULT_SHUTTER, 0.0
    reach = motion.displacement.reshape(-1, 2).to(luma.device).float().norm(dim=1) / 2  # the chord at shutter 1
    weight = motion.confidence.reshape(-1).to(luma.device).float()
    usable = (weight >= CONFIDENT) & (reach >= MIN_CHORD)
    if not bool(usable.any()):
        return DEFAULT_SHUTTER, 0.0
    # the longest chord must still fit its lag in a tile: fast motion narrows the candidates
    longest = MAX_LAG * side / float(reach[usable].max())
    candidates = torch.arange(MIN_SHUTTER, min(1.0, longest) + STEP / 2, STEP, device=luma.device)
    if len(candidates) < 3:
        return DEFAULT_SHUTTER, 0.0
    centres = motion.centres.reshape(-1, 2).to(luma.device)[usable]
    axes = motion.displacement.reshape(-1, 2).to(luma.device).float()[usable] / (2 * reach[usable, None])
    tiles = _tiles(luma, centres, side)
    curves = _autocorrelations(tiles, axes, reach[usable, None] * candidates, noise)
    curve = (weight[usable, None] * curves).sum(dim=0) / weight[usable].sum()
    # a frame whose every tile is confident and moving enough is worth one
    return _lowest(curve, candidates, float(weight[usable].sum()) / len(weight))


def pooled_shutter(evidence: Iterable[tuple[float, float]], default: float = DEFAULT_SHUTTER) -> float:
    """A clip's shutter from its frames' (shutter, weight) evidence: the weighted median, or
    `default` where the weights add up to less than MIN_WEIGHT."""
    found = [(s, w) for s, w in evidence if w > 0 and math.isfinite(s) and math.isfinite(w)]
    total = sum(w for _, w in found)
    if total < MIN_WEIGHT:
        return default
    found.sort()
    running = 0.0
    for shutter, weight in found:
        running += weight
        if running >= total / 2:
            return shutter
    return found[-1][0]  # rounding left the running sum a hair short of half


def _linear_luma(frame: torch.Tensor, noise: float | None) -> tuple[torch.Tensor, float]:
    """H x W luma in linear light, where blur is an average (RGB is decoded per channel first),
    and the noise of the frame's luma in code values (`noise`, or estimated)."""
    x = torch.nan_to_num(torch.as_tensor(frame).float(), nan=0.0, posinf=1.0, neginf=0.0).clamp(0, 1)
    if x.ndim == 3 and x.shape[0] == 3:
        return luminance(x.pow(GAMMA))[0], estimate_noise(luminance(x)) if noise is None else noise
    if x.ndim == 2:
        return x.pow(GAMMA), estimate_noise(x[None]) if noise is None else noise
    raise ValueError(f"expected 3 x H x W RGB or H x W luma, got shape {tuple(x.shape)}")


def _tile_side(centres: torch.Tensor) -> int | None:
    """The estimator's tile side in full-frame pixels (its tiles overlap by half, so twice the
    centres' spacing); None for a one-tile grid."""
    rows, cols = centres.shape[:2]
    if cols > 1:
        return round(2 * float(centres[0, 1, 0] - centres[0, 0, 0]))
    if rows > 1:
        return round(2 * float(centres[1, 0, 1] - centres[0, 0, 1]))
    return None


def _tiles(image: torch.Tensor, centres: torch.Tensor, side: int) -> torch.Tensor:
    """N x side x side crops of `image` around `centres` (N x 2, x and y); the edge repeats."""
    h, w = image.shape
    ramp = torch.arange(side, device=image.device)
    starts = torch.round(centres - (side - 1) / 2).long()
    ys = (starts[:, 1, None] + ramp).clamp(0, h - 1)
    xs = (starts[:, 0, None] + ramp).clamp(0, w - 1)
    return image[ys[:, :, None], xs[:, None, :]]


def _autocorrelations(tiles: torch.Tensor, axes: torch.Tensor, lags: torch.Tensor, noise: float) -> torch.Tensor:
    """Each tile's derivative along its axis (N x 2 unit vectors), autocorrelated along that axis
    at its lags (N x J pixels), 1 at lag 0: N x J. The autocorrelation is the continuous
    function the windowed tile's spectrum defines, so any lag may be read."""
    power, along = _axis_power(tiles, axes, noise)
    profile, frequencies = _projected(power, along, tiles.shape[-1])
    return torch.einsum("nb,njb->nj", profile, torch.cos(2 * math.pi * lags[:, :, None] * frequencies))


def _axis_power(tiles: torch.Tensor, axes: torch.Tensor, noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The power spectra of the tiles' derivatives along their axes, each summing to one (N x
    side x side/2+1, half spectra), and each frequency's component along the axis, cycles per
    pixel. Two weightings of the same derivative, averaged:

    - as it is (tapered): the low frequencies, where long blurs put their zeros, dominate, as
      smooth content makes them; its own autocorrelation is then broad, which hides short blurs;
    - whitened per ring of equal |f| (the ring's mean is the scene's spectrum there, whatever
      the axis) and weighted by the ring's signal-to-noise ratio squared: every frequency the
      noise leaves counts alike, which finds short blurs, but lets the sharp derivatives' own
      short-lag lobes compete with long blurs' troughs.

    Measured (docs/training.md): either alone misses one end of the range."""
    side = tiles.shape[-1]
    window = torch.hann_window(side + 2, periodic=False, device=tiles.device)[1:-1]
    window = window[:, None] * window[None, :]
    power = torch.fft.rfft2((tiles - tiles.mean(dim=(1, 2), keepdim=True)) * window).abs().square()
    fy = torch.fft.fftfreq(side, device=tiles.device)[:, None]
    fx = torch.fft.rfftfreq(side, device=tiles.device)[None, :]
    along = fx * axes[:, 0, None, None] + fy * axes[:, 1, None, None]
    # a half spectrum holds each conjugate pair once: every column but 0 and Nyquist counts twice
    count = torch.full((side // 2 + 1,), 2.0, device=tiles.device)
    count[0] = 1.0
    if side % 2 == 0:
        count[-1] = 1.0
    derivative = (2 * math.pi * along) ** 2 * count
    noise_power = _linear_noise(tiles, noise) ** 2 * window.square().sum()
    return (_plain(power, derivative, fx, fy) + _whitened(power, derivative, fx, fy, noise_power)) / 2, along


def _plain(power: torch.Tensor, derivative: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor) -> torch.Tensor:
    """The derivative's power as it is, tapered, summing to one per tile."""
    return _unit(power * derivative * torch.exp(-(fx**2 + fy**2) / (2 * TAPER**2)))


def _whitened(power: torch.Tensor, derivative: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, noise_power: torch.Tensor) -> torch.Tensor:
    """The derivative's power over its ring's mean, times the ring's signal-to-noise ratio
    squared (`noise_power`: per tile, what white noise puts in each frequency), summing to one
    per tile."""
    ring = _ring_mean(power, torch.sqrt(fx**2 + fy**2) * power.shape[-2])
    signal = (1 - noise_power[:, None, None] / ring.clamp_min(1e-30)).clamp_min(0)
    return _unit(power / ring.clamp_min(1e-30) * signal.square() * derivative)


def _unit(power: torch.Tensor) -> torch.Tensor:
    """Each tile's spectrum over its sum (all zero stays all zero: a flat tile has no trough)."""
    return power / power.sum(dim=(1, 2), keepdim=True).clamp_min(1e-30)


def _ring_mean(power: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Each frequency's power replaced by the mean over its ring (|f| x side rounded), per tile."""
    ring = radius.round().long().flatten().expand(len(power), -1)
    rings = int(ring.max()) + 1
    sums = torch.zeros(len(power), rings, device=power.device).scatter_add_(1, ring, power.flatten(1))
    counts = torch.zeros(len(power), rings, device=power.device).scatter_add_(1, ring, torch.ones_like(sums[:, :1]).expand(-1, ring.shape[1]))
    return (sums / counts.clamp_min(1)).gather(1, ring).reshape(power.shape)


def _linear_noise(tiles: torch.Tensor, noise: float) -> torch.Tensor:
    """The code values' noise in each tile of linear light: times the transfer's slope, rms."""
    code = tiles.clamp_min(0).pow(1 / GAMMA)
    slope = GAMMA * code.pow(GAMMA - 1)
    return noise * slope.square().mean(dim=(1, 2)).sqrt()


def _projected(power: torch.Tensor, along: torch.Tensor, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The power summed over frequencies of equal |component along the axis|, in bins of
    1 / (BINS_PER_CYCLE side) cycles per pixel (N x B) and the bins' frequencies (B): along the
    axis the autocorrelation depends on nothing else, and cos is even. Each frequency is shared
    linearly between its two nearest bins."""
    width = 1 / (BINS_PER_CYCLE * side)
    position = along.abs().flatten(1) / width
    below = position.floor().long()
    share = position - below
    bins = int(below.max()) + 2
    profile = torch.zeros(len(power), bins, device=power.device)
    flat = power.flatten(1)
    profile.scatter_add_(1, below, flat * (1 - share))
    profile.scatter_add_(1, below + 1, flat * share)
    return profile, torch.arange(bins, device=power.device) * width


def _lowest(curve: torch.Tensor, candidates: torch.Tensor, weight: float) -> tuple[float, float]:
    """The candidate where the curve is lowest, refined by the parabola through it and its
    neighbours; the weight is zero where the lowest point is an end of the
    range (no trough: the blur is shorter or longer than any candidate says) or not below zero
    (no negative lobe: the derivatives do not cancel at any candidate lag)."""
    index = int(curve.argmin())
    if index in (0, len(curve) - 1) or not float(curve[index]) < 0:
        return DEFAULT_SHUTTER, 0.0
    left, middle, right = (float(v) for v in curve[index - 1 : index + 2])
    bend = left - 2 * middle + right
    offset = 0.5 * (left - right) / bend if bend > 0 else 0.0
    shutter = float(candidates[index]) + offset * STEP
    return min(max(shutter, MIN_SHUTTER), 1.0), weight
