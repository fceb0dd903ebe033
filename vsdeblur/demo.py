"""`make demo`: blur the bundled sample clip with camera shake, deblur it with vsdeblur-stream
and the default model, and show what changed (PSNR/SSIM before and after, and a side-by-side
picture). It runs the three public commands and prints each, so it doubles as a how-to:

    vsdeblur synth SAMPLE blurred.mkv
    vsdeblur-stream blurred.mkv restored.mkv
    vsdeblur eval SAMPLE blurred.mkv restored.mkv --picture side_by_side.png

Without trained default weights it says so and stops: it never passes untrained weights off
as a model.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from vsdeblur.weights import default_weights_path

SAMPLE = Path(__file__).parent / "data" / "bigbuckbunny.mp4"
OUTPUT = Path("runs/demo")


def commands(output: Path) -> list[tuple[list[str], list[str]]]:
    """(the command as a user types it, the same command run with this Python)."""
    blurred, restored = output / "blurred.mkv", output / "restored.mkv"
    steps = [
        (["vsdeblur", "synth"], ["vsdeblur", "synth"], [str(SAMPLE), str(blurred), "--seed", "1", "--overwrite"]),
        (["vsdeblur-stream"], ["vsdeblur.stream"], [str(blurred), str(restored), "--overwrite"]),
        (["vsdeblur", "eval"], ["vsdeblur", "eval"], [str(SAMPLE), str(blurred), str(restored),
                                                       "--picture", str(output / "side_by_side.png"),
                                                       "--json", str(output / "scores.json")]),
    ]
    return [(shown + args, [sys.executable, "-m", *module, *args]) for shown, module, args in steps]


def main() -> int:
    if default_weights_path() is None:
        print("vsdeblur demo: cannot run: no trained default weights are shipped (vsdeblur/weights/default.safetensors)", file=sys.stderr)
        return 1
    OUTPUT.mkdir(parents=True, exist_ok=True)
    for shown, argv in commands(OUTPUT):
        print(f"\n$ {shlex.join(shown)}", flush=True)
        if subprocess.run(argv).returncode != 0:
            print(f"vsdeblur demo: {shown[0]} failed", file=sys.stderr)
            return 1
    print(f"\nOutputs in {OUTPUT}/: blurred.mkv, restored.mkv, side_by_side.png, scores.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
