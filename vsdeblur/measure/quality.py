"""`vsdeblur benchmark`: how much a model deblurs blur as a camera makes it, on material that no
recipe trains on, against the baselines any model must beat.

The set is deterministic: every photograph of the material folder (sorted by name, the first
`clips`) is filmed by the virtual camera of vsdeblur.blur.camera under each condition below,
`frames` frames at `size`, and written losslessly (FFV1, RGB) with its sharp reference (the
mid-exposure views). The clips are restored through vsdeblur-stream with its defaults, once
with stage 1 alone and once with both stages, and scored as `vsdeblur eval` scores (8-bit RGB
PSNR and VMAF, means of per-frame scores). Baselines: the blurred input, the best unsharp
mask of a grid (chosen per condition by PSNR on the set itself: an oracle, so it is a floor, not
a rival), and the deconvolution prior alone, from the estimated motion and from the true
camera path, with a table of the motion estimator's blur error (motion_prior.py).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import av
import numpy as np

from vsdeblur.errors import UsageError
from vsdeblur.metrics import clip_vmaf, psnr, to_uint8, vmaf_unavailable

if TYPE_CHECKING:
    from vsdeblur.blur.camera import CameraPath

SEED = 20261204
RATE = Fraction(24)
# unsharp masks tried: Gaussian sigma (pixels) x amount; amount 0 is the input itself
UNSHARP_SIGMAS = (0.7, 1.0, 1.5, 2.2, 3.3)
UNSHARP_AMOUNTS = (0.0, 0.25, 0.5, 0.8, 1.2, 1.8, 2.5)


@dataclass(frozen=True)
class Condition:
    """How one row of the table is blurred: a camera's drift blur per exposure (pixels, drawn
    log-uniformly), or independent per-frame shake kernels over a steady pan, or nothing."""

    name: str
    lengths: tuple[float, float]
    kind: str = "camera"  # camera | shake | none


CONDITIONS = (
    Condition("mild", (1.0, 3.0)),
    Condition("medium", (5.0, 9.0)),
    Condition("strong", (12.0, 18.0)),
    Condition("shake", (2.0, 24.0), "shake"),
    Condition("none", (0.0, 0.0), "none"),
)
COHERENT = ("mild", "medium", "strong")


@dataclass
class Setup:
    material: Path
    output: Path
    clips: int = 12
    frames: int = 12
    size: tuple[int, int] = (640, 360)

    def describe(self, photos: list[Path]) -> dict:
        return {"photos": [p.name for p in photos], "frames": self.frames, "size": list(self.size), "seed": SEED,
                "conditions": [asdict(c) for c in CONDITIONS]}


@dataclass
class Row:
    condition: str
    blurred: float
    unsharp: float
    unsharp_setting: tuple[float, float]
    restored: dict[str, float] = field(default_factory=dict)  # variant ("stage 1", "prior (true path)", ...) -> PSNR
    # VMAF of "blurred", "unsharp" (the setting chosen by PSNR) and each variant; None where the
    # frames are too small for VMAF, and for the unblurred input and its unsharp mask
    vmaf: dict[str, float | None] = field(default_factory=dict)


def photos_of(material: Path, clips: int) -> list[Path]:
    from vsdeblur.io.images import IMAGE_SUFFIXES

    if not material.is_dir():
        raise UsageError(f"benchmark material not found: {material} (run `make train-data`, or give --material DIR)")
    found = sorted(p for p in material.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise UsageError(f"no photographs in {material}")
    return found[:clips]


# ---- the set ---------------------------------------------------------------------------------


def clip_seed(photo_index: int, condition: Condition) -> list[int]:
    """The seed of the clip of the `photo_index`-th photograph under `condition`: film_clip draws
    that clip from a generator seeded with it."""
    return [SEED, photo_index, CONDITIONS.index(condition)]


def filmed_path(photo_index: int, condition: Condition, frames: int) -> CameraPath:
    """The camera path the set's clip of the `photo_index`-th photograph under `condition` was
    filmed along (its exposures' true blur: vsdeblur.blur.truth)."""
    return condition_path(condition, np.random.default_rng(clip_seed(photo_index, condition)), frames)


def condition_path(condition: Condition, rng: np.random.Generator, frames: int) -> CameraPath:
    """The camera path film_clip films one clip of `condition` along: the first thing it draws
    from `rng`, so that a copy of its generator gives the path a clip was filmed with."""
    from vsdeblur.blur import camera

    if condition.kind == "camera":
        spec = camera.CameraSpec(min_length=condition.lengths[0], max_length=condition.lengths[1])
    else:  # a steady pan of 1-4 pixels per frame whose 1/100 s exposures add no blur
        spec = camera.CameraSpec(min_length=0.01, max_length=0.04, min_shutter=0.01, max_shutter=0.01, max_roll=0.0, max_zoom=0.0)
    return camera.draw_path(rng, spec, frames)


def film_clip(photo: np.ndarray, condition: Condition, rng: np.random.Generator, frames: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(blurred, sharp) uint8 frames x h x w x 3 of one photo under one condition."""
    import torch

    from vsdeblur.blur import camera, synth
    from vsdeblur.io.images import resize

    w, h = size
    path = condition_path(condition, rng, frames)
    lo, hi = camera.reach(path, frames, (h, w))
    # the photo at twice the view's height (finer detail than most video), larger if the path needs it
    factor = max(2 * h / min(photo.shape[:2]), (hi[0] - lo[0] + 16) / photo.shape[1], (hi[1] - lo[1] + 16) / photo.shape[0])
    scene = torch.from_numpy(resize(photo[None], factor)[0]).permute(2, 0, 1)
    H, W = scene.shape[-2:]
    centre = (rng.uniform(-lo[0] + 4, W - hi[0] - 4), rng.uniform(-lo[1] + 4, H - hi[1] - 4))
    blurred, sharp = camera.film(scene, path, frames, (h, w), centre)
    sharp_frames = to_uint8(sharp.permute(0, 2, 3, 1).numpy())
    if condition.kind == "camera":
        return to_uint8(blurred.permute(0, 2, 3, 1).numpy()), sharp_frames
    if condition.kind == "none":
        return sharp_frames.copy(), sharp_frames
    shaker = synth.ShakeBlur(synth.ShakeSpec(*condition.lengths, kernel_size=33), seed=int(rng.integers(1 << 31)))
    return np.stack(list(shaker.frames(sharp_frames))), sharp_frames


def write_lossless(path: Path, frames: np.ndarray) -> None:
    """RGB frames as FFV1 in RGB (no chroma subsampling, nothing lost), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.part")
    with av.open(str(temporary), "w", format="matroska") as container:
        stream = container.add_stream("ffv1", rate=RATE)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "bgr0"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    os.replace(temporary, path)


def build_set(setup: Setup, photos: list[Path], log=print) -> None:
    """Film every photo under every condition into OUTPUT/set, unless the same set is there."""
    from vsdeblur.io.images import read_image

    root = setup.output / "set"
    description = json.loads(json.dumps(setup.describe(photos)))  # as the stamp file reads back
    stamp = root / "set.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == description:
        return
    stamp.unlink(missing_ok=True)
    for index, photo_path in enumerate(photos):
        log(f"filming {photo_path.name} ({index + 1}/{len(photos)})")
        photo = read_image(photo_path)
        for condition in CONDITIONS:
            rng = np.random.default_rng(clip_seed(index, condition))
            blurred, sharp = film_clip(photo, condition, rng, setup.frames, setup.size)
            write_lossless(root / condition.name / f"{photo_path.stem}.sharp.mkv", sharp)
            write_lossless(root / condition.name / f"{photo_path.stem}.blurred.mkv", blurred)
    stamp.write_text(json.dumps(description, indent=1) + "\n")


# ---- scores ----------------------------------------------------------------------------------


def clip_psnr(restored: list[np.ndarray], sharp: list[np.ndarray]) -> float:
    return float(np.mean([psnr(r, s) for r, s in zip(restored, sharp, strict=True)]))


def clip_vmaf_of(distorted: list[np.ndarray], sharp: list[np.ndarray]) -> float | None:
    """The clip's VMAF, None where its frames are too small for VMAF."""
    height, width = sharp[0].shape[:2]
    return None if vmaf_unavailable(width, height) else clip_vmaf(distorted, sharp)


def unsharp_masks(blurred: list[np.ndarray], sigmas: tuple[float, ...] = UNSHARP_SIGMAS,
                  amounts: tuple[float, ...] = UNSHARP_AMOUNTS) -> Iterator[tuple[tuple[float, float], np.ndarray]]:
    """((sigma, amount), float frames) of every unsharp mask of the grid on one clip:
    x + amount * (x - gauss(x, sigma))."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.stack(blurred)).permute(0, 3, 1, 2).float() / 255
    for sigma in sigmas:
        radius = int(np.ceil(3 * sigma))
        taps = torch.exp(-torch.arange(-radius, radius + 1, dtype=torch.float32) ** 2 / (2 * sigma**2))
        taps = (taps / taps.sum()).expand(3, 1, 1, -1)
        soft = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), taps, groups=3)
        soft = F.conv2d(F.pad(soft, (0, 0, radius, radius), mode="reflect"), taps.transpose(2, 3), groups=3)
        for amount in amounts:
            yield (sigma, amount), (x + amount * (x - soft)).permute(0, 2, 3, 1).numpy()


def unsharp_scores(blurred: list[np.ndarray], sharp: list[np.ndarray]) -> dict[tuple[float, float], float]:
    """PSNR of every unsharp mask of the grid on one clip."""
    return {setting: clip_psnr(list(sharpened), sharp) for setting, sharpened in unsharp_masks(blurred)}


def unsharp_vmaf(blurred: list[np.ndarray], sharp: list[np.ndarray], setting: tuple[float, float]) -> float | None:
    """VMAF of one unsharp mask of the grid on one clip."""
    (_, sharpened), = unsharp_masks(blurred, (setting[0],), (setting[1],))
    return clip_vmaf_of(list(sharpened), sharp)


def decoded_frames(path: Path) -> list[np.ndarray]:
    from vsdeblur.evaluate import decoded

    return list(decoded(path))


def restore(setup: Setup, photos: list[Path], variants: dict[str, dict[str, Any]], log=print) -> None:
    """Each blurred clip through vsdeblur-stream's defaults, once per variant's engine options."""
    from vsdeblur.config import ENCODE, ENGINE, EngineSettings
    from vsdeblur.engine import Deblurrer
    from vsdeblur.stream import stream

    for name, options in variants.items():
        values = {**ENGINE.defaults(), **ENCODE.defaults(), **options}
        engine = Deblurrer(EngineSettings.of(values))
        log(f"restoring with {name}")
        for condition in CONDITIONS:
            for photo in photos:
                source = setup.output / "set" / condition.name / f"{photo.stem}.blurred.mkv"
                target = restored_path(setup, name, condition, photo)
                target.parent.mkdir(parents=True, exist_ok=True)
                stream(source, target, values, engine=engine, overwrite=True, progress=False)


def restored_path(setup: Setup, variant: str, condition: Condition, photo: Path) -> Path:
    """Where a variant's restoration of one clip of the set goes."""
    return setup.output / _slug(variant) / condition.name / f"{photo.stem}.mkv"


def _slug(name: str) -> str:
    """A variant's name as a folder name: "stage 1" -> stage-1, "prior (true path)" -> prior-true-path."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def score(setup: Setup, photos: list[Path], variants: list[str]) -> Iterator[Row]:
    for condition in CONDITIONS:
        blurred_scores, restored_scores = [], {v: [] for v in variants}
        vmaf_scores: dict[str, list[float | None]] = {name: [] for name in ("blurred", "unsharp", *variants)}
        unsharp: dict[tuple[float, float], list[float]] = {}
        blurred_input = condition.kind != "none"
        for photo in photos:
            sharp, blurred = clip_pair(setup, condition, photo)
            blurred_scores.append(clip_psnr(blurred, sharp) if blurred_input else float("inf"))
            if blurred_input:
                vmaf_scores["blurred"].append(clip_vmaf_of(blurred, sharp))
                for setting, value in unsharp_scores(blurred, sharp).items():
                    unsharp.setdefault(setting, []).append(value)
            for variant in variants:
                restored = decoded_frames(restored_path(setup, variant, condition, photo))
                restored_scores[variant].append(clip_psnr(restored, sharp))
                vmaf_scores[variant].append(clip_vmaf_of(restored, sharp))
        best = max(unsharp, key=lambda s: np.mean(unsharp[s])) if unsharp else (0.0, 0.0)
        if blurred_input:  # a second pass, since the setting is chosen over all the condition's clips
            for photo in photos:
                sharp, blurred = clip_pair(setup, condition, photo)
                vmaf_scores["unsharp"].append(unsharp_vmaf(blurred, sharp, best))
        yield Row(condition.name, float(np.mean(blurred_scores)), float(np.mean(unsharp[best])) if unsharp else float("inf"),
                  best, {v: float(np.mean(s)) for v, s in restored_scores.items()},
                  {name: _mean_or_none(values) for name, values in vmaf_scores.items()})


def clip_pair(setup: Setup, condition: Condition, photo: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(sharp, blurred) frames of one clip of the set."""
    folder = setup.output / "set" / condition.name
    return decoded_frames(folder / f"{photo.stem}.sharp.mkv"), decoded_frames(folder / f"{photo.stem}.blurred.mkv")


def _mean_or_none(values: list[float | None]) -> float | None:
    """The mean, None when there is nothing to average or any value is missing."""
    return None if not values or None in values else float(np.mean(values))


class MetricRow(NamedTuple):
    """One condition's scores by one metric."""

    condition: str
    blurred: float | None
    unsharp: float | None
    restored: dict[str, float | None]


def table(rows: list[Row], variants: list[str]) -> str:
    """Two tables, PSNR then VMAF: one line per condition; gains over the blurred input in
    brackets; the mean over the coherent conditions; the unblurred row against the original."""
    psnr_rows = [MetricRow(r.condition, r.blurred, r.unsharp, r.restored) for r in rows]
    vmaf_rows = [MetricRow(r.condition, r.vmaf["blurred"], r.vmaf["unsharp"], {v: r.vmaf[v] for v in variants}) for r in rows]
    settings = {r.condition: r.unsharp_setting for r in rows}
    return "\n\n".join([
        _metric_table(psnr_rows, variants, settings, " dB",
                      "PSNR in dB (8-bit RGB, mean of per-frame scores); in brackets the gain over the blurred input"),
        _metric_table(vmaf_rows, variants, settings, "",
                      "VMAF (vmaf_v0.6.1, mean of per-frame scores), the unsharp mask chosen by PSNR; "
                      "in brackets the gain over the blurred input"),
    ])


def _metric_table(rows: list[MetricRow], variants: list[str], settings: dict[str, tuple[float, float]], unit: str, legend: str) -> str:
    def cell(value: float | None, base: float | None) -> str:
        if value is None:
            return "     -"
        return f"{value:6.2f} ({value - base:+.2f})" if base is not None and np.isfinite(base) else f"{value:6.2f}"

    def columns(cells: list[str]) -> str:  # each variant's column as wide as its name, 15 at least
        return "".join(f"  {text:<{max(15, len(v))}}" for v, text in zip(variants, cells, strict=True))

    lines = [f"{'condition':<10} {'blurred':>8}  {'best unsharp mask':<24}" + columns(variants)]
    for condition, blurred, unsharp, restored in rows:
        if condition == "none":
            lines.append(f"{'none':<10} {'-':>8}  {'(against the original)':<24}" + columns([cell(restored[v], None) + unit for v in variants]))
            continue
        sigma, amount = settings[condition]
        lines.append(f"{condition:<10} {cell(blurred, None):>8}  {cell(unsharp, blurred) + f' s{sigma:g} a{amount:g}':<24}"
                     + columns([cell(restored[v], blurred) for v in variants]))
    coherent = [row for row in rows if row.condition in COHERENT]
    if coherent:
        blurred = _mean_or_none([row.blurred for row in coherent])
        unsharp = _mean_or_none([row.unsharp for row in coherent])
        lines.append(f"{'coherent':<10} {cell(blurred, None):>8}  {cell(unsharp, blurred):<24}"
                     + columns([cell(_mean_or_none([row.restored[v] for row in coherent]), blurred) for v in variants]))
    lines.append(legend)
    return "\n".join(lines)
