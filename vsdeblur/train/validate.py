"""A fixed validation set: held-out sharp frames blurred once with seeded camera shake, and
the scores (vsdeblur.metrics) of a model on it, run through the engine as users run it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vsdeblur import metrics
from vsdeblur.blur import camera, synth
from vsdeblur.errors import UsageError
from vsdeblur.io.images import IMAGE_SUFFIXES, read_image, resize
from vsdeblur.train.data import VIDEO_SUFFIXES, BlurRecipe, _files, read_video


@dataclass
class ValidationClip:
    name: str
    blurred: list[np.ndarray]  # uint8 H x W x 3, as a decoder would deliver them
    sharp: list[np.ndarray]


def _frames_of(spec: dict, frames: int) -> list[tuple[str, np.ndarray]]:
    """(name, T x H x W x 3 uint8) clips of a validation source table."""
    kind, path = spec.get("kind"), Path(spec.get("path", ""))
    if kind == "images":
        return [(p.name, read_image(p)[None]) for p in _files(path, IMAGE_SUFFIXES)]
    if kind == "videos":
        clips = []
        for p in _files(path, VIDEO_SUFFIXES):
            video = read_video(p)
            start = max(0, (len(video) - frames) // 2)
            clips.append((p.name, video[start : start + frames]))
        return clips
    raise UsageError(f"validation sources must be images or videos, not {kind!r}")


class ValidationSet:
    """`filmed_images`: a photo becomes a clip of `frames` views filmed along a camera path (the
    recipe's camera), as a video of a still scene: what a model that reads the motion prior
    needs, since a single picture has no neighbours to tell its motion. Otherwise a photo is a
    one-frame clip."""

    def __init__(self, specs: list[dict], recipe: BlurRecipe, seed: int = 0, frames: int = 8, max_side: int = 1280,
                 filmed_images: bool = False) -> None:
        self.clips: list[ValidationClip] = []
        for spec in specs:
            for name, video in _frames_of(spec, frames):
                if max(video.shape[1:3]) > max_side:
                    video = (resize(video, max_side / max(video.shape[1:3])) * 255 + 0.5).astype(np.uint8)
                index = len(self.clips)
                if filmed_images and len(video) == 1:
                    self.clips.append(_filmed_still(name, video[0], recipe, np.random.default_rng([seed, 7919, index]), frames))
                    continue
                # a recipe that films with a moving camera is validated on camera blur too
                path = camera.draw_path(np.random.default_rng([seed, 7919, index]), recipe.camera, len(video)) if recipe.camera_probability else None
                blurred = []
                for t, frame in enumerate(video):
                    rng = np.random.default_rng([seed, 7919, index, t])
                    sharp = frame.astype(np.float32) / 255
                    if path is None:
                        b = synth.convolve(sharp, synth.shake_kernel(rng, recipe.shake))
                    else:
                        b = camera.shake_frame(torch.from_numpy(sharp).permute(2, 0, 1), path, t).permute(1, 2, 0).numpy()
                    blurred.append(metrics.to_uint8(synth.add_extras(b, rng, recipe.extras)))
                self.clips.append(ValidationClip(name, blurred, list(video)))
        if not self.clips:
            raise UsageError("the validation sources hold no frames")
        self.blurred_scores = self._mean([(metrics.psnr(b, s), metrics.ssim(b, s)) for c in self.clips for b, s in zip(c.blurred, c.sharp)])

    @staticmethod
    def _mean(pairs: list[tuple[float, float]]) -> tuple[float, float]:
        return float(np.mean([p for p, _ in pairs])), float(np.mean([s for _, s in pairs]))

    def outputs(self, engine) -> list[list[np.ndarray]]:
        return [list(engine.frames(c.blurred)) for c in self.clips]

    def score(self, preset, models: dict, device: torch.device) -> dict:
        from vsdeblur.engine import Deblurrer

        engine = Deblurrer.from_models(preset, models, device=str(device), scene_threshold=0)
        pairs = [(metrics.psnr(o, s), metrics.ssim(o, s)) for c, outs in zip(self.clips, self.outputs(engine)) for o, s in zip(outs, c.sharp)]
        psnr, ssim = self._mean(pairs)
        return {"psnr": psnr, "ssim": ssim, "blurred_psnr": self.blurred_scores[0], "blurred_ssim": self.blurred_scores[1]}


def _filmed_still(name: str, picture: np.ndarray, recipe: BlurRecipe, rng: np.random.Generator, frames: int) -> ValidationClip:
    """A photo filmed as a still scene along one camera path: `frames` views of its own size
    (beyond its edges the scene reflects), blurred over each exposure, with the recipe's
    noise and compression."""
    path = camera.draw_path(rng, recipe.camera, frames)
    scene = torch.from_numpy(picture.astype(np.float32) / 255).permute(2, 0, 1)
    blurred, sharp = camera.film(scene, path, frames, picture.shape[:2])
    to_frames = lambda views: [v.permute(1, 2, 0).numpy() for v in views]  # noqa: E731
    noisy = [metrics.to_uint8(synth.add_extras(b, rng, recipe.extras)) for b in to_frames(blurred)]
    return ValidationClip(name, noisy, [metrics.to_uint8(s) for s in to_frames(sharp)])
