"""Camera motion between neighbouring frames, per tile, from their luma.

The displacement of a frame's content between its neighbours (t-1 to t+1) is, at a steady
camera speed, the exposure's blur chord times 2 / shutter: stage 1's deconvolution prior. It is
measured per tile of a grid over frame t, so that roll, zoom and parallax give a field that
varies across the frame, on luma downscaled to a working width (cheaper, and less noisy).

Each pair (t, t-1) and (t, t+1) is measured on frame t's tiles: first one translation of the
whole picture (phase correlation of the whole working frame, which catches shifts up to a
quarter of the frame), then each tile from there. Confidence per tile is the product of

- texture: the weaker eigenvalue of the tile's structure tensor against a floor, so flat tiles
  and single straight edges (where the motion along the edge is unknown) count for little;
- match: the tile's normalised cross-correlation with the other frame at the estimate, so noise,
  cuts and content that changed count for little;
- consistency: after removing a global affine camera model (translation, roll, zoom, shear),
  how far the tile's residual is from its neighbours' residuals: smooth fields (parallax of a
  slanted ground, rolling-shutter skew) pass, a moving object in one tile does not.

Luma is taken as code values in [0, 1] (the texture floor is in those units); displacements are
in pixels of the frame as given, x to the right and y down, the motion of the content.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

WORK_WIDTH = 320  # the working luma's width, at most (frames narrower are not upscaled)
TILE = 32  # a tile's side in working pixels; tiles overlap by half
TEXTURE_FLOOR = 0.01**2  # squared luma gradient per working pixel at which texture counts half
MATCH_FLOOR = 0.5  # a match (windowed correlation) at or below this counts as none
CONSISTENCY_TOLERANCE = 0.5  # working pixels of disagreement with the neighbours that count e^-1/2
CUT_MATCH = 0.2  # a pair whose textured tiles match at most this well is across a cut
MIN_SIDE = 8  # the smallest working tile; smaller frames give no motion
_EPS = 1e-12

Array = torch.Tensor | np.ndarray


@dataclass(frozen=True)
class PairMotion:
    """Displacement of frame `anchor`'s content into another frame, on the anchor's tiles."""

    displacement: torch.Tensor  # rows x cols x 2 (dx, dy), pixels of the full frame
    confidence: torch.Tensor  # rows x cols, in [0, 1]: texture times match
    match: torch.Tensor  # rows x cols, in [0, 1]: the match term alone (cut detection)
    texture: torch.Tensor  # rows x cols, in [0, 1]
    centres: torch.Tensor  # rows x cols x 2 (x, y), pixels of the full frame
    factor: int  # full-frame pixels per working pixel


@dataclass(frozen=True)
class Motion:
    """The camera's displacement of frame t's content from t-1 to t+1, per tile.

    `sides` says how many neighbours it comes from: 2, both; 1, one neighbour (at a clip end or
    a cut), its displacement doubled to the t-1..t+1 span; 0, none (zero, with zero
    confidence)."""

    displacement: torch.Tensor  # rows x cols x 2 (dx, dy), pixels of the full frame
    confidence: torch.Tensor  # rows x cols, in [0, 1]
    centres: torch.Tensor  # rows x cols x 2 (x, y) of each tile's centre, pixels of the full frame
    sides: int

    @property
    def one_sided(self) -> bool:
        return self.sides == 1

    def chord(self, shutter: float = 0.5) -> torch.Tensor:
        """The blur chord of frame t's exposure (rows x cols x 2) at a steady camera speed: the
        exposure lasts `shutter` of the frame interval, the displacement spans two intervals."""
        return self.displacement * (shutter / 2)


# ---- working luma ----------------------------------------------------------------------------


def _as_luma(frame: Array) -> torch.Tensor:
    """A 2-D float32 tensor of the frame's luma, never NaN or infinite."""
    luma = torch.as_tensor(frame)
    if luma.ndim != 2:
        raise ValueError(f"expected one luma plane (H x W), got shape {tuple(luma.shape)}")
    return torch.nan_to_num(luma.float(), nan=0.0, posinf=1.0, neginf=0.0)


def working_factor(width: int, work_width: int = WORK_WIDTH) -> int:
    """Full-frame pixels per working pixel: an integer, so that box averaging keeps each working
    pixel's centre at a known full-frame position."""
    return max(1, round(width / work_width))


WHITEN = 0.5  # exponent of the cross spectrum's magnitude divided out (1: pure phase correlation)
SMOOTH = 0.8  # Gaussian low-pass before decimation, sigma in working pixels


def _gaussian_taps(sigma: float, factor: int, device: torch.device) -> tuple[torch.Tensor, int]:
    """Gaussian taps centred (factor - 1) / 2 after the first of each output's block, so that a
    working pixel i stays centred at full pixel factor*i + (factor - 1)/2, as a box average's."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + factor, device=device, dtype=torch.float32) - (factor - 1) / 2
    taps = torch.exp(-0.5 * (x / sigma) ** 2)
    return taps / taps.sum(), radius


def _downscale(luma: torch.Tensor, factor: int) -> torch.Tensor:
    """Low-pass and decimate by factor."""
    sigma = SMOOTH * factor
    if sigma <= 0:
        return luma if factor == 1 else F.avg_pool2d(luma[None, None], factor)[0, 0]
    taps, r = _gaussian_taps(sigma, factor, luma.device)
    h, w = luma.shape
    x = F.pad(luma[None, None], (r, r + factor - 1, r, r + factor - 1), mode="replicate")
    x = F.conv2d(x, taps.view(1, 1, 1, -1), stride=(1, factor))
    x = F.conv2d(x, taps.view(1, 1, -1, 1), stride=(factor, 1))
    return x[0, 0, : h // factor, : w // factor]


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
        """rows x cols x 2 (x, y): each tile's centre in full-frame pixels (a working pixel i
        covers full pixels factor*i .. factor*i + factor - 1)."""
        cy = (self.starts_y.double() + (self.tile - 1) / 2) * factor + (factor - 1) / 2
        cx = (self.starts_x.double() + (self.tile - 1) / 2) * factor + (factor - 1) / 2
        y, x = torch.meshgrid(cy, cx, indexing="ij")
        return torch.stack([x, y], dim=-1).float()


def _starts(length: int, tile: int) -> torch.Tensor:
    """Tile starts at half-tile steps, the grid centred in `length`."""
    step = tile // 2
    count = (length - tile) // step + 1
    margin = (length - tile - (count - 1) * step) // 2
    return margin + step * torch.arange(count)


def _grid(height: int, width: int, tile: int = TILE) -> _Grid | None:
    tile = min(tile, height, width) // 2 * 2
    if tile < MIN_SIDE:
        return None
    return _Grid(tile, _starts(height, tile), _starts(width, tile))


def _tiles(image: torch.Tensor, grid: _Grid) -> torch.Tensor:
    """The grid's tiles of a working image: N x tile x tile (row-major over the grid)."""
    t = grid.tile
    rows = image[grid.starts_y[:, None] + torch.arange(t)]  # rows x t x W
    tiles = rows[:, :, grid.starts_x[:, None] + torch.arange(t)]  # rows x t x cols x t
    return tiles.permute(0, 2, 1, 3).reshape(-1, t, t)


def _window(tile: int, device: torch.device) -> torch.Tensor:
    """A 2-D Hann window: tiles are weighted towards their centre, and a periodic transform of a
    windowed tile has no seam."""
    w = torch.hann_window(tile + 2, periodic=False, device=device)[1:-1]
    return w[:, None] * w[None, :]


# ---- sampling the other frame ----------------------------------------------------------------


class _Sampler:
    """Samples the other frame's tiles at per-tile displacements (bicubic): the tiles' base
    coordinates are computed once per pair, each call only adds the shifts."""

    def __init__(self, image: torch.Tensor, grid: _Grid) -> None:
        h, w = image.shape
        t = grid.tile
        ramp = torch.arange(t, device=image.device, dtype=torch.float32)
        ys = grid.starts_y.to(image.device, torch.float32)[:, None, None, None] + ramp[None, None, :, None]
        xs = grid.starts_x.to(image.device, torch.float32)[None, :, None, None] + ramp[None, None, None, :]
        rows, cols = grid.shape
        self.xs = xs.expand(rows, cols, t, t).reshape(-1, t, t)
        self.ys = ys.expand(rows, cols, t, t).reshape(-1, t, t)
        # grid_sample's coordinates run from -1 to 1 over the pixel centres (align_corners)
        self.unit = torch.tensor([2 / max(w - 1, 1), 2 / max(h - 1, 1)], device=image.device)
        self.base = torch.stack([self.xs, self.ys], dim=-1) * self.unit - 1
        self.image, self.grid, self.size = image, grid, (h, w)

    def __call__(self, shift: torch.Tensor) -> torch.Tensor:
        t = self.grid.tile
        coords = self.base + (shift * self.unit)[:, None, None, :]
        # one image, all tiles as rows of one tall grid: no copy of the image per tile
        tall = F.grid_sample(self.image[None, None], coords.reshape(1, -1, t, 2), mode="bicubic", padding_mode="border", align_corners=True)
        return tall.reshape(-1, t, t)

    def inside(self, shift: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
        """The share of each displaced tile's window that falls inside the frame."""
        h, w = self.size
        xs, ys = self.xs + shift[:, 0, None, None], self.ys + shift[:, 1, None, None]
        inside = ((xs >= 0) & (xs <= w - 1) & (ys >= 0) & (ys <= h - 1)).float()
        return (inside * window).sum(dim=(1, 2)) / window.sum()


# ---- phase correlation -----------------------------------------------------------------------


def _correlation(a: torch.Tensor, b: torch.Tensor, window: torch.Tensor, lowpass: float | None = None) -> torch.Tensor:
    """Phase correlation surfaces of a batch of equal-size pictures (N x h x w): the peak sits at
    b's displacement relative to a (wrapped)."""
    h, w = a.shape[-2:]
    fa = torch.fft.rfft2((a - a.mean(dim=(-2, -1), keepdim=True)) * window)
    fb = torch.fft.rfft2((b - b.mean(dim=(-2, -1), keepdim=True)) * window)
    cross = fb * fa.conj()
    magnitude = cross.abs()
    # whitening divides by the magnitude; the floor keeps flat pictures (all zero) finite
    cross = cross / (magnitude + magnitude.amax(dim=(-2, -1), keepdim=True) * 1e-6 + _EPS) ** WHITEN
    if lowpass is not None:
        # the highest frequencies are mostly noise and aliasing once whitened: a Gaussian taper
        # makes the peak smooth enough for a three-point fit
        fy = torch.fft.fftfreq(h, device=a.device)[:, None]
        fx = torch.fft.rfftfreq(w, device=a.device)[None, :]
        cross = cross * torch.exp(-(fx**2 + fy**2) / (2 * lowpass**2))
    return torch.fft.irfft2(cross, s=(h, w))


def _peak(surface: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each surface's highest point (N x 2, x and y, wrapped to -size/2 .. size/2), refined to a
    sub-pixel position by a Gaussian through it and its neighbours along x and along y; and the
    peak's height."""
    n, h, w = surface.shape
    flat = surface.reshape(n, -1).argmax(dim=1)
    iy, ix = flat // w, flat % w
    at = lambda dy, dx: surface[torch.arange(n), (iy + dy) % h, (ix + dx) % w]  # noqa: E731
    centre = at(0, 0)

    def offset(minus: torch.Tensor, plus: torch.Tensor) -> torch.Tensor:
        # a Gaussian through three points, on the logarithm; the floor keeps it finite where a
        # neighbour is at or below zero
        floor = centre.clamp_min(_EPS) * 1e-3
        lm, lc, lp = (torch.log(v.clamp_min(floor).clamp_min(_EPS)) for v in (minus, centre, plus))
        curvature = lm - 2 * lc + lp
        return torch.where(curvature < -_EPS, (lm - lp) / (2 * curvature).clamp(max=-_EPS), torch.zeros_like(lc)).clamp(-0.5, 0.5)

    dx = offset(at(0, -1), at(0, 1))
    dy = offset(at(-1, 0), at(1, 0))
    x = torch.where(ix > w // 2, ix - w, ix).float() + dx
    y = torch.where(iy > h // 2, iy - h, iy).float() + dy
    return torch.stack([x, y], dim=1), centre


def _global_shift(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """b's displacement relative to a over the whole working frame, to the nearest pixel (2,)."""
    h, w = a.shape
    window = torch.hann_window(h + 2, periodic=False, device=a.device)[1:-1, None] * torch.hann_window(w + 2, periodic=False, device=a.device)[None, 1:-1]
    shift, _ = _peak(_correlation(a[None], b[None], window, lowpass=0.25))
    return shift[0].round()


def _phase_tiles(anchor: torch.Tensor, other: torch.Tensor, grid: _Grid, start: torch.Tensor, refinements: int) -> torch.Tensor:
    """Per-tile phase correlation: the other frame's tiles are sampled at the current estimate
    and correlated with the anchor's; the residual peak is added. The first pass from whole-pixel
    shifts finds the tile's own offset; each further pass removes most of the three-point fit's
    bias, which is largest half-way between pixels."""
    window = _window(grid.tile, anchor.device)
    a = _tiles(anchor, grid)
    shift = start.expand(a.shape[0], 2).clone()
    sample = _Sampler(other, grid)
    for _ in range(1 + refinements):
        b = sample(shift)
        residual, _ = _peak(_correlation(a, b, window, lowpass=0.25))
        shift = shift + residual
    return shift


def _gather(image: torch.Tensor, grid: _Grid, offsets: torch.Tensor) -> torch.Tensor:
    """The grid's tiles of `image`, each moved by its whole-pixel offset (N x 2, x and y); the
    frame's edge pixels repeat beyond it."""
    h, w = image.shape
    rows, cols = grid.shape
    ramp = torch.arange(grid.tile, device=image.device)
    ys = grid.starts_y.to(image.device).repeat_interleave(cols)[:, None] + offsets[:, 1, None] + ramp
    xs = grid.starts_x.to(image.device).repeat(rows)[:, None] + offsets[:, 0, None] + ramp
    return image[ys.clamp(0, h - 1)[:, :, None], xs.clamp(0, w - 1)[:, None, :]]


def _esm_step(a: torch.Tensor, b: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """One Gauss-Newton step (N x 2) that moves b's tiles onto a's, with the mean of both
    gradients (efficient second-order minimisation: exact to second order for |step| < 1)."""
    weight = window / window.sum()
    a = a - (weight * a).sum(dim=(1, 2), keepdim=True)
    b = b - (weight * b).sum(dim=(1, 2), keepdim=True)
    ax, ay = _gradients(a)
    bx, by = _gradients(b)
    gx, gy = (ax + bx) / 2, (ay + by) / 2
    hxx, hxy, hyy = ((weight * p).sum(dim=(1, 2)) for p in (gx * gx, gx * gy, gy * gy))
    error = b - a
    ex, ey = ((weight * error * g).sum(dim=(1, 2)) for g in (gx, gy))
    det = hxx * hyy - hxy**2
    det = torch.where(det > _EPS, det, torch.full_like(det, float("inf")))
    step = -torch.stack([(hyy * ex - hxy * ey) / det, (hxx * ey - hxy * ex) / det], dim=1)
    return step.clamp(-1, 1)


def _phase_plane(a: torch.Tensor, b: torch.Tensor, window: torch.Tensor, band: float = 0.25) -> torch.Tensor:
    """b's sub-pixel displacement relative to a (N x 2, |d| < 1/2 so the phase does not wrap in
    the band): the plane through the cross spectrum's phase, angle = -2 pi f . d, fitted by least
    squares weighted by the spectra's magnitudes, at frequencies below `band` cycles per pixel."""
    h, w = a.shape[-2:]
    fa = torch.fft.rfft2((a - a.mean(dim=(-2, -1), keepdim=True)) * window)
    fb = torch.fft.rfft2((b - b.mean(dim=(-2, -1), keepdim=True)) * window)
    cross = fb * fa.conj()
    fy = torch.fft.fftfreq(h, device=a.device)[:, None].expand(h, w // 2 + 1)
    fx = torch.fft.rfftfreq(w, device=a.device)[None, :].expand(h, w // 2 + 1)
    weight = cross.abs() * ((fx**2 + fy**2) <= band**2)
    angle = torch.angle(cross)
    sxx, sxy, syy = ((weight * p).sum(dim=(1, 2)) for p in (fx * fx, fx * fy, fy * fy))
    tx, ty = ((weight * angle * f).sum(dim=(1, 2)) for f in (fx, fy))
    det = sxx * syy - sxy**2
    det = torch.where(det > _EPS, det, torch.full_like(det, float("inf")))
    d = -torch.stack([(syy * tx - sxy * ty) / det, (sxx * ty - sxy * tx) / det], dim=1) / (2 * math.pi)
    return d.clamp(-1, 1)


def _integer_tiles(anchor: torch.Tensor, other: torch.Tensor, grid: _Grid, start: torch.Tensor, subpixel: str) -> torch.Tensor:
    """Per-tile phase correlation on whole-pixel crops: a first pass from the global shift finds
    each tile's whole-pixel offset, a second on the tiles cropped there finds the rest, by a
    three-point peak fit ("peak") or one Gauss-Newton step ("esm"): no resampling."""
    window = _window(grid.tile, anchor.device)
    a = _tiles(anchor, grid)
    offsets = start.long().expand(a.shape[0], 2)
    shift, _ = _peak(_correlation(a, _gather(other, grid, offsets), window, lowpass=0.25))
    offsets = offsets + shift.round().long()
    b = _gather(other, grid, offsets)
    if subpixel == "peak":
        residual, _ = _peak(_correlation(a, b, window, lowpass=0.25))
    elif subpixel == "plane":
        residual = _phase_plane(a, b, window)
    else:
        residual = _esm_step(a, b, window)
    return offsets.float() + residual


# ---- Lucas-Kanade ----------------------------------------------------------------------------


def _gradients(tiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences (one-sided at the tile's edges, where the window is nearly zero)."""
    gx = torch.gradient(tiles, dim=2)[0]
    gy = torch.gradient(tiles, dim=1)[0]
    return gx, gy


def _lucas_kanade(anchor: torch.Tensor, other: torch.Tensor, grid: _Grid, shift: torch.Tensor, iterations: int) -> torch.Tensor:
    """Gauss-Newton on the windowed squared difference of the anchor's tiles and the other
    frame's tiles displaced by the shift (N x 2), with the anchor's gradients (inverse
    compositional for a translation: the normal matrix is computed once)."""
    window = _window(grid.tile, anchor.device)
    a = _tiles(anchor, grid)
    gx, gy = _gradients(a)
    hxx, hxy, hyy = ((window * p).sum(dim=(1, 2)) for p in (gx * gx, gx * gy, gy * gy))
    det = hxx * hyy - hxy**2
    det = torch.where(det.abs() > _EPS, det, torch.full_like(det, _EPS))
    a_centred = a - (window * a).sum(dim=(1, 2), keepdim=True) / window.sum()
    sample = _Sampler(other, grid)
    for _ in range(iterations):
        b = sample(shift)
        # brightness offsets between frames are removed by comparing mean-free tiles
        error = b - (window * b).sum(dim=(1, 2), keepdim=True) / window.sum() - a_centred
        ex, ey = ((window * error * g).sum(dim=(1, 2)) for g in (gx, gy))
        step = torch.stack([(hyy * ex - hxy * ey) / det, (hxx * ey - hxy * ex) / det], dim=1)
        shift = shift - step.clamp(-2, 2)
    return shift


def _pyramid_lk(anchor: torch.Tensor, other: torch.Tensor, grid: _Grid, start: torch.Tensor, levels: int, iterations: int) -> torch.Tensor:
    """Lucas-Kanade coarse to fine: each level halves the working frame and the tile (the same
    footprint), so a displacement a few pixels too large for the fine level is caught first."""
    pyramid = [(anchor, other, grid)]
    for _ in range(levels - 1):
        a, b, g = pyramid[-1]
        if g.tile // 2 < MIN_SIDE:
            break
        coarse = _Grid(g.tile // 2, g.starts_y // 2, g.starts_x // 2)
        pyramid.append((F.avg_pool2d(a[None, None], 2)[0, 0], F.avg_pool2d(b[None, None], 2)[0, 0], coarse))
    n = len(grid.starts_y) * len(grid.starts_x)
    shift = start.expand(n, 2).clone() / 2 ** (len(pyramid) - 1)
    for level, (a, b, g) in reversed(list(enumerate(pyramid))):
        shift = _lucas_kanade(a, b, g, shift, iterations)
        if level:
            shift = shift * 2
    return shift


# ---- confidence ------------------------------------------------------------------------------


def _texture(tiles: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """The weaker eigenvalue of each tile's windowed structure tensor (mean squared gradient
    along the tile's least textured direction), mapped to [0, 1) against TEXTURE_FLOOR."""
    gx, gy = _gradients(tiles)
    weight = window / window.sum()
    hxx, hxy, hyy = ((weight * p).sum(dim=(1, 2)) for p in (gx * gx, gx * gy, gy * gy))
    weaker = (hxx + hyy) / 2 - torch.sqrt(((hxx - hyy) / 2) ** 2 + hxy**2)
    weaker = weaker.clamp_min(0)
    return weaker / (weaker + TEXTURE_FLOOR)


def _match(a: torch.Tensor, b: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Windowed normalised cross-correlation of tile pairs, mapped from MATCH_FLOOR..1 to 0..1."""
    weight = window / window.sum()
    a = a - (weight * a).sum(dim=(1, 2), keepdim=True)
    b = b - (weight * b).sum(dim=(1, 2), keepdim=True)
    ncc = (weight * a * b).sum(dim=(1, 2)) / torch.sqrt((weight * a * a).sum(dim=(1, 2)) * (weight * b * b).sum(dim=(1, 2)) + 1e-10)
    return ((ncc - MATCH_FLOOR) / (1 - MATCH_FLOOR)).clamp(0, 1)


# ---- one pair --------------------------------------------------------------------------------


def estimate_pair(anchor: Array, other: Array, *, factor: int | None = None, method: str = "phase", tile: int = TILE) -> PairMotion:
    """The displacement of `anchor`'s content into `other` (both H x W luma in [0, 1]) per tile
    of the anchor, in full-frame pixels, with texture and match confidence."""
    anchor, other = _as_luma(anchor), _as_luma(other).to(_as_luma(anchor).device)
    if anchor.shape != other.shape:
        raise ValueError(f"frames differ in size: {tuple(anchor.shape)} and {tuple(other.shape)}")
    factor = factor or working_factor(anchor.shape[1])
    a, b = _downscale(anchor, factor), _downscale(other, factor)
    grid = _grid(*a.shape, tile)
    if grid is None:
        zero = torch.zeros(1, 1, device=anchor.device)
        centre = torch.tensor([[[(anchor.shape[1] - 1) / 2, (anchor.shape[0] - 1) / 2]]], device=anchor.device)
        return PairMotion(torch.zeros(1, 1, 2, device=anchor.device), zero, zero, zero, centre, factor)
    start = _global_shift(a, b)
    if method == "phase":
        shift = _phase_tiles(a, b, grid, start, refinements=2)
    elif method == "lk":
        shift = _pyramid_lk(a, b, grid, start, levels=3, iterations=5)
    elif method in ("int-peak", "int-esm", "int-plane"):
        shift = _integer_tiles(a, b, grid, start, method[4:])
    elif method == "hybrid":
        shift = _phase_tiles(a, b, grid, start, refinements=0)
        shift = _lucas_kanade(a, b, grid, shift, iterations=3)
    else:
        raise ValueError(method)
    window = _window(grid.tile, a.device)
    tiles = _tiles(a, grid)
    sample = _Sampler(b, grid)
    sampled, inside = sample(shift), sample.inside(shift, window)
    texture = _texture(tiles, window)
    match = _match(tiles, sampled, window) * inside
    rows, cols = grid.shape
    shift = torch.nan_to_num(shift, nan=0.0, posinf=0.0, neginf=0.0)
    return PairMotion(
        (shift * factor).reshape(rows, cols, 2),
        (texture * match).reshape(rows, cols),
        match.reshape(rows, cols),
        texture.reshape(rows, cols),
        grid.centres(factor).to(a.device),
        factor,
    )


# ---- both neighbours -------------------------------------------------------------------------


def _is_cut(pair: PairMotion) -> bool:
    """Across a cut nothing matches: the textured tiles' median match is near zero."""
    textured = pair.texture > 0.5
    if not bool(textured.any()):
        return False  # nothing to tell by: the pair's confidence is low anyway
    return float(pair.match[textured].median()) <= CUT_MATCH


def _affine_fit(centres: torch.Tensor, displacement: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The weighted least-squares affine field (translation, roll, zoom, shear) through the
    tiles' displacements, refitted twice with weights that discount outliers (a moving object
    must not bend the camera model): returns the model's displacement at every tile."""
    points = centres.reshape(-1, 2).double()
    points = (points - points.mean(dim=0)) / (points.std(dim=0).clamp_min(1.0))
    design = torch.cat([points, torch.ones(len(points), 1, dtype=torch.float64)], dim=1)
    target = displacement.reshape(-1, 2).double()
    w = weight.reshape(-1).double()
    model = torch.zeros_like(target)
    for _ in range(3):
        if float(w.sum()) <= 1e-6:
            break
        normal = design.T @ (w[:, None] * design) + 1e-6 * torch.eye(3, dtype=torch.float64)
        coefficients = torch.linalg.solve(normal, design.T @ (w[:, None] * target))
        model = design @ coefficients
        residual = (target - model).norm(dim=1)
        scale = 2.0 * residual[w > 0].median().clamp_min(0.1) if bool((w > 0).any()) else torch.tensor(1.0)
        w = weight.reshape(-1).double() / (1 + (residual / scale) ** 2)
    return model.reshape(displacement.shape).float()


def _neighbour_median(residual: torch.Tensor, usable: torch.Tensor) -> torch.Tensor:
    """Per tile, the median of its (up to 8) usable neighbours' residuals; zero (the global
    model) where it has none."""
    rows, cols, _ = residual.shape
    values = torch.where(usable[..., None], residual, torch.full_like(residual, float("nan")))
    padded = F.pad(values.permute(2, 0, 1)[None], (1, 1, 1, 1), value=float("nan"))[0]
    around = torch.stack([padded[:, 1 + dy : 1 + dy + rows, 1 + dx : 1 + dx + cols] for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx], dim=-1)
    median = around.nanmedian(dim=-1).values.permute(1, 2, 0)
    return torch.nan_to_num(median, nan=0.0)


def _consistency(centres: torch.Tensor, displacement: torch.Tensor, confidence: torch.Tensor, factor: int) -> torch.Tensor:
    """How well each tile agrees with its neighbours once the global camera model is removed."""
    residual = displacement - _affine_fit(centres, displacement, confidence)
    reference = _neighbour_median(residual, confidence > 0.3)
    disagreement = (residual - reference).norm(dim=-1) / factor  # in working pixels
    return torch.exp(-0.5 * (disagreement / CONSISTENCY_TOLERANCE) ** 2)


def combine(before: PairMotion | None, after: PairMotion | None) -> Motion:
    """Frame t's motion from t-1 to t+1, from its pairs with t-1 (`before`: t's content into
    t-1) and t+1 (`after`); either may be None (a clip end or a known cut). A pair across a cut
    the caller did not know of (nothing matches) is dropped too."""
    pairs = [p for p in (before, after) if p is not None and not _is_cut(p)]
    reference = before if before is not None else after
    if reference is None:
        raise ValueError("combine needs at least one pair to know the grid; use still() for none")
    if not pairs:
        return Motion(torch.zeros_like(reference.displacement), torch.zeros_like(reference.confidence), reference.centres, 0)
    if len(pairs) == 2:
        displacement = after.displacement - before.displacement
        confidence = torch.minimum(before.confidence, after.confidence)
    else:
        pair = pairs[0]
        # one interval measured: twice it spans t-1 .. t+1 at a steady speed
        displacement = 2 * (pair.displacement if pair is after else -pair.displacement)
        confidence = pair.confidence
    confidence = confidence * _consistency(reference.centres, displacement, confidence, reference.factor)
    return Motion(displacement, confidence.clamp(0, 1), reference.centres, len(pairs))


def still(current: Array, *, factor: int | None = None) -> Motion:
    """A frame without neighbours (a one-frame scene): zero displacement, zero confidence, on
    the grid the frame's motion would have."""
    luma = _as_luma(current)
    factor = factor or working_factor(luma.shape[1])
    a = _downscale(luma, factor)
    grid = _grid(*a.shape)
    if grid is None:
        centres = torch.tensor([[[(luma.shape[1] - 1) / 2, (luma.shape[0] - 1) / 2]]], device=luma.device)
    else:
        centres = grid.centres(factor).to(luma.device)
    rows, cols = centres.shape[:2]
    return Motion(torch.zeros(rows, cols, 2, device=luma.device), torch.zeros(rows, cols, device=luma.device), centres, 0)


def estimate(previous: Array | None, current: Array, following: Array | None, *, factor: int | None = None, method: str = "phase", tile: int = TILE) -> Motion:
    """Frame `current`'s camera motion from `previous` (t-1) to `following` (t+1), per tile;
    pass None for a neighbour that is missing (a clip end, or across a known cut)."""
    if previous is None and following is None:
        return still(current, factor=factor)
    before = estimate_pair(current, previous, factor=factor, method=method, tile=tile) if previous is not None else None
    after = estimate_pair(current, following, factor=factor, method=method, tile=tile) if following is not None else None
    return combine(before, after)
