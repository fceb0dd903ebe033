"""Measure the shutter's estimate (vsdeblur/motion/shutter.py, `shutter auto`) on clips filmed
with known shutters (docs/training.md, "The shutter, estimated").

    nice .venv/bin/python pipelines/motion/shutter.py [--clips 16] [--threads 1] [--seed 31]

Scenes: frames 0, 40, 80 and 120 of the bundled clip (vsdeblur/data/bigbuckbunny.mp4, 1280x720)
used as photographs, as pipelines/prior/measure.py does; at 640x360 a view is a native-scale
crop, as quality.film_clip makes it of a photograph twice the view's height. Each clip is FRAMES
frames filmed by the benchmark's camera (vsdeblur.blur.camera: a continuous path, each frame the
linear-light mean of its exposure's views, rounded to 8 bits) under the benchmark's conditions
(blur length per exposure mild 1-3 px, medium 5-9, strong 12-18), its shutter drawn uniformly
from 0.2 to 1 of the frame interval (the benchmark's own camera draws 0.5 to 1). The middle
frames' motion is estimated by `estimate()` from their blurred neighbours (never the true path),
and each gives `shutter_evidence`; a clip's frames are pooled by `pooled_shutter`.

Reported per condition, as absolute errors in shutter (share of the frame interval), median /
80th percentile: per frame over the frames with evidence (weight > 0) and the share of those;
pooled over each clip (a clip without evidence gets the default, 1/2, and counts). Rows: the
estimate (both weightings of the derivative's spectrum), each weighting alone, the default 1/2
for every clip, and the floor that the path's unsteadiness sets: the shutter that frame's own
chord and the motion over its two intervals imply (2 |chord| / |displacement| at the view's
centre, from the true path) against the clip's shutter. Last, the time per 640x360 frame with
`--threads` torch threads.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from vsdeblur.blur import camera  # noqa: E402
from vsdeblur.motion import DEFAULT_SHUTTER, Motion, estimate, pooled_shutter, shutter_evidence  # noqa: E402
from vsdeblur.motion import shutter as method  # noqa: E402

# the clip, frame size, conditions and luma of the estimator's measurement beside this script
from measure import CONDITIONS, SIZE, scenes, to_luma  # noqa: E402

SCENES = (0, 40, 80, 120)
FRAMES = 5  # per clip; the middle three have both neighbours. More would take fast paths
#             (shutter 0.2, strong: 90 px a frame) past the scene's edge, where it reflects
SHUTTERS = (0.2, 1.0)


def film(scene: torch.Tensor, condition: tuple[float, float], rng: np.random.Generator) -> tuple[camera.CameraPath, torch.Tensor]:
    """A clip of FRAMES frames (RGB in [0, 1], rounded to 8 bits) and its path, the clip's reach
    centred in the scene."""
    spec = camera.CameraSpec(min_length=condition[0], max_length=condition[1], min_shutter=SHUTTERS[0], max_shutter=SHUTTERS[1])
    path = camera.draw_path(rng, spec, FRAMES)
    low, high = camera.reach(path, FRAMES, SIZE)
    centre = tuple((scene.shape[-1 - k] - 1) / 2 - (low[k] + high[k]) / 2 for k in (0, 1))
    blurred, _ = camera.film(scene, path, FRAMES, SIZE, centre)
    return path, (blurred * 255).round() / 255


def frame_floor(path: camera.CameraPath, t: int) -> float:
    """The shutter frame t's own chord implies with the motion over its two intervals, at the
    view's centre: what a perfect reading of both would give."""
    chord = np.diff(path.at(np.array([t - path.shutter / 2, t + path.shutter / 2]))[:, :2], axis=0)
    displacement = np.diff(path.at(np.array([t - 1.0, t + 1.0]))[:, :2], axis=0)
    return float(2 * np.linalg.norm(chord) / np.linalg.norm(displacement))


@contextmanager
def weighting(which: str):
    """The estimate with one weighting of the derivative's spectrum alone ("plain" or
    "whitened"), or both (the estimator as it is). Zeroing one halves the curve, which moves
    neither its lowest point nor its sign."""
    if which == "both":
        yield
        return
    if which == "plain":
        replaced = mock.patch.object(method, "_whitened", lambda power, derivative, fx, fy, noise: torch.zeros_like(power))
    else:
        replaced = mock.patch.object(method, "_plain", lambda power, derivative, fx, fy: torch.zeros_like(power))
    with replaced:
        yield


WEIGHTINGS = {"estimate (both weightings)": "both", "plain derivative alone": "plain", "whitened derivative alone": "whitened"}


def measure(pictures: list[torch.Tensor], clips: int, seed: int, log=print) -> dict[str, dict[str, dict[str, list]]]:
    """condition -> row -> {"frame": per-frame errors with evidence, "evidence": 0/1 per frame,
    "pool": per-clip errors}."""
    results: dict[str, dict[str, dict[str, list]]] = {}
    for number, (name, condition) in enumerate(CONDITIONS.items()):
        rows = results.setdefault(name, {})
        for clip in range(clips):
            path, frames = film(pictures[clip % len(pictures)], condition, np.random.default_rng([seed, number, clip]))
            lumas = [to_luma(frame) for frame in frames]
            middle = range(1, FRAMES - 1)
            motions: list[Motion] = [estimate(lumas[t - 1], lumas[t], lumas[t + 1]) for t in middle]
            for row, which in WEIGHTINGS.items():
                with weighting(which):
                    evidence = [shutter_evidence(frames[t], motion) for t, motion in zip(middle, motions)]
                record(rows.setdefault(row, {}), path.shutter, evidence)
            record(rows.setdefault("1/2 assumed", {}), path.shutter, [(DEFAULT_SHUTTER, 1.0)] * len(middle))
            record(rows.setdefault("floor: the frame's own chord (true path)", {}), path.shutter, [(frame_floor(path, t), 1.0) for t in middle])
            log(f"{name} clip {clip}: shutter {path.shutter:.3f}, pooled error {rows['estimate (both weightings)']['pool'][-1]:.3f}", flush=True)
    return results


def record(row: dict[str, list], truth: float, evidence: list[tuple[float, float]]) -> None:
    row.setdefault("frame", []).extend(abs(s - truth) for s, w in evidence if w > 0)
    row.setdefault("evidence", []).extend(float(w > 0) for _, w in evidence)
    row.setdefault("pool", []).append(abs(pooled_shutter(evidence) - truth))


def milliseconds(picture: torch.Tensor, runs: int) -> float:
    """Median time of shutter_evidence on a 640x360 frame of medium blur (its motion given)."""
    path, frames = film(picture, CONDITIONS["medium"], np.random.default_rng([0, 0]))
    lumas = [to_luma(frame) for frame in frames]
    motion = estimate(lumas[1], lumas[2], lumas[3])
    times = []
    for _ in range(runs + 1):
        start = time.perf_counter()
        shutter_evidence(frames[2], motion)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times[1:]))


def quantiles(values: list[float]) -> str:
    """Median / 80th percentile."""
    return f"{np.median(values):.3f} / {np.quantile(values, 0.8):.3f}" if values else "n/a"


def table(results: dict[str, dict[str, dict[str, list]]]) -> str:
    lines = ["| condition | row | per frame, with evidence | frames with evidence | pooled over a clip |", "|---|---|---|---|---|"]
    for name, rows in results.items():
        low, high = CONDITIONS[name]
        for row, found in rows.items():
            lines.append(f"| {name} ({low:g}-{high:g} px) | {row} | {quantiles(found['frame'])} | {100 * np.mean(found['evidence']):.0f}% | {quantiles(found['pool'])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=16, help="filmed clips per condition")
    parser.add_argument("--runs", type=int, default=10, help="timed runs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=31)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pictures = scenes(list(SCENES))
    results = measure(pictures, args.clips, args.seed)
    print(f"\nabsolute shutter error, median / 80th percentile ({args.clips} clips of {FRAMES - 2} frames per condition)\n")
    print(table(results))
    print(f"\nshutter_evidence: {milliseconds(pictures[0], args.runs):.0f} ms per 640x360 frame, {args.threads} torch thread(s)")


if __name__ == "__main__":
    main()
