"""Copy trained weights for shipping, stored in float16: half the size of the training export.

The networks still compute in float32 (loading widens every tensor); rounding the weights to
float16 moved the shipped model's scores by less than 0.01 dB (docs/training.md).

Usage: python pipelines/train/ship.py runs/RUN/final.safetensors vsdeblur/weights/default.safetensors
"""

import sys
from pathlib import Path

import torch

from vsdeblur.errors import UsageError
from vsdeblur.weights import read_weights, save_weights


def ship(source: str, target: str) -> None:
    weights = read_weights(source)
    if not Path(target).parent.is_dir():
        raise UsageError(f"cannot write {target}: its folder does not exist")
    models = {stage: weights.build(stage) for stage in weights.stages}
    save_weights(target, weights.preset, models, recipe=weights.recipe, info={**weights.info, "storage": "float16"}, dtype=torch.float16)


def fail(message: str) -> None:
    print(f"ship.py: error: {message}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        fail("expected SOURCE and TARGET weights files; " + __doc__.strip().splitlines()[-1])
    try:
        ship(*sys.argv[1:])
    except UsageError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write {sys.argv[2]}: {exc.strerror or exc}")
