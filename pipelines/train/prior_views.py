"""How much a prior recipe's samples' prior helps, by the side they are filmed at: for each
view, N samples drawn as the bank draws them (the recipe's mixture and camera, the engine's
own prior), the prior's PSNR gain over the blurred centre frame against its sharp reference
(8-bit RGB) and the planes' mean confidence. A prior that does not help the samples gives the
network nothing to learn from (docs/training.md, "A stage 1 on the motion prior").

    nice .venv/bin/python pipelines/train/prior_views.py --config pipelines/train/small-prior.toml --views 256,384,512 --samples 24
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

from vsdeblur.metrics import psnr, to_uint8
from vsdeblur.train import prior
from vsdeblur.train.loop import load_config

SEED = 4242  # apart from the bank's and the training steps' draws


def view_row(config, view: int, samples: int) -> tuple[float, float, float, float]:
    """(median gain dB, mean gain dB, share of samples gaining > 0.1 dB, mean confidence)."""
    recipe = dataclasses.replace(config.prior_recipe(), view=view, blind_probability=0.0)
    mixture = config.mixture()
    gains, confidence = [], []
    for i in range(samples):
        sample = mixture.samples(config.seed + SEED, i, 1, view, config.frames())[0]
        blurred, sharp, planes = prior.prior_crop(sample, np.random.default_rng([SEED, i]), recipe, view)
        restored = (planes[:3].transpose(1, 2, 0) + 1) / 2
        reference = to_uint8(sharp)
        gains.append(psnr(to_uint8(restored), reference) - psnr(to_uint8(blurred), reference))
        confidence.append(float(planes[5].mean()))
    g = np.array(gains)
    return float(np.median(g)), float(g.mean()), float((g > 0.1).mean()), float(np.mean(confidence))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--views", default="256,384,512")
    parser.add_argument("--samples", type=int, default=24)
    args = parser.parse_args()
    torch.set_num_threads(2)
    config = load_config(args.config)
    print("view   median gain   mean gain   gaining > 0.1 dB   mean confidence")
    for view in (int(v) for v in args.views.split(",")):
        median, mean, share, confidence = view_row(config, view, args.samples)
        print(f"{view:<6} {median:>+10.2f}   {mean:>+9.2f}   {100 * share:>15.0f} %   {confidence:>15.2f}", flush=True)


if __name__ == "__main__":
    main()
