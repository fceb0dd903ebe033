"""Measure the motion estimator (vsdeblur/motion) on known motions at 640x360.

    nice .venv/bin/python pipelines/motion/measure.py [--clips 24] [--threads 1] [--factor F ...]

Scenes are frames of the bundled clip (vsdeblur/data/bigbuckbunny.mp4, 1280x720), luma rounded to
8 bits as a video carries it. Two sets:

- warps: a frame moved by known pans, rolls and zooms (vsdeblur.motion.synthetic), one pair
  each: the per-tile displacement error in pixels, on tiles of confidence >= 0.5;
- camera: three frames filmed by the training's camera model (vsdeblur.blur.camera.film: a
  continuous path, each frame the linear-light mean of the views over its exposure) per
  condition of `vsdeblur benchmark` (blur length per exposure mild 1-3 px, medium 5-9, strong
  12-18), the middle frame's motion estimated from its neighbours. Reported on tiles of
  confidence >= 0.5: the displacement error against the sharp (mid-exposure) views, and the
  predicted blur against the true one.

The true blur of a tile is its exposure chord: where the scene point at the tile's centre is
seen at the end of frame 1's exposure minus where it is seen at its start (frame t is exposed
over t - shutter/2 .. t + shutter/2, in frame intervals). The neighbours' displacement spans
t-1 .. t+1, two intervals, so at a steady speed the chord is displacement * shutter / 2; the
prediction uses the path's true shutter (the estimator's error and the path's unsteadiness), and
a row assumes a 180-degree shutter (1/2) for every clip, as a deblurrer that cannot know it would.
Lengths are compared in %, axes (directions modulo 180 degrees) in degrees.

`--reversed` adds the estimator as a video runs it: each frame prepared once, each interval
measured once, frame 1's pair with frame 0 the reversal of frame 0's pair with frame 1
(PairMotion.reversed).

Speed: milliseconds per frame at 640x360, median of the runs, with `--threads` torch threads:
estimate() (both pairs), and with `--reversed` also a video's share per frame (preparing the
next frame, one pair, one reversal, combine). `--factor` compares working factors (full pixels
per working pixel; the estimator's default at 640x360 is 2).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import av
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from vsdeblur.motion import Motion, combine, estimate, estimate_pair, prepare  # noqa: E402
from vsdeblur.motion.synthetic import Warp  # noqa: E402
from vsdeblur.blur import camera, truth  # noqa: E402
from vsdeblur.measure.motion_prior import CONFIDENT  # noqa: E402
from vsdeblur.metrics import chord_axis_error, chord_length_error  # noqa: E402

CLIP = REPO / "vsdeblur" / "data" / "bigbuckbunny.mp4"
SIZE = (360, 640)  # h, w
CONDITIONS = {"mild": (1.0, 3.0), "medium": (5.0, 9.0), "strong": (12.0, 18.0)}
WARPS = [Warp(0.5, 0.25), Warp(3.37, -1.62), Warp(-11.3, 7.85), Warp(roll=0.5), Warp(zoom=1.01),
         Warp(2.2, 1.3, 0.3, 0.995), Warp(25.4, -17.2, 0.4, 1.01)]

LUMA = torch.tensor([0.2126, 0.7152, 0.0722])  # BT.709


def to_luma(rgb: torch.Tensor) -> torch.Tensor:
    """8-bit luma of RGB code values (3 x H x W in [0, 1]), as a video stores it."""
    return (torch.einsum("c...,c->...", rgb, LUMA) * 255).round() / 255


def scenes(indices: list[int]) -> list[torch.Tensor]:
    """RGB frames of the clip (3 x 720 x 1280, in [0, 1])."""
    found = []
    with av.open(str(CLIP)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in indices:
                found.append(torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1).float() / 255)
            if i >= max(indices):
                break
    return found


# ---- known warps -----------------------------------------------------------------------------


def warp_errors(pictures: list[torch.Tensor], reversed: bool = False, **options) -> tuple[np.ndarray, float]:
    """Per-tile displacement errors (px) of confident tiles over every picture and warp, and the
    share of tiles that were confident. The pair is given as a frame and its next neighbour,
    so the estimate is one-sided (twice the pair's displacement); `reversed`: that pair is the
    reversal of the warped frame's pair with the frame."""
    errors, confident = [], []
    for picture in pictures:
        luma = to_luma(picture)
        still = Warp().apply(luma)
        for warp in WARPS:
            warped = warp.apply(luma)
            if reversed:
                motion = combine(None, estimate_pair(warped, still, **options).reversed())
            else:
                motion = estimate(None, still, warped, **options)
            error = (motion.displacement / 2 - warp.field(motion.centres, still.shape)).norm(dim=-1)
            keep = motion.confidence >= CONFIDENT
            errors.append(error[keep].numpy())
            confident.append(keep.float().mean().item())
    return np.concatenate(errors), float(np.mean(confident))


# ---- the camera model ------------------------------------------------------------------------


_FILMED: dict[tuple, tuple[camera.CameraPath, list[torch.Tensor]]] = {}


def filmed(pictures: list[torch.Tensor], condition: tuple[float, float], clip: int, seed: int) -> tuple[camera.CameraPath, list[torch.Tensor]]:
    """Clip `clip` of a condition: its path and its three blurred frames' luma (filmed once,
    kept for every estimator compared)."""
    key = (condition, clip, seed)
    if key not in _FILMED:
        spec = camera.CameraSpec(min_length=condition[0], max_length=condition[1])
        path = camera.draw_path(np.random.default_rng([seed, clip]), spec, 3)
        blurred, _ = camera.film(pictures[clip % len(pictures)], path, 3, SIZE)
        _FILMED[key] = path, [to_luma(frame) for frame in blurred]
    return _FILMED[key]


def camera_errors(pictures: list[torch.Tensor], condition: tuple[float, float], clips: int, seed: int, **options) -> dict[str, np.ndarray | float]:
    """Errors over `clips` filmed clips of one condition (scenes taken in turn)."""
    found: dict[str, list] = {"displacement": [], "length": [], "axis": [], "length_180": [], "oracle_length": [], "oracle_axis": [], "confident": []}
    for clip in range(clips):
        path, lumas = filmed(pictures, condition, clip, seed)
        motion = middle_motion(lumas, **options)
        keep = (motion.confidence >= CONFIDENT).reshape(-1).numpy()
        found["confident"].append(keep.mean())
        positions = truth.view_positions(motion.centres.reshape(-1, 2).double().numpy()[keep], SIZE)
        predicted = motion.displacement.reshape(-1, 2).double().numpy()[keep]
        true_displacement, chord = truth.displacements(path, 1, positions), truth.exposure_chords(path, 1, positions)
        found["displacement"].append(np.linalg.norm(predicted - true_displacement, axis=1))
        for key, shutter in (("length", path.shutter), ("length_180", 0.5)):
            found[key].append(chord_length_error(predicted * shutter / 2, chord))
        found["axis"].append(chord_axis_error(predicted, chord))
        # the same prediction from the true displacement: what the path's unsteadiness alone costs
        oracle = true_displacement * path.shutter / 2
        found["oracle_length"].append(chord_length_error(oracle, chord))
        found["oracle_axis"].append(chord_axis_error(oracle, chord))
    result = {key: np.concatenate(value) for key, value in found.items() if key != "confident"}
    result["confident"] = float(np.mean(found["confident"]))
    return result


def middle_motion(lumas: list[torch.Tensor], reversed: bool = False, **options) -> Motion:
    """Frame 1's motion from frames 0 and 2: both pairs measured, or (`reversed`) as a video
    measures it, its pair with frame 0 reversed from frame 0's pair with it."""
    if not reversed:
        return estimate(*lumas, **options)
    frames = [prepare(luma, **options) for luma in lumas]
    return combine(estimate_pair(frames[0], frames[1]).reversed(), estimate_pair(frames[1], frames[2]))


# ---- speed -----------------------------------------------------------------------------------


def milliseconds_per_frame(picture: torch.Tensor, runs: int, configurations: list[dict]) -> list[float]:
    """Median time of estimate() per configuration; runs take the configurations in turn, so
    that a load that comes and goes on a shared machine falls on all of them alike."""
    luma = to_luma(picture)
    frames = [Warp(dx=k * 2.3, dy=-k * 1.1).apply(luma) for k in range(3)]
    times: list[list[float]] = [[] for _ in configurations]
    for run in range(runs + 1):
        for options, found in zip(configurations, times):
            seconds = video_step(frames, **options) if options.get("reversed") else estimate_step(frames, **options)
            if run:  # the first is a warm-up
                found.append(seconds)
    return [1000 * float(np.median(found)) for found in times]


def estimate_step(frames: list[torch.Tensor], **options) -> float:
    start = time.perf_counter()
    estimate(*frames, **options)
    return time.perf_counter() - start


def video_step(frames: list[torch.Tensor], reversed: bool, **options) -> float:
    """A video's work per frame once running: frame 0's pair with frame 1 and frame 1's whole
    spectrum are left from the step before (untimed); frame 2 arrives."""
    previous, current = prepare(frames[0], **options), prepare(frames[1], **options)
    before = estimate_pair(previous, current)
    start = time.perf_counter()
    combine(before.reversed(), estimate_pair(current, prepare(frames[2], **options)))
    return time.perf_counter() - start


def quantiles(values: np.ndarray) -> str:
    """Median / 80th percentile."""
    return f"{np.median(values):.3g} / {np.quantile(values, 0.8):.3g}" if len(values) else "n/a"


def report(pictures: list[torch.Tensor], clips: int, seed: int, options: dict) -> None:
    """One markdown table per configuration: medians / 80th percentiles over confident tiles."""
    print(f"\n{options or 'the estimator as it is'}\n")
    errors, share = warp_errors(pictures[:3], **options)
    print(f"warps: displacement error {quantiles(errors)} px (max {errors.max():.3g}); confident tiles {100 * share:.0f}%\n")
    print("| camera blur | displacement error, px | blur length error, % | with a 1/2 shutter assumed | from the true displacement"
          " | blur axis error, deg | from the true displacement | confident tiles |")
    print("|---|---|---|---|---|---|---|---|")
    for name, condition in CONDITIONS.items():
        r = camera_errors(pictures, condition, clips, seed, **options)
        print(f"| {name} ({condition[0]:g}-{condition[1]:g} px) | {quantiles(r['displacement'])} | {quantiles(r['length'])} | {quantiles(r['length_180'])}"
              f" | {quantiles(r['oracle_length'])} | {quantiles(r['axis'])} | {quantiles(r['oracle_axis'])} | {100 * r['confident']:.0f}% |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=24, help="filmed clips per condition")
    parser.add_argument("--runs", type=int, default=10, help="timed runs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=30)
    parser.add_argument("--factor", type=int, action="append", help="working factor(s) to compare (default: the estimator's own)")
    parser.add_argument("--reversed", action="store_true", help="also each configuration as a video runs it (each interval measured once)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pictures = scenes([0, 40, 80, 120])
    configurations = [{"factor": factor} for factor in args.factor] if args.factor else [{}]
    if args.reversed:
        configurations += [options | {"reversed": True} for options in configurations]
    for options in configurations:
        report(pictures, args.clips, args.seed, options)
    print()
    for options, ms in zip(configurations, milliseconds_per_frame(pictures[0], args.runs, configurations)):
        print(f"speed {options or 'of the estimator as it is'}: {ms:.1f} ms per 640x360 frame, {args.threads} thread(s)")


if __name__ == "__main__":
    main()
