"""The check every candidate model goes through (docs/training.md): held-out real footage with
synthetic camera shake, restored by vsdeblur-stream with default settings, scored by vsdeblur eval.

    python pipelines/train/heldout.py WEIGHTS [CASE ...] [--work DIR]

The footage is the first 60 frames of the validation clip `data/val/videos/bikes.mp4`
(`make train-data`; validation uses frames from its middle, so these are never seen), stored
losslessly as DIR/sharp.mkv; each case is `vsdeblur synth` of it with the options below. Blurred
files are made once and kept in DIR, so candidates are compared on the same input.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import av

CASES = {
    "default": ["--seed", "3"],
    "mild": ["--seed", "3", "--max-length", "12"],
    "mild5": ["--seed", "5", "--max-length", "12"],
    "strong": ["--seed", "3", "--min-length", "12"],
    "mild-x264": ["--seed", "3", "--max-length", "12", "--crf", "16"],  # a lossy input
    "none": None,  # the sharp clip itself: the model should leave it alone
}
SOURCE = Path(__file__).resolve().parents[2] / "data" / "val" / "videos" / "bikes.mp4"
FRAMES = 60
BIN = Path(sys.executable).parent


def cut(source: Path, target: Path, frames: int) -> None:
    """The first `frames` frames of `source`, losslessly (FFV1), as they decode."""
    with av.open(str(source)) as inp, av.open(str(target), "w") as out:
        video = inp.streams.video[0]
        stream = out.add_stream("ffv1", rate=video.average_rate)
        stream.width, stream.height, stream.pix_fmt = video.width, video.height, video.format.name
        for index, frame in enumerate(inp.decode(video)):
            if index == frames:
                break
            frame.pts = None
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def score(sharp: Path, blurred: Path, weights: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        restored, report = Path(tmp) / "restored.mkv", Path(tmp) / "scores.json"
        subprocess.run([BIN / "vsdeblur-stream", blurred, restored, "--weights", weights, "-q"], check=True)
        subprocess.run([BIN / "vsdeblur", "eval", sharp, blurred, restored, "--json", report],
                       check=True, stdout=subprocess.DEVNULL)
        return json.loads(report.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path)
    parser.add_argument("cases", nargs="*", metavar="CASE", help=f"any of {', '.join(CASES)} (default: all)")
    parser.add_argument("--work", type=Path, default=Path("runs/heldout"))
    args = parser.parse_args()
    unknown = set(args.cases) - CASES.keys()
    if unknown:
        parser.error(f"unknown case {', '.join(sorted(unknown))}; choose from {', '.join(CASES)}")
    args.work.mkdir(parents=True, exist_ok=True)
    sharp = args.work / "sharp.mkv"
    if not sharp.exists():
        cut(SOURCE, sharp, FRAMES)
    for case in args.cases or CASES:
        blurred = sharp if CASES[case] is None else args.work / f"blur-{case}.mkv"
        if not blurred.exists():
            subprocess.run([BIN / "vsdeblur", "synth", sharp, blurred, "-q", *CASES[case]], check=True)
        result = score(sharp, blurred, args.weights)
        before, after = result["blurred"], result["restored"]
        if blurred == sharp:
            print(f"{case:10} restored {after['psnr']:6.2f} dB against the original  SSIM {after['ssim']:.4f}", flush=True)
        else:
            print(f"{case:10} blurred {before['psnr']:6.2f} dB  restored {after['psnr']:6.2f} dB  gain {result['gain']['psnr']:+.2f} dB"
                  f"  SSIM {before['ssim']:.4f} -> {after['ssim']:.4f}", flush=True)


if __name__ == "__main__":
    main()
