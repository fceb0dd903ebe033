"""Camera motion between neighbouring frames, per tile, from their luma.

At a steady camera speed the displacement of frame t's content between its neighbours (t-1 to
t+1, two frame intervals) is its exposure's blur chord times 2 / shutter: the deconvolution
prior of stage 1. It is measured per tile of a grid over frame t, so that roll, zoom and
parallax give a field that varies across the frame, on luma low-passed and decimated to a
working width of about WORK_WIDTH pixels (docs/training.md, "Motion from the neighbours": the
choice of estimator and of the width, measured).

Each pair (t, t-1) and (t, t+1) is measured on frame t's tiles by (partially whitened) phase
correlation: one whole-pixel translation of the whole working frame first (it catches shifts up
to about a quarter of the frame), then each tile's whole-pixel offset from there on crops, then
the sub-pixel maximum of the correlation as the continuous function its spectrum defines
(Newton's method), then once more on the other frame resampled (bicubic) at the estimate.
A tile that agrees with its neighbours about the camera's motion is then damped towards them
(_smoothed): the per-tile error is mostly noise, and the camera's field is smooth.
Confidence per tile is the product of

- texture: the weaker eigenvalue of the tile's structure tensor against a floor, so flat tiles
  and single straight edges (where the motion along the edge is unknown) count for little;
- match: the tile's windowed normalised cross-correlation with the other frame at the estimate,
  so noise, cuts and changed content count for little; and the share of the displaced tile
  that lies inside the other frame;
- consistency: once a global affine camera model (translation, roll, zoom, shear) is removed,
  how far the tile's residual is from its neighbours' residuals: smooth fields (parallax of a
  slanted ground, rolling-shutter skew) pass, a moving object in one tile does not.

Luma is code values in [0, 1] (the texture floor is in those units). Displacements are in pixels
of the frame as given, x to the right and y down: where frame t's content is found in the other
frame minus where it is in t.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F

from vsdeblur.prior.kernel import cubic

WORK_WIDTH = 320  # the working luma's width, about (an integer decimation factor, never upscaled)
TILE = 32  # a tile's side in working pixels; tiles overlap by half
SMOOTH = 0.8  # Gaussian low-pass before decimation, sigma in working pixels: aliased detail
#               does not move with the content, and resampling is accurate below Nyquist
WHITEN = 0.5  # the cross spectrum is divided by its magnitude to this power: 1 (pure phase
#               correlation) lets the noise of frequencies that blur has emptied decide the peak
TAPER = 0.25  # cycles per working pixel: a Gaussian taper of the correlation's spectrum, so the
#               highest frequencies (mostly noise and aliasing once whitened) weigh little
REFINEMENTS = 1  # passes on the other frame resampled at the estimate, after the crop's
NEWTON_STEPS = 2  # per sub-pixel maximum: a third gave the same errors to 0.002 px (measure.py)
TEXTURE_FLOOR = 0.005**2  # squared luma gradient per working pixel at which texture counts half
MATCH_FLOOR = 0.5  # a windowed correlation at or below this is no match
CONSISTENCY_TOLERANCE = 0.5  # working pixels of disagreement with the neighbours that cost e^-1/2
AGREEMENT = 0.25  # working pixels: a tile whose residual from the camera model is within this of
#                   its neighbours' takes their median with its own (a tile's error is noise)
CUT_MATCH = 0.2  # a pair whose textured tiles match at most this well (median) is across a cut
MIN_TILE = 8  # working pixels: smaller frames get a 1 x 1 grid of zero motion and confidence
FIXED_POINT_STEPS = 3  # PairMotion.reversed's: each shrinks the error by the field's gradient
_TINY = 1e-12

Array = torch.Tensor | np.ndarray


@dataclass(frozen=True)
class PairMotion:
    """The displacement of frame t's content into one neighbour, on frame t's tiles."""

    displacement: torch.Tensor  # rows x cols x 2 (dx, dy), pixels of the full frame
    confidence: torch.Tensor  # rows x cols in [0, 1]: texture x match
    match: torch.Tensor  # rows x cols in [0, 1]: the match term alone (tells a cut)
    texture: torch.Tensor  # rows x cols in [0, 1]
    centres: torch.Tensor  # rows x cols x 2 (x, y) of each tile's centre, pixels of the full frame
    factor: int  # full-frame pixels per working pixel
    shape: tuple[int, int]  # the full frame's (H, W)

    def reversed(self) -> PairMotion:
        """The other frame's content's displacement back into this pair's frame, per tile at
        the same positions (the grid depends on the frame's size only), without measuring it:
        along a video, estimate_pair(t-1, t).reversed() is t's pair with t-1, so each interval
        is measured once.

        Content at p moves to p + d(p), so the content at tile centre q came from the p with
        p + d(p) = q, found by fixed-point steps p <- q - d(p) on the field interpolated: the
        affine camera model plus the tiles' residuals from it, bilinearly between tile centres
        (the edge tiles' residuals beyond them). Exact for a translation, off by d times the field's gradient after one step (a roll or zoom: a
        thousandth of a pixel per pixel of motion), less with each. Texture and match are
        interpolated there too; the match is then times the share of the tile, moved back,
        inside the frame (content that entered the frame in this interval was not seen
        before it). Across a field that changes abruptly (an object's edge) the interpolation
        is wrong where the measurement was not right either: there, the consistency term of
        combine() discounts it."""
        working = (self.shape[0] // self.factor, self.shape[1] // self.factor)
        grid = _grid(*working)
        if grid is None:  # nothing was measured
            return PairMotion(-self.displacement, self.confidence, self.match, self.texture, self.centres, self.factor, self.shape)
        # the camera model is exact beyond the outer tiles' centres, where the interpolation
        # only repeats their values: what is interpolated is the residual from it
        camera = _CameraModel.fit(self.centres, self.displacement, self.confidence)
        residual = self.displacement - camera(self.centres)
        maps = torch.cat([residual, self.texture[..., None], self.match[..., None]], dim=-1).permute(2, 0, 1)[None]
        source = self.centres
        for _ in range(FIXED_POINT_STEPS):
            sampled = _between_centres(maps, self.centres, source)
            source = self.centres - sampled[..., :2] - camera(source)
        sampled = _between_centres(maps, self.centres, source)
        displacement = source - self.centres
        texture, match = sampled[..., 2], sampled[..., 3]
        match = match * _inside(grid, working, displacement.reshape(-1, 2) / self.factor).reshape(match.shape)
        return PairMotion(displacement, texture * match, match, texture, self.centres, self.factor, self.shape)


def _between_centres(maps: torch.Tensor, centres: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Per-tile maps (1 x C x rows x cols) interpolated bilinearly at points (rows x cols x 2,
    full-frame pixels) between the tiles' centres (rows x cols x 2), the edge tiles' values
    beyond them: rows x cols x C."""
    first, last = centres[0, 0], centres[-1, -1]
    unit = 2 / (last - first).clamp_min(1e-6)  # grid_sample's -1 .. 1 spans the first to the last centre
    where = (points - first) * unit - 1
    return F.grid_sample(maps, where[None], mode="bilinear", padding_mode="border", align_corners=True)[0].permute(1, 2, 0)


@dataclass(frozen=True)
class Motion:
    """The displacement of frame t's content from frame t-1 to frame t+1, per tile.

    `sides`: 2, measured against both neighbours; 1, against one (a clip end or a cut), that
    interval's displacement doubled to span t-1 .. t+1 (`one_sided`); 0, no neighbour (a
    one-frame scene, or both pairs across cuts): zero displacement, zero confidence."""

    displacement: torch.Tensor  # rows x cols x 2 (dx, dy), pixels of the full frame
    confidence: torch.Tensor  # rows x cols in [0, 1]
    centres: torch.Tensor  # rows x cols x 2 (x, y) of each tile's centre, pixels of the full frame
    sides: int

    @property
    def one_sided(self) -> bool:
        return self.sides == 1

    def chord(self, shutter: float = 0.5) -> torch.Tensor:
        """Frame t's blur chord (rows x cols x 2) at a steady camera speed: the exposure lasts
        `shutter` of a frame interval, the displacement spans two."""
        return self.displacement * (shutter / 2)


# ---- working luma ----------------------------------------------------------------------------


def _as_luma(frame: Array, device: torch.device | None = None) -> torch.Tensor:
    """A 2-D float32 tensor, NaN and infinities replaced (they would spread through every FFT)."""
    luma = torch.as_tensor(frame, device=device)
    if luma.ndim != 2:
        raise ValueError(f"expected one luma plane (H x W), got shape {tuple(luma.shape)}")
    return torch.nan_to_num(luma.float(), nan=0.0, posinf=1.0, neginf=0.0)


def working_factor(width: int, work_width: int = WORK_WIDTH) -> int:
    """Full-frame pixels per working pixel: an integer, so that a working pixel's centre sits at
    a known full-frame position."""
    return max(1, round(width / work_width))


def _downscale(luma: torch.Tensor, factor: int) -> torch.Tensor:
    """Gaussian low-pass (sigma SMOOTH working pixels) and decimation by `factor`. The taps are
    centred (factor - 1) / 2 after the first pixel of each block, so working pixel i is centred
    at full pixel factor * i + (factor - 1) / 2; the edge repeats."""
    sigma = SMOOTH * factor
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + factor, device=luma.device, dtype=torch.float32) - (factor - 1) / 2
    taps = torch.exp(-0.5 * (x / sigma) ** 2)
    taps = taps / taps.sum()
    h, w = luma.shape
    padded = F.pad(luma[None, None], (radius, radius + factor - 1, radius, radius + factor - 1), mode="replicate")
    rows = F.conv2d(padded, taps.view(1, 1, 1, -1), stride=(1, factor))
    return F.conv2d(rows, taps.view(1, 1, -1, 1), stride=(factor, 1))[0, 0, : h // factor, : w // factor]


# ---- the tile grid ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Grid:
    tile: int
    starts_y: torch.Tensor  # rows
    starts_x: torch.Tensor  # cols

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.starts_y), len(self.starts_x)

    def centres(self, factor: int) -> torch.Tensor:
        """rows x cols x 2 (x, y): each tile's centre in full-frame pixels."""
        cy = (self.starts_y.double() + (self.tile - 1) / 2) * factor + (factor - 1) / 2
        cx = (self.starts_x.double() + (self.tile - 1) / 2) * factor + (factor - 1) / 2
        y, x = torch.meshgrid(cy, cx, indexing="ij")
        return torch.stack([x, y], dim=-1).float()

    def tiles(self, image: torch.Tensor, offsets: torch.Tensor | None = None) -> torch.Tensor:
        """The tiles of a working image (N x tile x tile, row-major over the grid), each moved by
        its whole-pixel offset (N x 2, x and y) if given; the image's edge repeats beyond it."""
        h, w = image.shape
        rows, cols = self.shape
        ramp = torch.arange(self.tile, device=image.device)
        ys = self.starts_y.to(image.device).repeat_interleave(cols)[:, None] + ramp
        xs = self.starts_x.to(image.device).repeat(rows)[:, None] + ramp
        if offsets is not None:
            ys, xs = ys + offsets[:, 1, None], xs + offsets[:, 0, None]
        return image[ys.clamp(0, h - 1)[:, :, None], xs.clamp(0, w - 1)[:, None, :]]


def _starts(length: int, tile: int) -> torch.Tensor:
    """Tile starts at half-tile steps, the grid centred in `length`."""
    step = tile // 2
    count = (length - tile) // step + 1
    return (length - tile - (count - 1) * step) // 2 + step * torch.arange(count)


def _grid(height: int, width: int) -> _Grid | None:
    tile = min(TILE, height, width) // 2 * 2
    if tile < MIN_TILE:
        return None
    return _Grid(tile, _starts(height, tile), _starts(width, tile))


def _hann(length: int, device: torch.device) -> torch.Tensor:
    """A Hann window without its zero end points."""
    return torch.hann_window(length + 2, periodic=False, device=device)[1:-1]


# ---- phase correlation -----------------------------------------------------------------------


def _spectrum(pictures: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """The spectra of mean-free, windowed pictures (N x h x w): windowing gives the periodic
    transform no seam."""
    return torch.fft.rfft2((pictures - pictures.mean(dim=(-2, -1), keepdim=True)) * window)


def _cross(anchor: torch.Tensor, other: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The cross spectra (half spectra, as rfft2 gives) of two batches of spectra, whitened by
    WHITEN and tapered by TAPER: their inverse transform, the correlation, peaks at the other's
    displacement."""
    cross = other * anchor.conj()
    magnitude = cross.abs()
    # the floor keeps flat pictures (an all-zero spectrum) finite
    cross = cross / (magnitude + magnitude.amax(dim=(-2, -1), keepdim=True) * 1e-6 + _TINY) ** WHITEN
    fy, fx = _frequencies(size, cross.device)
    return cross * torch.exp(-(fx**2 + fy**2) / (2 * TAPER**2))


def _frequencies(size: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Cycles per pixel of a half spectrum's rows (h x 1) and columns (1 x w/2+1)."""
    h, w = size
    return torch.fft.fftfreq(h, device=device)[:, None], torch.fft.rfftfreq(w, device=device)[None, :]


def _whole_pixel_peak(cross: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Where each correlation is highest, in whole pixels (N x 2 integers, x and y, wrapped to
    -size/2 .. size/2)."""
    h, w = size
    surface = torch.fft.irfft2(cross, s=size)
    flat = surface.reshape(len(surface), -1).argmax(dim=1)
    iy, ix = flat // w, flat % w
    return torch.stack([torch.where(ix > w // 2, ix - w, ix), torch.where(iy > h // 2, iy - h, iy)], dim=1)


def _subpixel_peak(cross: torch.Tensor, size: tuple[int, int], steps: int = NEWTON_STEPS) -> torch.Tensor:
    """The maximum near zero (N x 2) of each correlation as the continuous function its
    spectrum defines, c(p) = sum over f of C(f) exp(2 pi i f.p), by Newton's method with exact
    derivatives. It assumes no peak shape: a three-point fit assumes one and is biased towards
    whole pixels by as much as the peak differs from it."""
    h, w = size
    fy, fx = _frequencies(size, cross.device)
    # a half spectrum holds each conjugate pair once: every column but 0 and Nyquist counts twice
    count = torch.full((1, w // 2 + 1), 2.0, device=cross.device)
    count[0, 0] = 1.0
    if w % 2 == 0:
        count[0, -1] = 1.0
    spectrum = cross * count
    tau = 2 * math.pi
    powers_x = torch.stack([fx[0] ** k for k in range(3)], dim=1)  # w/2+1 x 3: 1, fx, fx^2
    powers_y = torch.stack([fy[:, 0] ** k for k in range(3)], dim=1)  # h x 3
    point = torch.zeros(len(cross), 2, device=cross.device)
    for _ in range(steps):
        # exp(2 pi i (fx x + fy y)) is separable, so every moment sum over f of
        # fy^a fx^b C(f) exp(...) is one row vector x spectrum x column vector: all nine at once
        # as two small matrix products, not one pass over the spectrum per moment
        along_x = _unit_phasors(tau * fx[0] * point[:, 0, None])[:, :, None] * powers_x  # N x w/2+1 x 3
        along_y = _unit_phasors(tau * fy[:, 0] * point[:, 1, None])[:, :, None] * powers_y  # N x h x 3
        moments = torch.einsum("nyx,nxb,nya->nab", spectrum, along_x, along_y)  # N x 3 (power of fy) x 3 (of fx)
        gx, gy = -tau * moments[:, 0, 1].imag, -tau * moments[:, 1, 0].imag
        hxx, hxy, hyy = (-(tau**2) * moments[:, a, b].real for a, b in ((0, 2), (1, 1), (2, 0)))
        det = hxx * hyy - hxy**2
        # a Newton step heads for a maximum only where the function curves down every way
        peaked = (hxx < 0) & (det > 1e-9 * (hxx**2 + hyy**2) + _TINY)
        step = -torch.stack([hyy * gx - hxy * gy, hxx * gy - hxy * gx], dim=1) / torch.where(peaked, det, torch.ones_like(det))[:, None]
        point = point + torch.where(peaked[:, None], step.clamp(-0.5, 0.5), torch.zeros_like(step))
    return point.clamp(-1, 1)


def _unit_phasors(angle: torch.Tensor) -> torch.Tensor:
    """exp(i angle), from the real angle's cosine and sine: a complex exp costs several times more."""
    return torch.polar(torch.ones_like(angle), angle)


# ---- a frame, prepared once for every pair it is in -------------------------------------------


class PreparedFrame:
    """A frame's working luma, and what its pairs need of it, each computed on first use and
    kept: as frame t of a pair its tiles' spectra and texture, as the other frame its whole
    spectrum. A video's frame t is in four pairs (as t, as t's neighbour); prepared, it is
    decimated and transformed once. Make one with prepare()."""

    def __init__(self, luma: Array, factor: int | None = None) -> None:
        luma = _as_luma(luma)
        self.shape: tuple[int, int] = tuple(luma.shape)
        self.factor = factor or working_factor(luma.shape[1])
        self.image = _downscale(luma, self.factor)
        self.grid = _grid(*self.image.shape)  # None: too small to measure

    @cached_property
    def centres(self) -> torch.Tensor:
        if self.grid is None:
            return torch.tensor([[[(self.shape[1] - 1) / 2, (self.shape[0] - 1) / 2]]], device=self.image.device)
        return self.grid.centres(self.factor).to(self.image.device)

    @cached_property
    def window(self) -> torch.Tensor:
        return _hann(self.grid.tile, self.image.device)[:, None] * _hann(self.grid.tile, self.image.device)[None, :]

    @cached_property
    def tiles(self) -> torch.Tensor:
        return self.grid.tiles(self.image)

    @cached_property
    def spectra(self) -> torch.Tensor:
        return _spectrum(self.tiles, self.window)

    @cached_property
    def texture(self) -> torch.Tensor:
        return _texture(self.tiles, self.window)

    @cached_property
    def whole_window(self) -> torch.Tensor:
        h, w = self.image.shape
        return _hann(h, self.image.device)[:, None] * _hann(w, self.image.device)[None, :]

    @cached_property
    def whole(self) -> torch.Tensor:
        """The whole working frame's spectrum (1 x ...), for the global shift."""
        return _spectrum(self.image[None], self.whole_window)


def prepare(luma: Array, *, factor: int | None = None) -> PreparedFrame:
    """A frame (H x W luma in [0, 1], numpy or torch) prepared for estimate_pair, estimate and
    still, which take it wherever they take luma: each frame of a video is then decimated and
    transformed once, however many pairs it is in. `factor`: full-frame pixels per working
    pixel (default: working_factor of the width)."""
    return PreparedFrame(luma, factor)


def _prepared(frame: Array | PreparedFrame, factor: int | None) -> PreparedFrame:
    if not isinstance(frame, PreparedFrame):
        return PreparedFrame(frame, factor)
    if factor is not None and factor != frame.factor:
        raise ValueError(f"the frame was prepared at factor {frame.factor}, not {factor}")
    return frame


def _texture(tiles: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """The weaker eigenvalue of each tile's windowed structure tensor (the mean squared
    gradient along its least textured direction), mapped to [0, 1) against TEXTURE_FLOOR."""
    gx = torch.gradient(tiles, dim=2)[0]
    gy = torch.gradient(tiles, dim=1)[0]
    weight = window / window.sum()
    xx, xy, yy = ((weight * p).sum(dim=(1, 2)) for p in (gx * gx, gx * gy, gy * gy))
    weaker = ((xx + yy) / 2 - torch.sqrt(((xx - yy) / 2) ** 2 + xy**2)).clamp_min(0)
    return weaker / (weaker + TEXTURE_FLOOR)


# ---- the other frame -------------------------------------------------------------------------


def _shifted_tiles(image: torch.Tensor, grid: _Grid, shift: torch.Tensor) -> torch.Tensor:
    """The image's tiles displaced by per-tile sub-pixel shifts (N x 2, x and y), resampled
    with the Keys cubic (PyTorch's bicubic, the image's edge repeating). A tile's shift is one
    fraction for all its pixels, so the cubic is separable into four taps per axis over a crop
    three pixels larger: a fifth of grid_sample's work on the same numbers."""
    whole = torch.floor(shift)
    fraction = shift - whole
    taps = torch.arange(-1, 3, device=image.device, dtype=shift.dtype)
    weights = cubic(taps - fraction[:, :, None])  # N x 2 (x, y) x 4
    crops = _Grid(grid.tile + 3, grid.starts_y, grid.starts_x).tiles(image, whole.long() - 1)
    t = grid.tile
    rows = sum(weights[:, 1, k, None, None] * crops[:, k : k + t, :] for k in range(4))
    return sum(weights[:, 0, k, None, None] * rows[:, :, k : k + t] for k in range(4))


def _inside(grid: _Grid, shape: tuple[int, int], shift: torch.Tensor) -> torch.Tensor:
    """The share of each displaced tile's window (shift: N x 2 working pixels) that lies inside
    a working frame of `shape` (the window is separable, so per axis)."""
    h, w = shape
    rows, cols = grid.shape
    one = _hann(grid.tile, shift.device)
    ramp = torch.arange(grid.tile, device=shift.device)
    ys = grid.starts_y.to(shift.device).repeat_interleave(cols)[:, None] + ramp + shift[:, 1, None]
    xs = grid.starts_x.to(shift.device).repeat(rows)[:, None] + ramp + shift[:, 0, None]
    share_y = (one * ((ys >= 0) & (ys <= h - 1))).sum(dim=1) / one.sum()
    share_x = (one * ((xs >= 0) & (xs <= w - 1))).sum(dim=1) / one.sum()
    return share_x * share_y


def _match(a: torch.Tensor, b: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Windowed normalised cross-correlation of tile pairs, MATCH_FLOOR .. 1 mapped to 0 .. 1."""
    weight = window / window.sum()
    a = a - (weight * a).sum(dim=(1, 2), keepdim=True)
    b = b - (weight * b).sum(dim=(1, 2), keepdim=True)
    ncc = (weight * a * b).sum(dim=(1, 2)) / torch.sqrt((weight * a * a).sum(dim=(1, 2)) * (weight * b * b).sum(dim=(1, 2)) + 1e-10)
    return ((ncc - MATCH_FLOOR) / (1 - MATCH_FLOOR)).clamp(0, 1)


def _pair(anchor: PreparedFrame, other: PreparedFrame) -> PairMotion:
    """Frame t's content's displacement into a neighbour, per tile of t."""
    if anchor.grid is None:
        return _no_grid(anchor)
    grid, size, image = anchor.grid, (anchor.grid.tile, anchor.grid.tile), other.image
    whole = _whole_pixel_peak(_cross(anchor.whole, other.whole, image.shape), image.shape)
    # whole pixels first: each tile's own offset from the global one, on crops (no resampling)
    offsets = whole.expand(len(anchor.tiles), 2)
    offsets = offsets + _whole_pixel_peak(_cross(anchor.spectra, _spectrum(grid.tiles(image, offsets), anchor.window), size), size)
    moved = grid.tiles(image, offsets)
    shift = offsets.float() + _subpixel_peak(_cross(anchor.spectra, _spectrum(moved, anchor.window), size), size)
    for _ in range(REFINEMENTS):
        # a tile displaced by a fraction of a pixel sits differently in its window than the
        # anchor's: on the other frame resampled at the estimate, that difference is gone
        moved = _shifted_tiles(image, grid, shift)
        shift = shift + _subpixel_peak(_cross(anchor.spectra, _spectrum(moved, anchor.window), size), size)
    shift = torch.nan_to_num(shift, nan=0.0, posinf=0.0, neginf=0.0)
    # the last residual is a small fraction of a pixel: the last sample serves the match
    match = _match(anchor.tiles, moved, anchor.window) * _inside(grid, image.shape, shift)
    rows, cols = grid.shape
    confidence = (anchor.texture * match).reshape(rows, cols)
    displacement = _smoothed(anchor.centres, (shift * anchor.factor).reshape(rows, cols, 2), confidence, anchor.factor)
    return PairMotion(displacement, confidence, match.reshape(rows, cols), anchor.texture.reshape(rows, cols),
                      anchor.centres, anchor.factor, anchor.shape)


def _no_grid(frame: PreparedFrame) -> PairMotion:
    """A frame too small to measure: one tile at its centre, zero motion, zero confidence."""
    zero = torch.zeros(1, 1, device=frame.image.device)
    return PairMotion(torch.zeros(1, 1, 2, device=frame.image.device), zero, zero, zero, frame.centres, frame.factor, frame.shape)


def _pairs(current: Array | PreparedFrame, others: list[Array | PreparedFrame | None], factor: int | None) -> list[PairMotion | None]:
    """Frame t against each given neighbour (None stays None)."""
    anchor = _prepared(current, factor)
    found: list[PairMotion | None] = []
    for other in others:
        if other is None:
            found.append(None)
            continue
        other = _prepared(other if isinstance(other, PreparedFrame) else _as_luma(other, anchor.image.device), anchor.factor)
        if other.shape != anchor.shape:
            raise ValueError(f"frames differ in size: {anchor.shape} and {other.shape}")
        found.append(_pair(anchor, other))
    return found


def estimate_pair(current: Array | PreparedFrame, other: Array | PreparedFrame, *, factor: int | None = None) -> PairMotion:
    """The displacement of `current`'s content into `other` (both H x W luma in [0, 1], or
    prepare()d), per tile of `current`, in full-frame pixels, with its texture and match
    confidence. `factor`: full-frame pixels per working pixel (default: working_factor of the
    width, or the prepared frames' own)."""
    return _pairs(current, [other], factor)[0]


# ---- both neighbours -------------------------------------------------------------------------


def _is_cut(pair: PairMotion) -> bool:
    """Across a cut nothing matches: the textured tiles' median match is near zero. A frame
    with no textured tile cannot tell, and its confidence is low anyway."""
    textured = pair.texture > 0.5
    return bool(textured.any()) and float(pair.match[textured].median()) <= CUT_MATCH


@dataclass(frozen=True)
class _CameraModel:
    """An affine displacement field (translation, roll, zoom, shear) over the frame."""

    mean: torch.Tensor  # 2: the tiles' mean centre (x, y), and their spread, normalise positions
    spread: torch.Tensor  # 2
    coefficients: torch.Tensor  # 3 x 2: x, y and 1 to dx, dy

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        """The field's displacement at points (... x 2, full-frame pixels): ... x 2."""
        return (self._design(points.reshape(-1, 2)) @ self.coefficients).reshape(points.shape).to(points.dtype)

    def _design(self, points: torch.Tensor) -> torch.Tensor:
        normalised = (points.double() - self.mean) / self.spread
        return torch.cat([normalised, torch.ones(len(points), 1, dtype=torch.float64, device=points.device)], dim=1)

    @classmethod
    def fit(cls, centres: torch.Tensor, displacement: torch.Tensor, weight: torch.Tensor) -> _CameraModel:
        """The weighted least-squares field through the tiles' displacements, refitted with
        weights that discount outliers (a moving object must not bend it); zero without weight."""
        points = centres.reshape(-1, 2).double()
        model = cls(points.mean(dim=0), points.std(dim=0, correction=0).clamp_min(1.0),
                    torch.zeros(3, 2, dtype=torch.float64, device=points.device))
        design, target = model._design(points), displacement.reshape(-1, 2).double()
        prior = weight.reshape(-1).double()
        w = prior
        for _ in range(3):
            if float(w.sum()) <= 1e-6:
                break
            normal = design.T @ (w[:, None] * design) + 1e-6 * torch.eye(3, dtype=torch.float64, device=points.device)
            model = cls(model.mean, model.spread, torch.linalg.solve(normal, design.T @ (w[:, None] * target)))
            residual = (target - design @ model.coefficients).norm(dim=1)
            scale = 2 * residual[prior > 0].median().clamp_min(0.1)
            w = prior / (1 + (residual / scale) ** 2)
        return model


def _affine_fit(centres: torch.Tensor, displacement: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The camera model's displacement at every tile (_CameraModel.fit)."""
    return _CameraModel.fit(centres, displacement, weight)(centres)


def _neighbour_median(residual: torch.Tensor, usable: torch.Tensor, itself: bool = False) -> torch.Tensor:
    """Per tile, the median of its usable neighbours' residuals (up to 8, and its own if
    `itself`); zero, the camera model itself, where it has none."""
    rows, cols, _ = residual.shape
    values = torch.where(usable[..., None], residual, torch.full_like(residual, float("nan")))
    padded = F.pad(values.permute(2, 0, 1), (1, 1, 1, 1), value=float("nan"))
    around = torch.stack([padded[:, 1 + dy : 1 + dy + rows, 1 + dx : 1 + dx + cols]
                          for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx or itself], dim=-1)
    return torch.nan_to_num(around.nanmedian(dim=-1).values.permute(1, 2, 0), nan=0.0)


def _smoothed(centres: torch.Tensor, displacement: torch.Tensor, confidence: torch.Tensor, factor: int) -> torch.Tensor:
    """The field with each tile's measurement error damped: where a tile's residual from the
    camera model is within AGREEMENT of its neighbours', it is the model plus the median of its
    and their residuals. A tile alone is off by a few hundredths of a pixel, and a few in a
    hundred by over a tenth (texture that one direction dominates); its neighbours are off
    independently, while the camera's field is smooth. A tile that disagrees more (a moving
    object, a depth edge) keeps its own measurement, and combine()'s consistency discounts it."""
    residual = displacement - _affine_fit(centres, displacement, confidence)
    usable = confidence > 0.3
    agrees = (residual - _neighbour_median(residual, usable)).norm(dim=-1) <= AGREEMENT * factor
    return torch.where(agrees[..., None], displacement - residual + _neighbour_median(residual, usable, itself=True), displacement)


def _consistency(centres: torch.Tensor, displacement: torch.Tensor, confidence: torch.Tensor, factor: int) -> torch.Tensor:
    """How well each tile agrees with its neighbours once the camera model is removed, in
    (0, 1]; the tolerance is in working pixels, the estimator's own scale."""
    residual = displacement - _affine_fit(centres, displacement, confidence)
    disagreement = (residual - _neighbour_median(residual, confidence > 0.3)).norm(dim=-1) / factor
    return torch.exp(-0.5 * (disagreement / CONSISTENCY_TOLERANCE) ** 2)


def combine(before: PairMotion | None, after: PairMotion | None) -> Motion:
    """Frame t's motion from t-1 to t+1 from its pairs with t-1 (`before`: t's content into
    t-1) and t+1 (`after`), of one frame t; either may be None (a clip end or a known cut). A
    pair across a cut the caller did not know of (nothing matches) is dropped too."""
    reference = before if before is not None else after
    if reference is None:
        raise ValueError("combine needs a pair; a frame without neighbours is still()")
    pairs = [p for p in (before, after) if p is not None and not _is_cut(p)]
    if not pairs:
        return Motion(torch.zeros_like(reference.displacement), torch.zeros_like(reference.confidence), reference.centres, 0)
    if len(pairs) == 2:
        displacement = after.displacement - before.displacement
        confidence = torch.minimum(before.confidence, after.confidence)
    else:
        # one interval measured: at a steady speed, twice it spans t-1 .. t+1
        displacement = 2 * (pairs[0].displacement if pairs[0] is after else -pairs[0].displacement)
        confidence = pairs[0].confidence
    confidence = confidence * _consistency(reference.centres, displacement, confidence, reference.factor)
    return Motion(displacement, confidence.clamp(0, 1), reference.centres, len(pairs))


def still(current: Array | PreparedFrame, *, factor: int | None = None) -> Motion:
    """A frame without neighbours (a one-frame scene): zero displacement and zero confidence on
    the grid its motion would have."""
    centres = _prepared(current, factor).centres
    rows, cols = centres.shape[:2]
    return Motion(torch.zeros(rows, cols, 2, device=centres.device), torch.zeros(rows, cols, device=centres.device), centres, 0)


def estimate(previous: Array | PreparedFrame | None, current: Array | PreparedFrame, following: Array | PreparedFrame | None, *,
             factor: int | None = None) -> Motion:
    """Frame `current`'s camera motion from `previous` (t-1) to `following` (t+1), per tile:
    H x W luma in [0, 1] (numpy or torch, any float type; the result is on `current`'s device),
    or prepare()d frames. Pass None for a missing neighbour (a clip end, or across a known cut):
    the result is then one-sided, or still() with neither. `factor`: full-frame pixels per
    working pixel (default: working_factor of the width).

    Along a video, measure each interval once instead: prepare() each frame once, and frame
    t's motion is `combine(estimate_pair(t-1, t).reversed(), estimate_pair(t, t+1))`, the
    first pair kept from frame t-1's (PairMotion.reversed)."""
    if previous is None and following is None:
        return still(current, factor=factor)
    before, after = _pairs(current, [previous, following], factor)
    return combine(before, after)
