"""What the prior's edge steps (PriorSettings.iterations) buy, at the frame's edges and inside it.

    nice .venv/bin/python pipelines/prior/edges.py [--clips 4] [--frames 2] [--iterations 0 1 2 4] [--colour]

The frames of measure.py (the sample clip's frames used as photographs, filmed by the
benchmark's camera at 640x360, conditions mild, medium and strong, the true chords on the
estimator's grid), restored with each number of conjugate-gradient steps. The blurred pixels
near the frame's edges saw scene beyond it, which the steps leave to the prior instead of the
mirrored frame: the PSNR gain (8-bit RGB, dB, mean over frames) is reported separately for the
BORDER pixels along the edges and for the rest. `--colour` restores each channel
(PriorSettings.colour) instead of the luminance.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from measure import GRID, SIZE, chord_field, photographs  # pipelines/prior/measure.py, beside this script
from vsdeblur.measure import quality
from vsdeblur.prior import PriorSettings, deblur

BORDER = 24  # pixels: beyond two kernel radii of strong blur, where mirroring costs most
CONDITIONS = ("mild", "medium", "strong")


def border_mask(height: int, width: int) -> np.ndarray:
    """H x W x 1: True within BORDER pixels of an edge."""
    mask = np.zeros((height, width, 1), bool)
    mask[:BORDER] = mask[-BORDER:] = True
    mask[:, :BORDER] = mask[:, -BORDER:] = True
    return mask


def region_psnr(image: np.ndarray, sharp: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (dB) of 8-bit images over the masked pixels."""
    error = (image.astype(np.float64) - sharp.astype(np.float64)) / 255
    return float(10 * np.log10(1 / np.square(error)[np.broadcast_to(mask, error.shape)].mean()))


def restored(blurred: np.ndarray, chords: torch.Tensor, settings: PriorSettings) -> np.ndarray:
    """The prior's restoration of a uint8 H x W x 3 frame, rounded to 8 bits."""
    x = torch.from_numpy(blurred).permute(2, 0, 1).float() / 255
    out = deblur(x, chords, settings=settings)
    return (out.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)


def measure(photos: dict[str, np.ndarray], frames: int, steps: list[int], colour: bool = False) -> dict[str, dict[str, list[float]]]:
    """condition -> 'N border' / 'N inside' -> PSNR gains over the frames."""
    scores: dict[str, dict[str, list[float]]] = {}
    mask = border_mask(SIZE[1], SIZE[0])
    for index, photo in enumerate(photos.values()):
        for condition in (c for c in quality.CONDITIONS if c.name in CONDITIONS):
            seed = [quality.SEED, index, quality.CONDITIONS.index(condition)]  # measure.py's clips
            path = quality.condition_path(condition, np.random.default_rng(seed), frames)
            blurred, sharp = quality.film_clip(photo, condition, np.random.default_rng(seed), frames, SIZE)
            for t in range(frames):
                chords = chord_field(path, t, SIZE, GRID)
                for n in steps:
                    out = restored(blurred[t], chords, PriorSettings(iterations=n, colour=colour))
                    for region, where in ((f"{n} border", mask), (f"{n} inside", ~mask)):
                        gain = region_psnr(out, sharp[t], where) - region_psnr(blurred[t], sharp[t], where)
                        scores.setdefault(condition.name, {}).setdefault(region, []).append(gain)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--iterations", type=int, nargs="+", default=[0, 1, 2, 4])
    parser.add_argument("--colour", action="store_true", help="restore each channel, not the luminance")
    args = parser.parse_args()
    scores = measure(photographs(None, args.clips), args.frames, args.iterations, args.colour)
    print(f"| condition | {' | '.join(f'{n} steps: border / inside' for n in args.iterations)} |")
    print("|---|" + "---|" * len(args.iterations))
    for condition, columns in scores.items():
        cells = (f"{np.mean(columns[f'{n} border']):+.2f} / {np.mean(columns[f'{n} inside']):+.2f}" for n in args.iterations)
        print(f"| {condition} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
