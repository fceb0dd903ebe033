"""The deconvolution prior (vsdeblur.prior) on blur as the benchmark's camera makes it
(docs/training.md, "The deconvolution prior").

    nice .venv/bin/python pipelines/prior/measure.py [--material DIR] [--clips N] [--frames F]

Material: the quality benchmark's held-out photographs (--material, as `vsdeblur benchmark`
reads them) or, by default, frames of the bundled sample clip used as photographs. Each is
filmed with the benchmark's own camera (vsdeblur.measure.quality.film_clip, its seeds and its
conditions mild, medium, strong and none) at 640x360, F frames; with the photographs these
are the benchmark's own clips.

For each frame, the blur vector field is the true exposure chord on the motion estimator's grid
(10 x 19 cells at 640x360): how far the content seen at a cell's centre moves from the start to
the end of the exposure (vsdeblur.blur.truth, along the path quality.filmed_path says the clip
was filmed along).
"Perturbed" scales every chord of a frame by one draw of lognormal(0, 0.15) and turns it by one
draw of N(0, 8 degrees), about the estimator's error (the path's own unsteadiness, common to the
frame, is most of it). Scores are 8-bit RGB PSNR gains over the blurred input
(vsdeblur.metrics.psnr, mean over frames), for the none condition the PSNR against the original
("identical": no pixel changed). Two more rows add white noise (2/255) to the mild and medium
frames before they are rounded to 8 bits.

Columns: the best unsharp mask of the benchmark's grid and the issue's design (a straight
kernel, |H|^2 + nsr |D|^2 with mirrored edges), each chosen per condition on the set itself
(oracles); the prior with fixed nsr instead of its rule (each of NSRS, and the best per
condition); the prior with the true and the perturbed chords; and, as the ceiling of what the chord
leaves out, the same deconvolution with the kernels of the exposure's true path (bends and
changes of speed included) at the centres of the prior's 2 x 4 tiles. Last, the time per
640x360 frame (10 x 19 field) on this machine's CPU with torch's threads (`--threads`), also
with other numbers of edge steps (`--iterations N`, repeated), taken in turn; `--speed`: only
that.
"""

from __future__ import annotations

import argparse
import ast
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from vsdeblur.blur import truth
from vsdeblur.measure import quality
from vsdeblur.metrics import psnr
from vsdeblur.prior import PriorSettings, deblur, path_kernels
from vsdeblur.prior.deconvolve import deconvolve
from vsdeblur.prior.kernel import EXACT, pose_offsets

SAMPLE = Path(__file__).resolve().parents[2] / "vsdeblur" / "data" / "bigbuckbunny.mp4"
SAMPLE_FRAMES = (0, 40, 80, 120)  # the prior was tuned on other frames (10, 30, ... 110) and seeds
SIZE = (640, 360)
GRID = (10, 19)  # the motion estimator's cells at 640x360
TILES = (2, 4)  # what the prior pools them to at 640x360 (PriorSettings.tile)
# (condition, white noise std in 8-bit steps added to the blurred frames): the noisy rows show
# the rule following the noise where one fixed nsr cannot serve clean and noisy frames alike
ROWS = (("mild", 0), ("medium", 0), ("strong", 0), ("none", 0), ("mild", 2), ("medium", 2))
NSRS = (0.01, 0.03, 0.1)
ISSUE_NSRS = (0.03, 0.1, 0.3)
# the issue's design: a straight kernel, a plain gradient prior, the frame mirrored, one FFT
ISSUE = PriorSettings(uncertainty=EXACT, keep_passed=False, iterations=0, overlap=1.0)


def photographs(material: Path | None, clips: int) -> dict[str, np.ndarray]:
    """name -> uint8 H x W x 3: the benchmark's photographs, or frames of the sample clip."""
    if material is not None:
        from vsdeblur.io.images import read_image

        return {path.stem: read_image(path) for path in quality.photos_of(material, clips)}
    wanted = SAMPLE_FRAMES[:clips]
    found = {}
    with av.open(str(SAMPLE)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                found[f"frame {index}"] = frame.to_ndarray(format="rgb24")
            if len(found) == len(wanted):
                break
    return found


def chord_field(path, frame: int, size: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
    """The exposure chord at each cell's centre: rows x cols x 2 (dx, dy pixels), with the sign
    of the camera's motion, as the table in docs/training.md was measured: the content's (the
    estimator's sign) is its opposite, and the prior's drawn paths are not quite symmetric, so a
    single frame's score moves by up to a few tenths of a dB with the sign."""
    return -torch.from_numpy(truth.exposure_chords(path, frame, truth.cell_centres(size[::-1], grid))).float()


def path_field(path, frame: int, size: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
    """The kernel of the exposure's own path at each cell's centre (what the camera averaged,
    bends and changes of speed included): rows x cols x K x K."""
    poses = path.exposure(frame, float(np.hypot(*size)) / 2)
    middle = path.at(np.array([float(frame)]))[0]
    return path_kernels(torch.stack([torch.stack([pose_offsets(poses, tuple(at), middle) for at in row])
                                     for row in truth.cell_centres(size[::-1], grid)]))


def perturbed(field: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """The field's chords, all scaled by one lognormal(0, 0.15) and turned by one N(0, 8 deg)."""
    scale, turn = float(np.exp(rng.normal(0, 0.15))), float(np.radians(rng.normal(0, 8)))
    rotation = torch.tensor([[np.cos(turn), np.sin(turn)], [-np.sin(turn), np.cos(turn)]], dtype=torch.float32)
    return scale * field @ rotation


def variants() -> dict[str, tuple[PriorSettings, str]]:
    """name -> (settings, which chords): every restoration the table compares."""
    table = {f"issue nsr {n:g}": (PriorSettings(**{**ISSUE.__dict__, "nsr": n}), "true") for n in ISSUE_NSRS}
    table |= {f"prior nsr {n:g}": (PriorSettings(nsr=n), "true") for n in NSRS}
    table |= {"prior": (PriorSettings(), "true"), "prior, perturbed": (PriorSettings(), "perturbed")}
    return table


def noisy(frames: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """uint8 frames with white Gaussian noise of std `sigma` (8-bit steps) added, rounded."""
    return np.clip(frames + rng.normal(0, sigma, frames.shape), 0, 255).round().astype(np.uint8)


def score_clip(scores: dict[str, list[float]], blurred: np.ndarray, sharp: np.ndarray, path, seed: list[int], unblurred: bool) -> None:
    """Add one clip's PSNR gains (unblurred: PSNRs against the original) to `scores`."""
    for setting, value in quality.unsharp_scores(list(blurred), list(sharp)).items():
        base = 0.0 if unblurred else float(np.mean([psnr(b, s) for b, s in zip(blurred, sharp)]))
        scores.setdefault(f"unsharp {setting}", []).append(value - base)
    for t in range(len(blurred)):
        base = 0.0 if unblurred else psnr(blurred[t], sharp[t])
        x = torch.from_numpy(blurred[t]).permute(2, 0, 1).float() / 255
        true = chord_field(path, t, SIZE, GRID)
        chords = {"true": true, "perturbed": perturbed(true, np.random.default_rng(seed + [t]))}
        for column, (settings, which) in variants().items():
            restored = deblur(x, chords[which], settings=settings).permute(1, 2, 0).numpy()
            scores.setdefault(column, []).append(psnr(restored, sharp[t]) - base)
        # the ceiling: the true kernels, on the tiles the prior pools the field to
        restored = deconvolve(x, path_field(path, t, SIZE, TILES)).permute(1, 2, 0).numpy()
        scores.setdefault("exact path", []).append(psnr(restored, sharp[t]) - base)


def measure(photos: dict[str, np.ndarray], frames: int, log=print) -> dict[str, dict[str, float]]:
    """row name -> column -> mean PSNR gain (for none: PSNR against the original)."""
    results: dict[str, dict[str, list[float]]] = {}
    for index, (name, photo) in enumerate(photos.items()):
        for condition in (c for c in quality.CONDITIONS if c.name in dict(ROWS)):
            seed = quality.clip_seed(index, condition)  # the benchmark's own: its clips, given its photographs
            path = quality.filmed_path(index, condition, frames)
            blurred, sharp = quality.film_clip(photo, condition, np.random.default_rng(seed), frames, SIZE)
            for row, sigma in ((row_name(c, n), n) for c, n in ROWS if c == condition.name):
                log(f"{name}, {row}")
                frames_in = noisy(blurred, sigma, np.random.default_rng(seed + [99])) if sigma else blurred
                score_clip(results.setdefault(row, {}), frames_in, sharp, path, seed, condition.kind == "none")
    return {row: {k: float(np.mean(v)) for k, v in columns.items()} for row, columns in results.items()}


def row_name(condition: str, noise: float) -> str:
    return f"{condition} + noise {noise:g}/255" if noise else condition


def best(scores: dict[str, float], prefix: str) -> tuple[Any, float]:
    """The best column whose name starts with `prefix`: (its setting, its score)."""
    name = max((k for k in scores if k.startswith(prefix)), key=scores.__getitem__)
    return ast.literal_eval(name.removeprefix(prefix).strip()), scores[name]


def milliseconds(configurations: list[PriorSettings], runs: int = 5) -> list[float]:
    """Median time of the prior per configuration on one 640x360 frame with a 10 x 19 field of
    8 px chords; runs take the configurations in turn, so that a load that comes and goes on a
    shared machine falls on all of them alike."""
    generator = torch.Generator().manual_seed(0)
    frame = torch.rand(3, SIZE[1], SIZE[0], generator=generator)
    field = torch.tensor([6.0, 5.0]) + torch.randn(*GRID, 2, generator=generator)
    times: list[list[float]] = [[] for _ in configurations]
    for run in range(runs + 1):
        for settings, found in zip(configurations, times):
            start = time.perf_counter()
            deblur(frame, field, settings=settings)
            if run:  # the first is a warm-up
                found.append(time.perf_counter() - start)
    return [1000 * float(np.median(found)) for found in times]


def cell(value: float, gain: bool) -> str:
    if not np.isfinite(value):
        return "identical"
    return f"{value:+.2f}" if gain else f"{value:.2f}"


def table(results: dict[str, dict[str, float]]) -> str:
    """A markdown table: one line per row of ROWS, PSNR gains in dB (none: PSNR)."""
    lines = ["| condition | best unsharp mask | issue's design, best nsr | prior, fixed nsr " + " / ".join(f"{n:g}" for n in NSRS)
             + " | prior, true chord | prior, perturbed chord | true path's kernel (ceiling) |", "|---|---|---|---|---|---|---|"]
    for row in (row_name(c, n) for c, n in ROWS):
        scores, gain = results[row], row != "none"
        (sigma, amount), unsharp = best(scores, "unsharp")
        nsr, issue = best(scores, "issue nsr")
        fixed = " / ".join(cell(scores[f"prior nsr {n:g}"], gain) for n in NSRS)
        lines.append(f"| {row} | {cell(unsharp, gain)} (s{sigma} a{amount}) | {cell(issue, gain)} (nsr {nsr}) | {fixed} "
                     f"| **{cell(scores['prior'], gain)}** | {cell(scores['prior, perturbed'], gain)} | {cell(scores['exact path'], gain)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--material", type=Path, default=None, help="the benchmark's photographs (default: frames of the sample clip)")
    parser.add_argument("--clips", type=int, default=len(SAMPLE_FRAMES))
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--iterations", type=int, action="append", help="also time the prior with these edge steps (default: only its own)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--speed", action="store_true", help="time only, no table")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.speed:
        print(table(measure(photographs(args.material, args.clips), args.frames)))
    configurations = [PriorSettings()] + [PriorSettings(iterations=n) for n in args.iterations or []]
    for settings, ms in zip(configurations, milliseconds(configurations)):
        print(f"ms per 640x360 frame, {settings.iterations} edge steps ({torch.get_num_threads()} torch threads): {ms:.0f}")


if __name__ == "__main__":
    main()
