"""Copy trained weights for shipping, stored in float16: half the size of the training export.

The networks still compute in float32 (loading widens every tensor); rounding the weights to
float16 moved the shipped model's scores by less than 0.01 dB (docs/training.md).

Usage: python pipelines/train/ship.py runs/RUN/final.safetensors vsdeblur/weights/default.safetensors
"""

from pathlib import Path

import click
import torch

from vsdeblur.errors import Command, UsageError
from vsdeblur.weights import read_weights, save_weights


@click.command(cls=Command, help=__doc__.split("\n\n")[0])
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("target", type=click.Path(path_type=Path, dir_okay=False))
def ship(source: Path, target: Path) -> None:
    weights = read_weights(source)
    if not target.parent.is_dir():
        raise UsageError(f"cannot write {target}: its folder does not exist")
    models = {stage: weights.build(stage) for stage in weights.stages}
    save_weights(target, weights.preset, models, recipe=weights.recipe, info={**weights.info, "storage": "float16"}, dtype=torch.float16)


if __name__ == "__main__":
    ship()
