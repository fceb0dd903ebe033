"""Regularised deconvolution of motion blur in linear light, tile by tile.

A camera adds up light, so a blurred frame is its sharp frame convolved with the exposure's
kernel in linear light (vsdeblur.blur.camera); the code values are decoded with the project's
transfer (x ** GAMMA) first and encoded again at the end.

Each tile is restored in the Fourier domain with a Gaussian prior on the image gradient:

    X = conj(E[H]) Y / (E|H|^2 + lambda |D|^2 (1 - E|H|^2)+),   |D|^2 = |Dx|^2 + |Dy|^2

- H is the tile's kernel; given a chord, not a path, it is uncertain (kernel.Uncertainty: the
  chord's own error, and the bends and changes of speed of a real exposure), and the filter is
  Wiener's for a random kernel: E|H|^2 - |E[H]|^2 regularises the frequencies where the kernels
  the chord allows disagree, which are those that a straight-line kernel restores wrongly.
- D is zero at DC and E[H] is one there, so brightness is kept.
- The factor (1 - E|H|^2)+ regularises only what the blur attenuated: a frequency the kernel
  passes whole is neither amplified nor smoothed, so a zero blur vector gives the input back
  exactly and sharp footage is not softened (a plain gradient prior, |H|^2 + lambda |D|^2,
  smooths unblurred frames).
- lambda, per tile, is the noise-to-signal ratio of the gradient prior: a Gaussian prior of
  gradient power A under white noise of variance s^2 gives lambda = s^2 / A; times `strength`
  (10, tuned on frames the measurement does not use: natural images are not Gaussian, and their
  fine detail has less power than that prior gives it). s is the frame's noise in code values
  (estimate_noise, at least 8-bit rounding's) times the tile's rms slope of the transfer, which
  is what it is in linear light. A: natural images have a roughly flat gradient spectrum, so the
  blurred tile's mean squared gradient is A * mean(E|H|^2) plus the noise's 4 s^2, and
  mean(|H|^2) is sum(k^2) (Parseval). A long kernel thus lowers lambda; a noisy or flat tile
  raises it.

Colour: blur moves the three channels alike, and most of what it takes is a change of brightness
at one colour, so the luminance (LUMA's weights of linear R, G, B) alone is restored and each
channel takes its change in proportion to its share of the pixel's luminance, c' = c Y' / Y: a
third of the work of restoring each channel (settings.colour), for most of its gain
(docs/training.md, "The deconvolution prior": 86-97 % on the sample clip's frames).

Edges: each tile is solved over a block that reaches a margin beyond it, mirrored beyond the
frame. The blurred pixels near the frame's edges saw scene the frame does not hold, and a
mirrored copy is not it: a few conjugate-gradient steps (Reeves 2005) fit only the pixels that
lie inside the frame and far enough from the block's edges that the FFT's wrap-around does not
reach them, and leave the rest to the prior. They start from the one-FFT solution above and are
preconditioned by it. Without them (iterations = 0) the frame's edges ring into the frame. Each
step costs two transforms of every block, and the first two more: at 640x360 two steps restore
the 24 pixels along the edges as well as four (docs/training.md, "The deconvolution prior"), on
small frames, nearly all edge, they fall short.

Tiles: a field of blur vectors is a grid of cells over the frame (pooled to tiles about
settings.tile apart). Tile i's weight is one over its middle and falls as a raised cosine to
zero over `overlap` of the spacing, centred half-way to its neighbour, whose weight rises as
much: the weights sum to one everywhere, so different kernels meet without seams. A confidence
per tile (0..1) blends its restoration with the input: out = in + c (restored - in).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vsdeblur.blur.synth import GAMMA, LUMA
from vsdeblur.prior.kernel import Uncertainty, kernel_moments

QUANTISATION_NOISE = 1 / (255 * math.sqrt(12))  # rounding to 8 bits: the least noise a frame has
MIN_MARGIN = 8  # pixels of context around a tile, beyond the kernel-sized margin
MIN_LAMBDA = 1e-4  # keeps the filter finite, and rounding errors small, on black or noiseless tiles
MAX_LAMBDA = 1e6  # a flat tile: only its mean passes, which is the input's
MIN_GRADIENT_POWER = 1e-10


@dataclass(frozen=True)
class PriorSettings:
    """How the prior restores (the defaults are what docs/training.md measures)."""

    strength: float = 10.0  # multiplies the rule's lambda
    nsr: float | None = None  # a fixed lambda instead of the rule (the design to beat)
    keep_passed: bool = True  # regularise only what the blur attenuated, (1 - E|H|^2)+
    uncertainty: Uncertainty = Uncertainty()  # how far the true blur may be from the chord given
    tile: int = 160  # about the tiles' spacing in pixels: finer fields are pooled to it
    overlap: float = 0.5  # share of the tile spacing over which neighbouring tiles cross-fade (0 .. 1]
    margin: float = 1.0  # context around each tile, in kernel radii (plus MIN_MARGIN)
    iterations: int = 4  # conjugate-gradient steps that fit only the pixels inside the frame
    colour: bool = False  # restore each channel, not the luminance alone (three times the work)

    def __post_init__(self) -> None:
        if not (0 < self.overlap <= 1 and self.strength > 0 and self.tile >= 1 and self.iterations >= 0 and self.margin >= 0):
            raise ValueError(f"prior settings out of range: {self}")


RATIO_FLOOR = 1e-3  # linear luminance below which a pixel's colour is not trusted to scale its change


def luminance(frame: torch.Tensor) -> torch.Tensor:
    """1 x H x W: the weighted sum (LUMA) of a 3 x H x W frame's R, G and B."""
    return torch.einsum("chw,c->hw", frame, torch.tensor(LUMA, device=frame.device, dtype=frame.dtype))[None]


def to_linear(frame: torch.Tensor) -> torch.Tensor:
    return frame.clamp(0, 1).pow(GAMMA)


def to_code(linear: torch.Tensor) -> torch.Tensor:
    return linear.clamp(0, 1).pow(1 / GAMMA)


def estimate_noise(frame: torch.Tensor, floor: float = QUANTISATION_NOISE) -> float:
    """The standard deviation of a C x H x W frame's white noise, in code values: the median
    absolute response to Immerkaer's mask (blind to planes and straight ramps), scaled for
    Gaussian noise, the median over channels; at least `floor`."""
    if min(frame.shape[-2:]) < 3:
        return floor
    # the mask is [1, -2, 1] down times [1, -2, 1] across: two passes of shifted differences,
    # where conv2d on one input channel costs ten times as much on the CPU
    x = frame.float()
    rows = x[:, :-2] - 2 * x[:, 1:-1] + x[:, 2:]
    response = rows[:, :, :-2] - 2 * rows[:, :, 1:-1] + rows[:, :, 2:]
    # the mask's norm is 6; median |N(0, 1)| is 0.6745
    sigma = float(response.abs().flatten(1).median(dim=1).values.median()) / (0.6745 * 6)
    return max(sigma, floor)


def deblur(frame: torch.Tensor, blur: torch.Tensor, confidence: torch.Tensor | float = 1.0,
           noise: float | None = None, settings: PriorSettings = PriorSettings()) -> torch.Tensor:
    """Restore a C x H x W frame (code values in [0, 1]) blurred by straight exposure chords:
    `blur` is one chord (2,) or a field rows x cols x 2 of chords (dx, dy in pixels, start to end
    of the exposure) over a grid of equal cells; `confidence` is one value or rows x cols, each
    0..1; `noise` is the noise in code values of what is restored, the frame's luma (its
    channels' with settings.colour), None: estimate_noise. A field finer than settings.tile is
    pooled to tiles of about that size first. Same shape, dtype and device as
    the frame."""
    if blur.shape[-1:] != (2,) or blur.dim() not in (1, 3):
        raise ValueError(f"a blur vector is (2,) and a field rows x cols x 2, not {tuple(blur.shape)}")
    field = blur.reshape(1, 1, 2) if blur.dim() == 1 else blur
    field = field.to(frame.device, torch.float32)
    trust = torch.as_tensor(confidence, dtype=torch.float32, device=frame.device).clamp(0, 1).expand(field.shape[:2])
    field, trust = pool_field(field, trust, frame.shape[-2:], settings.tile)
    kernels, correlations = kernel_moments(field, settings.uncertainty)
    return deconvolve(frame, kernels, trust, noise, settings, correlations)


def pool_field(field: torch.Tensor, confidence: torch.Tensor, shape: tuple[int, int], tile: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A rows x cols x 2 field and its confidence pooled to a grid of tiles about `tile` pixels
    apart (never finer than the field): each tile's chord is the confidence-weighted mean of the
    cells it covers, its confidence their mean. Each tile is a deconvolution of its own, with
    margins of context: tiles much smaller than the blur cost more than they tell."""
    rows = min(field.shape[0], max(1, round(shape[0] / tile)))
    cols = min(field.shape[1], max(1, round(shape[1] / tile)))
    if (rows, cols) == tuple(field.shape[:2]):
        return field, confidence
    pool = lambda x: torch.nn.functional.adaptive_avg_pool2d(x[None], (rows, cols))[0]  # noqa: E731
    weight = pool(confidence[None])
    chords = pool(field.permute(2, 0, 1) * confidence) / weight.clamp_min(1e-12)
    return chords.permute(1, 2, 0), weight[0]


def deconvolve(frame: torch.Tensor, kernels: torch.Tensor, confidence: torch.Tensor | float = 1.0,
               noise: float | None = None, settings: PriorSettings = PriorSettings(),
               correlations: torch.Tensor | None = None) -> torch.Tensor:
    """deblur with any kernels, one per tile of a rows x cols grid: rows x cols x K x K (K odd,
    centred, each summing to one), e.g. kernel.path_kernels of curved exposure paths, or
    kernel.kernel_moments' mean kernels with their `correlations` (rows x cols x (2K - 1) x
    (2K - 1)); None: the kernels are exact. settings.uncertainty and settings.tile are not
    used: the kernels and the grid are the caller's."""
    rows, cols, size = kernels.shape[0], kernels.shape[1], kernels.shape[-1]
    x = frame.float()
    kernels = kernels.to(x.device, torch.float32).reshape(rows * cols, size, size)
    if correlations is not None:
        correlations = correlations.to(x.device, torch.float32).reshape(rows * cols, 2 * size - 1, 2 * size - 1)
    trust = torch.as_tensor(confidence, dtype=torch.float32, device=x.device).clamp(0, 1).expand(rows, cols).reshape(-1)
    # tiles without blur or without trust are the input: they are not computed at all
    active = torch.nonzero((trust > 0) & ~_is_impulse(kernels)).flatten().tolist()
    if not active:
        return frame.clone()
    # what is restored: the luminance, whose change each channel then takes (blur moves all
    # three alike, and colour carries little of the detail it takes), or every channel
    linear = to_linear(x)
    by_luminance = not settings.colour and x.shape[0] == 3
    light = luminance(linear) if by_luminance else linear
    if noise is None:
        sigma = estimate_noise(luminance(x) if by_luminance else x)
    else:
        sigma = float(noise)
    radius = size // 2
    margin = MIN_MARGIN + math.ceil(settings.margin * radius)
    h, w = x.shape[-2:]
    ys, xs = _axis_tiles(h, rows, margin, radius, settings.overlap), _axis_tiles(w, cols, margin, radius, settings.overlap)
    tiles = [divmod(t, cols) for t in active]
    blocks = torch.stack(_block_views(light, ys, xs, tiles))
    # noise in linear light: the code-value noise times the transfer's slope, rms over each block
    slope_power = (GAMMA * light.pow((GAMMA - 1) / GAMMA)).square()
    noise_power = sigma**2 * torch.stack([view.mean() for view in _block_views(slope_power, ys, xs, tiles)])
    observed = torch.stack([ys.observed[i][:, None] & xs.observed[j][None, :] for i, j in tiles]).to(x.device)
    restored = _restore(blocks, kernels[active], None if correlations is None else correlations[active], observed, noise_power, settings)
    result = linear.clone()
    for (i, j), block, c in zip(tiles, restored, trust[active].tolist()):
        (y0, y1), (x0, x1) = ys.spans[i], xs.spans[j]
        by, bx = y0 - ys.starts[i], x0 - xs.starts[j]
        window = (ys.windows[i][:, None] * xs.windows[j][None, :]).to(x.device)
        change = block[:, by : by + y1 - y0, bx : bx + x1 - x0] - light[:, y0:y1, x0:x1]
        if by_luminance:
            change = change * linear[:, y0:y1, x0:x1] / light[:, y0:y1, x0:x1].clamp_min(RATIO_FLOOR)
        result[:, y0:y1, x0:x1] += c * window * change
    return to_code(result).to(frame.dtype)


def _is_impulse(kernels: torch.Tensor) -> torch.Tensor:
    """Which kernels are the unit impulse (no blur): deconvolving by them changes nothing."""
    centre = kernels.shape[-1] // 2
    return (kernels[:, centre, centre] - 1).abs().lt(1e-6) & kernels.abs().sum(dim=(1, 2)).sub(1).abs().lt(1e-5)


@dataclass(frozen=True)
class _Axis:
    """One axis of the tile grid: the blocks' size and, per tile, its block's first index (any
    integer: the frame is mirrored beyond its edges), which of the block's pixels the
    restoration fits (inside the frame, and a kernel radius from the block's edges, where the
    FFT's wrap-around does not reach), the span of the frame the tile's weight covers, and that
    weight over the span."""

    size: int
    starts: list[int]
    observed: list[torch.Tensor]
    spans: list[tuple[int, int]]
    windows: list[torch.Tensor]

    @property
    def reach(self) -> tuple[int, int]:
        """The first index any block covers and one past the last."""
        return min(self.starts), max(self.starts) + self.size


def _axis_tiles(length: int, count: int, margin: int, radius: int, overlap: float) -> _Axis:
    """count equal tiles along an axis of `length` pixels, each with `margin` pixels of context
    on both sides; all blocks have one size, one the FFT is fast on."""
    spacing = length / count
    position = torch.arange(length, dtype=torch.float64)
    spans, windows = [], []
    for i in range(count):
        distance = (position - ((i + 0.5) * spacing - 0.5)) / spacing
        # flat, then a raised cosine over `overlap` of the spacing centred half-way to the
        # neighbour's centre, where the neighbour's rises as much; flat out to the frame's edges
        if i == 0:
            distance = distance.clamp_min(0)
        if i == count - 1:
            distance = distance.clamp_max(0)
        fade = ((distance.abs() - (1 - overlap) / 2) / overlap).clamp(0, 1)
        weight = torch.cos(0.5 * math.pi * fade) ** 2
        covered = torch.nonzero(weight > 1e-12).flatten()
        lo, hi = int(covered[0]), int(covered[-1]) + 1
        spans.append((lo, hi))
        windows.append(weight[lo:hi].float())
    size = _fast_size(max(hi - lo for lo, hi in spans) + 2 * margin)
    # each block starts a margin before its span; the last ones end a margin past the frame
    starts = [min(lo - margin, length + margin - size) for lo, _ in spans]
    offsets = torch.arange(size)
    clear = (offsets >= radius) & (offsets < size - radius)
    observed = [clear & (start + offsets >= 0) & (start + offsets < length) for start in starts]
    return _Axis(size, starts, observed, spans, windows)


def _block_views(image: torch.Tensor, ys: _Axis, xs: _Axis, tiles: list[tuple[int, int]]) -> list[torch.Tensor]:
    """Each tile's block of a C x H x W image, mirrored beyond its edges: views of one copy of
    the image mirrored out to every block's reach (one gather per axis, not two per block)."""
    (top, bottom), (left, right) = ys.reach, xs.reach
    rows = _mirror(torch.arange(top, bottom, device=image.device), image.shape[-2])
    cols = _mirror(torch.arange(left, right, device=image.device), image.shape[-1])
    mirrored = image[:, rows][:, :, cols]
    return [mirrored[:, ys.starts[i] - top : ys.starts[i] - top + ys.size, xs.starts[j] - left : xs.starts[j] - left + xs.size]
            for i, j in tiles]


def _fast_size(n: int) -> int:
    """The least even number >= n with no prime factor above 5: what FFTs are fastest on."""
    m = max(2, n + n % 2)
    while True:
        rest = m
        for p in (2, 3, 5):
            while rest % p == 0:
                rest //= p
        if rest == 1:
            return m
        m += 2


def _mirror(index: torch.Tensor, length: int) -> torch.Tensor:
    """Indices reflected into 0 .. length-1 about the edge pixels (..., 2, 1, 0, 1, 2, ...)."""
    if length == 1:
        return torch.zeros_like(index)
    period = 2 * (length - 1)
    index = index.remainder(period)
    return torch.where(index >= length, period - index, index)


def _restore(blocks: torch.Tensor, kernels: torch.Tensor, correlations: torch.Tensor | None, observed: torch.Tensor,
             noise_power: torch.Tensor, settings: PriorSettings) -> torch.Tensor:
    """Deconvolve T x C x h x w blocks in linear light, each by its own kernel (T x K x K, with
    its mean autocorrelation where it is uncertain), for noise of power `noise_power` (T, in
    linear light), fitting the `observed` pixels (T x h x w) once iterations refine the one-FFT
    solution."""
    shape = blocks.shape[-2:]
    otf = _transfer(kernels, shape)
    exact = otf.abs().square()
    # E|H|^2: what the blur passes on average; beyond |E[H]|^2 it is the blur's uncertainty
    power = exact if correlations is None else _transfer(correlations, shape).real.maximum(exact)
    centre = kernels.shape[-1] - 1
    gain = kernels.square().sum(dim=(1, 2)) if correlations is None else correlations[:, centre, centre]
    lam = _regularisation(blocks, gain, noise_power, settings)[:, None, None]
    prior = lam * _gradient_power(shape, blocks.device) * ((1 - power).clamp_min(0) if settings.keep_passed else 1)
    spectrum = torch.fft.rfft2(blocks) * (otf.conj() / (power + prior))[:, None]
    if settings.iterations:
        spectrum = _refine(spectrum, blocks, observed[:, None].float(), otf, prior + (power - exact), settings.iterations)
    return torch.fft.irfft2(spectrum, s=shape)


def _refine(spectrum: torch.Tensor, y: torch.Tensor, observed: torch.Tensor, otf: torch.Tensor, penalty: torch.Tensor,
            iterations: int) -> torch.Tensor:
    """Conjugate-gradient steps from `spectrum` (rfft2 of the estimate) towards
    argmin |observed (k * x - y)|^2 + x' P x, P the circulant `penalty`: only the observed
    pixels are fitted, so the scene beyond the frame and the block, which the blurred pixels
    near their edges saw, is left to the prior instead of being taken for the mirrored frame
    (Reeves 2005). Preconditioned by the circulant solve, exact where all is observed. In the
    Fourier domain: two FFTs a step."""
    shape = y.shape[-2:]
    # conj() is a lazy view that every product with it would materialise again
    h, hc, penalty = otf[:, None], otf.conj().resolve_conj()[:, None], penalty[:, None]
    inverse = 1 / (otf.abs().square()[:, None] + penalty)
    # rfft2 holds half the spectrum: the other half's columns count twice in a sum over all
    weight = torch.full(spectrum.shape[-1:], 2.0, device=y.device)
    weight[0] = 1
    if shape[-1] % 2 == 0:
        weight[-1] = 1

    def normal(v: torch.Tensor) -> torch.Tensor:
        return hc * torch.fft.rfft2(observed * torch.fft.irfft2(h * v, s=shape)) + penalty * v

    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (weight * (a * b.conj()).real).sum(dim=(-2, -1), keepdim=True)

    # K' O y - (K' O K x + P x), the first two terms through one transform
    residual = hc * torch.fft.rfft2(observed * (y - torch.fft.irfft2(h * spectrum, s=shape))) - penalty * spectrum
    z = inverse * residual
    direction, rz = z, dot(residual, z)
    for _ in range(iterations):
        step = normal(direction)
        alpha = rz / dot(direction, step).clamp_min(1e-30)
        spectrum = spectrum + alpha * direction
        residual = residual - alpha * step
        z = inverse * residual
        rz, previous = dot(residual, z), rz
        direction = z + rz / previous.clamp_min(1e-30) * direction
    return spectrum


def _regularisation(blocks: torch.Tensor, gain: torch.Tensor, noise_power: torch.Tensor, settings: PriorSettings) -> torch.Tensor:
    """lambda per block (the module's docstring): strength x the noise power over the sharp
    tile's gradient power, both in linear light; or settings.nsr for all. `gain` is each
    kernel's mean E|H|^2 over all frequencies."""
    if settings.nsr is not None:
        return torch.full((len(blocks),), settings.nsr, device=blocks.device)
    dx = blocks[..., :, 1:] - blocks[..., :, :-1]
    dy = blocks[..., 1:, :] - blocks[..., :-1, :]
    blurred_gradient = dx.square().mean(dim=(1, 2, 3)) + dy.square().mean(dim=(1, 2, 3))
    sharp_gradient = ((blurred_gradient - 4 * noise_power) / gain).clamp_min(MIN_GRADIENT_POWER)
    return (settings.strength * noise_power / sharp_gradient).clamp(MIN_LAMBDA, MAX_LAMBDA)


def _transfer(kernels: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The kernels' transfer functions on an h x w grid (rfft2 layout), centre at the origin."""
    size = kernels.shape[-1]
    spread = torch.zeros(len(kernels), *shape, device=kernels.device)
    spread[:, :size, :size] = kernels
    spread = torch.roll(spread, (-(size // 2), -(size // 2)), (1, 2))
    return torch.fft.rfft2(spread)


def _gradient_power(shape: torch.Size, device: torch.device) -> torch.Tensor:
    """|Dx|^2 + |Dy|^2 of forward differences on an h x w grid (rfft2 layout)."""
    h, w = shape
    fy = torch.fft.fftfreq(h, device=device)[:, None]
    fx = torch.fft.rfftfreq(w, device=device)[None, :]
    return (2 - 2 * torch.cos(2 * math.pi * fy)) + (2 - 2 * torch.cos(2 * math.pi * fx))
