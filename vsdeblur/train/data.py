"""Training data: sources of sharp (or sharp + blurred) sequences, and the pairs made from them.

A source hands out random crops of T consecutive frames. Sources with real blur (REDS, GoPro
folder layouts) return blurred and sharp crops; all others return sharp crops that
`make_pair` blurs with vsdeblur.blur. Every draw takes an explicit numpy Generator, so a
training step's batch is a pure function of (seed, step): runs repeat exactly and resume exactly.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import torch

from vsdeblur.blur import camera, synth
from vsdeblur.errors import UsageError
from vsdeblur.io.images import IMAGE_SUFFIXES, read_image, resize

VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".nut", ".y4m"}


@dataclass
class Clip:
    """T x H x W x 3 float32 frames in [0, 1]; `blurred` is None when blur must be synthesised."""

    sharp: np.ndarray
    blurred: np.ndarray | None = None


def decode_rgb(path: Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Decode a video's frames (up to max_frames) one at a time as uint8 H x W x 3 RGB."""
    count = 0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
                count += 1
                if max_frames and count >= max_frames:
                    return
    except (av.FFmpegError, IndexError) as exc:
        raise UsageError(f"cannot read video {path}: {exc}") from None
    if not count:
        raise UsageError(f"{path} holds no video frames")


def read_video(path: Path, max_frames: int | None = None) -> np.ndarray:
    """Decode a video's frames (up to max_frames) as uint8 T x H x W x 3 RGB."""
    return np.stack(list(decode_rgb(path, max_frames)))


def _files(root: Path, suffixes: set[str]) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise UsageError(f"training data path not found: {root}")
    found = sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes)
    if not found:
        raise UsageError(f"no {'/'.join(sorted(suffixes))} files under {root}")
    return found


def _random_crop(frames: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Crop T x H x W x C to T x size x size x C, upscaling first when the frames are smaller."""
    h, w = frames.shape[1:3]
    if h < size or w < size:
        frames = resize(frames, max(size / h, size / w) * 1.01)
        h, w = frames.shape[1:3]
    y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
    return frames[:, y : y + size, x : x + size]


def _as_float(frames: np.ndarray) -> np.ndarray:
    return frames.astype(np.float32) / 255 if frames.dtype == np.uint8 else frames.astype(np.float32)


class ImageSource:
    """A folder (or file) of sharp images. Sequences are made by panning across an image."""

    def __init__(self, path: str | Path, max_side: int = 2048, scales: Sequence[float] = (0.5, 1.0), pan: float = 4.0) -> None:
        self.paths = _files(Path(path), IMAGE_SUFFIXES)
        self.max_side, self.scales, self.pan = max_side, _check_scales(scales), _check_pan(pan)
        self._cache: dict[Path, np.ndarray] = {}

    def _image(self, path: Path) -> np.ndarray:
        if path not in self._cache:
            image = read_image(path)
            if max(image.shape[:2]) > self.max_side:
                image = (resize(image[None], self.max_side / max(image.shape[:2]))[0] * 255 + 0.5).astype(np.uint8)
            self._cache[path] = image
        return self._cache[path]

    def sample(self, rng: np.random.Generator, size: int, frames: int) -> Clip:
        image = self._image(self.paths[rng.integers(len(self.paths))])
        return _panned_clip(image, rng, size, frames, self.scales, self.pan)

    def still(self, rng: np.random.Generator, side: int) -> np.ndarray:
        """A randomly scaled region of a random image, at least side x side: a scene to film."""
        return _scaled_region(self._image(self.paths[rng.integers(len(self.paths))]), rng, side, self.scales)


def _check_scales(scales: Sequence[float]) -> tuple[float, float]:
    if len(scales) != 2 or not 0 < scales[0] <= scales[1]:
        raise UsageError(f"scales must be [smallest, largest] factors above 0; got {list(scales)}")
    return float(scales[0]), float(scales[1])


def _scaled_region(image: np.ndarray, rng: np.random.Generator, size: int, scales: tuple[float, float]) -> np.ndarray:
    """A random region of `image`, rescaled by a random factor in `scales` to at least size x
    size, as float32. Below 1 the detail gets finer and crisper; above 1 it gets softer, as in
    video that was shot or stored below its display size."""
    scale = rng.uniform(*scales)
    region = min(int(size / scale) + 1, *image.shape[:2])
    scale = max(scale, size / region)
    crop = _random_crop(image[None], rng, region)
    return resize(crop, scale)[0] if abs(scale - 1) > 1e-3 else _as_float(crop[0])


def _check_pan(pan: float) -> float:
    if not pan >= 0:
        raise UsageError(f"pan must be a non-negative number of pixels per frame; got {pan}")
    return float(pan)


def _panned_clip(image: np.ndarray, rng: np.random.Generator, size: int, frames: int, scales: tuple[float, float], pan: float) -> Clip:
    """A clip of T crops panning across a randomly scaled region of one still image."""
    region = size + int(np.ceil(2 * pan)) * frames + 2  # room for the pan's whole path
    return Clip(_pan(_scaled_region(image, rng, region, scales), rng, size, frames, pan))


def _pan(image: np.ndarray, rng: np.random.Generator, size: int, frames: int, pan: float) -> np.ndarray:
    """T crops of one image along a random straight pan (camera motion between frames) of up
    to `pan` pixels per frame along each axis."""
    step = rng.uniform(-pan, pan, size=2) if frames > 1 else np.zeros(2)
    span = np.abs(step) * (frames - 1)
    h, w = image.shape[:2]
    if h < size + span[1] + 1 or w < size + span[0] + 1:
        image = resize(image[None], (size + span.max() + 2) / min(h, w))[0]
        h, w = image.shape[:2]
    x0 = rng.uniform(max(0, -step[0]) * (frames - 1), w - size - max(0, step[0]) * (frames - 1))
    y0 = rng.uniform(max(0, -step[1]) * (frames - 1), h - size - max(0, step[1]) * (frames - 1))
    crops = []
    for t in range(frames):
        x, y = int(round(x0 + step[0] * t)), int(round(y0 + step[1] * t))
        crops.append(image[y : y + size, x : x + size])
    return np.stack(crops)


class VideoSource:
    """A folder (or file) of sharp videos, decoded once into memory.

    reader="decord" uses decord's random access instead (the `train` extra), reading only the
    frames a sample needs: the choice for large collections.
    """

    def __init__(self, path: str | Path, max_frames: int = 600, reader: str = "pyav") -> None:
        self.paths = _files(Path(path), VIDEO_SUFFIXES)
        self.max_frames, self.reader = max_frames, reader
        self._cache: dict[Path, object] = {}
        if reader not in ("pyav", "decord"):
            raise UsageError(f"unknown video reader {reader!r}; use pyav or decord")
        if reader == "decord":
            try:
                import decord  # noqa: F401
            except ImportError:
                raise UsageError("reader 'decord' needs the decord package: pip install 'vsdeblur[train]'") from None

    def _video(self, path: Path):
        if path not in self._cache:
            if self.reader == "decord":
                import decord

                self._cache[path] = decord.VideoReader(str(path), ctx=decord.cpu(0))
            else:
                self._cache[path] = read_video(path, self.max_frames)
        return self._cache[path]

    def sample(self, rng: np.random.Generator, size: int, frames: int) -> Clip:
        video = self._video(self.paths[rng.integers(len(self.paths))])
        count = len(video)
        start = int(rng.integers(0, max(1, count - frames + 1)))
        indices = [min(start + t, count - 1) for t in range(frames)]
        clip = video.get_batch(indices).asnumpy() if self.reader == "decord" else video[indices]
        return Clip(_as_float(_random_crop(clip, rng, size)))


class PairedSource:
    """Real blurred/sharp sequences in the REDS or GoPro folder layouts.

    REDS:  ROOT/{split}_blur/SEQ/*.png and ROOT/{split}_sharp/SEQ/*.png
    GoPro: ROOT/{split}/SEQ/blur/*.png and ROOT/{split}/SEQ/sharp/*.png
    """

    def __init__(self, path: str | Path, layout: str, split: str = "train") -> None:
        root = Path(path)
        if layout == "reds":
            blur_root, sharp_root = root / f"{split}_blur", root / f"{split}_sharp"
            seqs = sorted(p.name for p in blur_root.iterdir() if p.is_dir()) if blur_root.is_dir() else []
            pairs = [(blur_root / s, sharp_root / s) for s in seqs]
        elif layout == "gopro":
            base = root / split
            seqs = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
            pairs = [(s / "blur", s / "sharp") for s in seqs]
        else:
            raise UsageError(f"unknown paired layout {layout!r}; use reds or gopro")
        self.sequences = []
        for blur_dir, sharp_dir in pairs:
            blurred = sorted(p for p in blur_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if blur_dir.is_dir() else []
            names = [p.name for p in blurred]
            if names and all((sharp_dir / n).is_file() for n in names):
                self.sequences.append((blurred, [sharp_dir / n for n in names]))
        if not self.sequences:
            raise UsageError(f"no {layout} {split} sequences with matching blur/sharp frames under {root}")

    def sample(self, rng: np.random.Generator, size: int, frames: int) -> Clip:
        blurred, sharp = self.sequences[rng.integers(len(self.sequences))]
        start = int(rng.integers(0, max(1, len(sharp) - frames + 1)))
        indices = [min(start + t, len(sharp) - 1) for t in range(frames)]
        stack = np.stack([read_image(blurred[i]) for i in indices] + [read_image(sharp[i]) for i in indices])
        crop = _as_float(_random_crop(stack, rng, size))
        return Clip(crop[frames:], crop[:frames])


class DeadLeavesSource:
    """Procedural sharp content: occluding discs and boxes with power-law sizes (the
    "dead leaves" model, whose statistics resemble natural images), textured and coloured.
    A fixed pool of large images (the same for every seed) is drawn lazily and cropped."""

    def __init__(self, pool: int = 256, side: int = 384, scales: Sequence[float] = (0.5, 1.0), pan: float = 4.0) -> None:
        self.side, self.scales, self.pan = side, _check_scales(scales), _check_pan(pan)
        self.pool: list[np.ndarray | None] = [None] * pool

    def _image(self, rng: np.random.Generator) -> np.ndarray:
        index = int(rng.integers(len(self.pool)))
        if self.pool[index] is None:
            image = dead_leaves(np.random.default_rng([1234, index]), self.side, shapes=2000)
            self.pool[index] = (image * 255 + 0.5).astype(np.uint8)
        return self.pool[index]

    def sample(self, rng: np.random.Generator, size: int, frames: int) -> Clip:
        return _panned_clip(self._image(rng), rng, size, frames, self.scales, self.pan)

    def still(self, rng: np.random.Generator, side: int) -> np.ndarray:
        return _scaled_region(self._image(rng), rng, side, self.scales)


def dead_leaves(rng: np.random.Generator, size: int, shapes: int = 600, r_min: float = 1.5, alpha: float = 3.0) -> np.ndarray:
    image = np.empty((size, size, 3), np.float32)
    image[:] = rng.random(3)
    r_max = size / 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base_hue = rng.random()
    for _ in range(shapes):
        # inverse-CDF draw from p(r) ~ r^-alpha on [r_min, r_max]
        u = rng.random()
        a = 1 - alpha
        r = (r_min**a + u * (r_max**a - r_min**a)) ** (1 / a)
        cx, cy = rng.uniform(-r, size + r, size=2)
        y0, y1 = max(0, int(cy - r)), min(size, int(math.ceil(cy + r)) + 1)
        x0, x1 = max(0, int(cx - r)), min(size, int(math.ceil(cx + r)) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        py, px = yy[y0:y1, x0:x1], xx[y0:y1, x0:x1]
        if rng.random() < 0.6:
            mask = (py - cy) ** 2 + (px - cx) ** 2 <= r * r
        else:  # a rotated box, for straight edges and corners
            angle = rng.uniform(0, np.pi)
            c, s = np.cos(angle), np.sin(angle)
            u_, v_ = (px - cx) * c + (py - cy) * s, -(px - cx) * s + (py - cy) * c
            mask = (np.abs(u_) <= r) & (np.abs(v_) <= r * rng.uniform(0.2, 1.0))
        hue = (base_hue + rng.normal(scale=0.15)) % 1.0
        colour = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.1, 0.9), rng.uniform(0.1, 1.0)), np.float32)
        patch = image[y0:y1, x0:x1]
        if rng.random() < 0.3:  # a grating texture inside the shape
            freq, phase, angle = rng.uniform(0.1, 1.2), rng.uniform(0, 2 * np.pi), rng.uniform(0, np.pi)
            wave = 0.5 + 0.5 * np.sin(freq * (px * np.cos(angle) + py * np.sin(angle)) + phase)
            shade = colour[None, None, :] * (0.6 + 0.4 * wave[..., None])
            patch[mask] = shade[mask]
        else:
            patch[mask] = colour
    return np.clip(image, 0, 1)


def make_source(spec: dict) -> object:
    """A source from its TOML table: {kind = "images" | "videos" | "reds" | "gopro" | "dead-leaves", ...}."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    spec.pop("weight", None)
    try:
        if kind == "images":
            return ImageSource(**spec)
        if kind == "videos":
            return VideoSource(**spec)
        if kind in ("reds", "gopro"):
            return PairedSource(layout=kind, **spec)
        if kind == "dead-leaves":
            return DeadLeavesSource(**spec)
    except TypeError as exc:
        raise UsageError(f"bad options for data source {kind!r}: {exc}") from None
    raise UsageError(f"unknown data source kind {kind!r}; use images, videos, reds, gopro or dead-leaves")


@dataclass(frozen=True)
class Augment:
    """The paper's augmentation: small colour changes, flips and rotations with p = 0.5."""

    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.02

    def __call__(self, clip: Clip, rng: np.random.Generator) -> Clip:
        frames = [clip.sharp] + ([clip.blurred] if clip.blurred is not None else [])
        if rng.random() < 0.5:
            frames = [f[:, :, ::-1] for f in frames]
        if rng.random() < 0.5:
            frames = [f[:, ::-1] for f in frames]
        if rng.random() < 0.5:
            frames = [f.transpose(0, 2, 1, 3) for f in frames]
        jitter = self._jitter(rng)
        frames = [jitter(np.ascontiguousarray(f)) for f in frames]
        return Clip(frames[0], frames[1] if len(frames) > 1 else None)

    def _jitter(self, rng: np.random.Generator):
        b = 1 + rng.uniform(-self.brightness, self.brightness)
        c = 1 + rng.uniform(-self.contrast, self.contrast)
        s = 1 + rng.uniform(-self.saturation, self.saturation)
        h = rng.uniform(-self.hue, self.hue) * 2 * np.pi
        # hue rotation about the grey axis (a YIQ-style rotation matrix)
        cos, sin = np.cos(h), np.sin(h)
        k = np.ones(3, np.float32) / np.sqrt(3)
        cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], np.float32)
        rot = cos * np.eye(3) + sin * cross + (1 - cos) * np.outer(k, k)

        def apply(x: np.ndarray) -> np.ndarray:
            x = x @ rot.T.astype(np.float32) * b
            grey = x.mean(axis=-1, keepdims=True)
            x = grey + (x - grey) * s
            x = x.mean() + (x - x.mean()) * c
            return np.clip(x, 0, 1).astype(np.float32)

        return apply


@dataclass
class BlurRecipe:
    """How sharp clips become blurred ones (written into the weights header)."""

    shake: synth.ShakeSpec = field(default_factory=synth.ShakeSpec)
    extras: synth.ExtrasSpec = field(default_factory=synth.ExtrasSpec)
    subframe_probability: float = 0.2  # blur along the clip's own global motion
    sharp_probability: float = 0.03  # leave a few inputs sharp: the model must not over-sharpen
    gamma_probability: float = 0.3  # blur code values instead of linear light, as many datasets do
    soft_probability: float = 0.0  # put part of the sharp reference out of focus first (synth.soften)
    reference_extras_probability: float = 0.0  # give the sharp reference itself noise and compression
    camera: camera.CameraSpec = field(default_factory=camera.CameraSpec)
    camera_probability: float = 0.0  # share filmed along a continuous camera path (blur.camera)


def make_pair(clip: Clip, rng: np.random.Generator, recipe: BlurRecipe) -> tuple[np.ndarray, np.ndarray]:
    """(blurred, sharp), each T x S x S x 3 float32, from a clip of T + 2 frames of
    S + kernel_size - 1 pixels: the first and last frames are only context for sub-frame
    blur, and the margin that blurring reads from is cropped away."""
    m = recipe.shake.kernel_size // 2

    def inner(frames: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(frames[1:-1, m : frames.shape[1] - m, m : frames.shape[2] - m])

    if clip.blurred is not None:
        return inner(clip.blurred), inner(clip.sharp)
    sharp = as_footage(clip.sharp, rng, recipe)
    leave_sharp = rng.random() < recipe.sharp_probability
    blurred = [sharp[0]]
    for t in range(1, len(sharp) - 1):
        if leave_sharp:
            out = sharp[t]
        elif rng.random() < recipe.subframe_probability and not np.array_equal(sharp[t - 1], sharp[t + 1]):
            out = synth.subframe_blur(sharp[t - 1], sharp[t], sharp[t + 1], rng.uniform(0.3, 1.0), recipe.shake.kernel_size)
        else:
            linear = rng.random() >= recipe.gamma_probability
            out = synth.convolve(sharp[t], synth.shake_kernel(rng, recipe.shake), linear)
        blurred.append(out)
    blurred = inner(np.stack(blurred + [sharp[-1]]))
    return np.stack([synth.add_extras(f, rng, recipe.extras) for f in blurred]), inner(sharp)


def as_footage(sharp: np.ndarray, rng: np.random.Generator, recipe: BlurRecipe) -> np.ndarray:
    """Make sharp T x H x W x 3 material more like a video's frames before it is blurred: partly
    out of focus (soft content is not motion blur), and carrying grain and codec artifacts: they
    are part of the answer, and a model that only ever sees them added to its input learns to
    scrub them off sharp footage."""
    if rng.random() < recipe.soft_probability:
        sharp = synth.soften(sharp, rng)
    if rng.random() < recipe.reference_extras_probability:
        sharp = np.stack([synth.add_extras(frame, rng, recipe.extras) for frame in sharp])
    return sharp


def _chw(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)


def _hwc(frames: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(frames.permute(0, 2, 3, 1).numpy(), dtype=np.float32)


@dataclass
class Sample:
    """One training sample: blurred and sharp T x S x S x 3 float32 frames in [0, 1], and the
    shutter they were filmed with where a camera path filmed them (else None)."""

    blurred: np.ndarray
    sharp: np.ndarray
    shutter: float | None = None


def filmed_pair(source: object, rng: np.random.Generator, size: int, frames: int, recipe: BlurRecipe, augment: Augment) -> Sample:
    """Blurred and sharp T x S x S x 3 frames filmed by a camera moving along one continuous
    path: a still scene filmed anew for every frame (the path moves the view between frames
    too), or a clip's own frames, each blurred by the camera's motion over its exposure."""
    path = camera.draw_path(rng, recipe.camera, frames)
    if hasattr(source, "still"):
        low, high = camera.reach(path, frames, (size, size))
        side = int(np.ceil(2 * np.abs(np.concatenate([low, high])).max())) + 8
        scene = augment(Clip(source.still(rng, side)[None]), rng).sharp
        scene = as_footage(scene, rng, recipe)[0]
        blurred, sharp = camera.film(_chw(scene[None])[0], path, frames, (size, size))
        blurred, sharp = _hwc(blurred), _hwc(sharp)
    else:
        margin = recipe.shake.kernel_size // 2
        clip = augment(source.sample(rng, size + 2 * margin, frames), rng)
        footage = _chw(as_footage(clip.sharp, rng, recipe))
        whole = torch.stack([camera.shake_frame(frame, path, t) for t, frame in enumerate(footage)])
        blurred = _hwc(whole[:, :, margin : margin + size, margin : margin + size])
        sharp = _hwc(footage[:, :, margin : margin + size, margin : margin + size])
    if rng.random() < recipe.sharp_probability:
        blurred = sharp.copy()
    return Sample(np.stack([synth.add_extras(f, rng, recipe.extras) for f in blurred]), sharp, path.shutter)


class Mixture:
    """Weighted draws from several sources, then augmentation and blur."""

    def __init__(self, sources: Sequence[tuple[object, float]], recipe: BlurRecipe, augment: Augment | None = None) -> None:
        if not sources:
            raise UsageError("training needs at least one data source")
        self.sources = [s for s, _ in sources]
        weights = np.array([w for _, w in sources], np.float64)
        self.weights = weights / weights.sum()
        self.recipe, self.augment = recipe, augment or Augment()

    def sample(self, rng: np.random.Generator, size: int, frames: int) -> Sample:
        source = self.sources[rng.choice(len(self.sources), p=self.weights)]
        if self.recipe.camera_probability and not isinstance(source, PairedSource) and rng.random() < self.recipe.camera_probability:
            return filmed_pair(source, rng, size, frames, self.recipe, self.augment)
        margin = self.recipe.shake.kernel_size // 2
        clip = source.sample(rng, size + 2 * margin, frames + 2)
        return Sample(*make_pair(self.augment(clip, rng), rng, self.recipe))

    def samples(self, seed: int, step: int, batch: int, size: int, frames: int) -> list[Sample]:
        """The samples of one training step, each drawn from its own generator (seed, step, i)."""
        return [self.sample(np.random.default_rng([seed, step, i]), size, frames) for i in range(batch)]

    def batch(self, seed: int, step: int, batch: int, size: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
        """The batch of one training step: B x T x S x S x 3 blurred and sharp."""
        samples = self.samples(seed, step, batch, size, frames)
        return np.stack([s.blurred for s in samples]), np.stack([s.sharp for s in samples])
