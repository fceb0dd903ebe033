#!/bin/bash
# Train small-stage1-gpu.toml within a wall-clock budget. The learning-rate schedule needs the
# step count up front, so a short probe run first measures this machine's steps/s (GPU step and
# batch synthesis together), then the real run is sized to fit what is left.
# usage: pipelines/train/gpu-run.sh OUTPUT_DIR SECONDS
set -euo pipefail
output=$1
budget=$2
start=$(date +%s)
here=$(cd "$(dirname "$0")" && pwd)
recipe="$here/small-stage1-gpu.toml"
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT

python3 -m vsdeblur train --config "$recipe" --steps 400 --output "$probe" --no-resume 2>&1 | tee "$probe/stderr"
steps=$(python3 - "$probe/stderr" "$start" "$budget" <<'PY'
import re, sys, time
# "step N/400 ... R steps/s": R is counted from the start, so the rate between the last two
# lines leaves out the workers' start-up
lines = [tuple(map(float, m.groups())) for m in re.finditer(r"step (\d+)/\d+ .*?([\d.]+) steps/s", open(sys.argv[1]).read())]
(n1, r1), (n2, r2) = lines[-2], lines[-1]
rate = (n2 - n1) / (n2 / r2 - n1 / r1)
left = float(sys.argv[3]) - (time.time() - float(sys.argv[2])) - 30  # start-up and the last validation
print(f"probe: {rate:.2f} steps/s, {left:.0f} s left", file=sys.stderr)
print(max(500, int(rate * left * 0.92)))  # validations take their share
PY
)
decay=$((steps * 2 / 5))
echo "probe done: training $steps steps (decay from $decay)"
sed -e "s/^steps = [0-9]*/steps = $steps/" -e "s/^decay_start = [0-9]*/decay_start = $decay/" "$recipe" >"$here/.gpu-run.toml"
python3 -m vsdeblur train --config "$here/.gpu-run.toml" --output "$output" 2>&1
