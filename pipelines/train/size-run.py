"""Write a recipe sized to a wall-clock budget on this machine.

The sized recipe is RECIPE (its `base`) with `steps` set from the rate at which one core of this
machine synthesises RECIPE's batches, times the worker processes: on a GPU blur synthesis, not
the network, sets the pace. A decay_start moves with the steps; validations, checkpoints and
kept candidates (`keep_every`) are spread over the run.

Usage: python pipelines/train/size-run.py RECIPE SECONDS SIZED [--workers N]
then:  vsdeblur train --config SIZED
"""

import math
import os
import time
from pathlib import Path

import click
import torch

from vsdeblur.errors import Command, UsageError
from vsdeblur.train.loop import TrainConfig, load_config

# the training process, validations and start-up share the machine with the workers
WORKER_EFFICIENCY = 0.8


def samples_per_second(config: TrainConfig, seconds: float) -> float:
    """Training samples one core synthesises per second for this recipe's batches."""
    torch.set_num_threads(1)
    mixture, frames = config.mixture(), config.frames()
    mixture.batch(config.seed, 0, config.batch, config.crop, frames)  # file reads and caches out of the timing
    started, step = time.monotonic(), 0
    while time.monotonic() - started < seconds:
        step += 1
        mixture.batch(config.seed, step, config.batch, config.crop, frames)
    return step * config.batch / (time.monotonic() - started)


@click.command(cls=Command, help=__doc__.split("\n\n")[0])
@click.argument("recipe", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("seconds", type=click.FloatRange(min=1))
@click.argument("sized", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--workers", type=click.IntRange(1), default=max(1, (os.cpu_count() or 2) - 2), show_default=True,
              help="processes synthesising batches (the rest of the cores: the training process)")
@click.option("--candidates", type=click.IntRange(1), default=3, show_default=True, help="models kept along the run")
@click.option("--measure", type=click.FloatRange(min=0.1), default=12.0, show_default=True, help="seconds of synthesis timed")
def size_run(recipe: Path, seconds: float, sized: Path, workers: int, candidates: int, measure: float) -> None:
    if not sized.parent.is_dir():
        raise UsageError(f"cannot write {sized}: its folder does not exist")
    config = load_config(recipe)
    rate = samples_per_second(config, measure)
    keep = max(1, int(rate * workers * WORKER_EFFICIENCY * seconds / config.batch / candidates))
    steps = keep * candidates
    lines = [
        f'base = "{os.path.relpath(recipe.resolve(), sized.parent.resolve())}"',
        f"# {rate:.2f} samples/s per core x {workers} workers x {WORKER_EFFICIENCY} for {seconds:.0f} s",
        f"steps = {steps}",
        f"workers = {workers}",
        f"keep_every = {keep}",
        f"checkpoint_every = {keep}",
        f"validate_every = {math.ceil(keep / 2)}",
    ]
    if config.decay_start:
        lines.append(f"decay_start = {round(config.decay_start / config.steps * steps)}")
    sized.write_text("\n".join(lines) + "\n", encoding="utf-8")
    click.echo(f"{sized}: {steps} steps ({rate:.2f} samples/s per core, {workers} workers)")


if __name__ == "__main__":
    size_run()
