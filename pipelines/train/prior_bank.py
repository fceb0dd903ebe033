"""Fill a bank of prior samples for a recipe that says `prior` and names a `prior_bank`
(vsdeblur/train/prior.py: three frames filmed along a camera path at `prior_view`, the centre
frame's prior made by the engine's own estimator, stored whole; training crops them).

    nice .venv/bin/python pipelines/train/prior_bank.py --config RECIPE --count N [--part I --parts P]

Resumable: samples already in the bank are kept, so a stopped run goes on where it stopped;
run P processes with parts 0 .. P-1 to fill one bank on P cores. Sample i is drawn from its
own generators (the recipe's seed, i): the same recipe fills the same bank.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vsdeblur.errors import UsageError
from vsdeblur.train import prior
from vsdeblur.train.loop import load_config

BANK_SEED = 7727  # keys the bank's draws apart from the training steps' (seed, step, i)


def fill(config_path: Path, count: int, part: int, parts: int) -> int:
    config = load_config(config_path)
    recipe = config.prior_recipe()
    if recipe is None or recipe.bank is None:
        raise UsageError(f"{config_path}: a bank is made for a recipe with prior = true and a prior_bank folder")
    folder = recipe.bank
    folder.mkdir(parents=True, exist_ok=True)
    index = folder / prior.BANK_INDEX
    if not index.exists():
        index.write_text(json.dumps({"recipe": config.describe()}, indent=1), encoding="utf-8")
    mixture = config.mixture()
    made = 0
    started = time.monotonic()
    for i in range(part, count, parts):
        if prior.bank_sample_path(folder, i).exists():
            continue
        sample = mixture.samples(config.seed + BANK_SEED, i, 1, recipe.view, config.frames())[0]
        prior.write_bank_sample(folder, i, sample, np.random.default_rng([config.seed, BANK_SEED, i]), recipe)
        made += 1
        if made % 25 == 0:
            print(f"part {part}: {made} samples, {(time.monotonic() - started) / made:.2f} s each", flush=True)
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--part", type=int, default=0)
    parser.add_argument("--parts", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        made = fill(args.config, args.count, args.part, args.parts)
    except UsageError as exc:
        sys.exit(f"prior_bank: {exc}")
    print(f"part {args.part}: {made} samples made", flush=True)


if __name__ == "__main__":
    main()
