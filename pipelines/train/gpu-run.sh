#!/bin/bash
# Train a recipe within a wall-clock budget, on a machine lent for a fixed time (a GPU): the
# learning-rate schedule needs the step count up front, so size-run.py first times this
# machine's blur synthesis, which sets the pace, and writes the recipe sized to what is left.
# usage: pipelines/train/gpu-run.sh RECIPE OUTPUT_DIR SECONDS [WORKERS]
set -euo pipefail
recipe=$1 output=$2 budget=$3 workers=${4:-}
here=$(cd "$(dirname "$0")" && pwd)
# 12 s of timing, then the workers' start-up and the last validation
python3 "$here/size-run.py" "$recipe" $((budget - 45)) "$here/.gpu-run.toml" --measure 12 ${workers:+--workers $workers}
python3 -m vsdeblur train --config "$here/.gpu-run.toml" --output "$output" 2>&1
