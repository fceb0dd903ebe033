"""Copy trained weights for shipping, stored in float16: half the size of the training export.

The networks still compute in float32 (loading widens every tensor); rounding the weights to
float16 moved the shipped model's scores by less than 0.01 dB (docs/training.md).

Usage: python pipelines/train/ship.py runs/RUN/final.safetensors vsdeblur/weights/default.safetensors
       [--stage2-from WEIGHTS]: stage 2 taken from WEIGHTS (a new stage 1 behind an existing stage 2)
"""

import dataclasses
from pathlib import Path

import click
import torch

from vsdeblur.errors import Command, UsageError
from vsdeblur.weights import read_weights, save_weights


@click.command(cls=Command, help=__doc__.split("\n\n")[0])
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("target", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--stage2-from", type=click.Path(path_type=Path, dir_okay=False), help="take stage 2 (and its window) from these weights")
def ship(source: Path, target: Path, stage2_from: Path | None) -> None:
    weights = read_weights(source)
    if not target.parent.is_dir():
        raise UsageError(f"cannot write {target}: its folder does not exist")
    models = {stage: weights.build(stage) for stage in weights.stages}
    preset, info = weights.preset, {**weights.info, "storage": "float16"}
    if stage2_from is not None:
        other = read_weights(stage2_from)
        if 2 not in other.stages:
            raise UsageError(f"{stage2_from} holds no stage 2")
        differences = preset.with_radius(other.preset.stage2.radius).differences(dataclasses.replace(preset, stage2=other.preset.stage2))
        if differences:
            raise UsageError(f"{stage2_from}'s stage 2 does not fit preset {preset.name!r}: " + "; ".join(differences))
        preset, models[2] = preset.with_radius(other.preset.stage2.radius), other.build(2)
        info["stage2"] = {"from": stage2_from.name, "info": other.info}  # its name: no folder of this machine
    save_weights(target, preset, models, recipe=weights.recipe, info=info, dtype=torch.float16)


if __name__ == "__main__":
    ship()
