"""The prior restoring each channel or the luminance alone (PriorSettings.colour), clean and noisy.

    nice .venv/bin/python pipelines/prior/colour.py [--clips 4] [--frames 2]

The frames of measure.py (the sample clip's frames used as photographs, filmed by the
benchmark's camera at 640x360, conditions mild, medium and strong, and mild and medium with
white noise of 2/255 added before rounding), restored with the true chords and the perturbed
ones on the estimator's grid, two edge steps (what the engine passes): each channel, the
luminance with the noise of its own code values (the default), and the luminance with the noise
of RGB's. PSNR gain in dB over the blurred input (8-bit RGB, mean over frames), true / perturbed.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from measure import GRID, SIZE, chord_field, noisy, perturbed, photographs  # pipelines/prior/measure.py, beside this script
from vsdeblur.measure import quality
from vsdeblur.metrics import psnr
from vsdeblur.prior import PriorSettings, deblur, estimate_noise

ROWS = (("mild", 0), ("medium", 0), ("strong", 0), ("mild", 2), ("medium", 2))
COLUMNS = ("each channel", "luminance", "luminance, noise of RGB")


def restorations(x: torch.Tensor, chords: torch.Tensor) -> dict[str, torch.Tensor]:
    """column -> the frame restored that way."""
    return {
        "each channel": deblur(x, chords, settings=PriorSettings(iterations=2, colour=True)),
        "luminance": deblur(x, chords, settings=PriorSettings(iterations=2)),
        "luminance, noise of RGB": deblur(x, chords, noise=estimate_noise(x), settings=PriorSettings(iterations=2)),
    }


def measure(photos: dict[str, np.ndarray], frames: int) -> dict[tuple[str, str, str], list[float]]:
    """(row, column, 'true' or 'perturbed') -> PSNR gains over the frames."""
    scores: dict[tuple[str, str, str], list[float]] = {}
    for index, photo in enumerate(photos.values()):
        for condition in (c for c in quality.CONDITIONS if c.name in dict(ROWS)):
            seed = quality.clip_seed(index, condition)
            path = quality.filmed_path(index, condition, frames)
            blurred, sharp = quality.film_clip(photo, condition, np.random.default_rng(seed), frames, SIZE)
            for name, sigma in ((c, n) for c, n in ROWS if c == condition.name):
                row = f"{name} + noise {sigma}/255" if sigma else name
                frames_in = noisy(blurred, sigma, np.random.default_rng(seed + [99])) if sigma else blurred
                for t in range(frames):
                    base = psnr(frames_in[t], sharp[t])
                    x = torch.from_numpy(frames_in[t]).permute(2, 0, 1).float() / 255
                    true = chord_field(path, t, SIZE, GRID)
                    for which, chords in (("true", true), ("perturbed", perturbed(true, np.random.default_rng(seed + [t])))):
                        for column, out in restorations(x, chords).items():
                            scores.setdefault((row, column, which), []).append(psnr(out.permute(1, 2, 0).numpy(), sharp[t]) - base)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--frames", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    scores = measure(photographs(None, args.clips), args.frames)
    print(f"| condition | {' | '.join(COLUMNS)} |")
    print("|---|" + "---|" * len(COLUMNS))
    for row in dict.fromkeys(key[0] for key in scores):
        cells = (f"{np.mean(scores[(row, c, 'true')]):+.2f} / {np.mean(scores[(row, c, 'perturbed')]):+.2f}" for c in COLUMNS)
        print(f"| {row} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
