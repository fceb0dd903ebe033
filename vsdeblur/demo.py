"""`make demo`: blur the bundled sample clip, deblur it with the default model through
vsdeblur-stream, and show what changed (PSNR before/after and a side-by-side picture).

Until the pieces exist it says which one is missing and stops: it never passes untrained
weights off as a model.
"""

from __future__ import annotations

import importlib.util
import sys

from vsdeblur.weights import default_weights_path


def missing_pieces() -> list[str]:
    missing = []
    if importlib.util.find_spec("vsdeblur.stream") is None:
        missing.append("the streaming command vsdeblur-stream (vsdeblur/stream.py) is not built yet")
    if default_weights_path() is None:
        missing.append("no trained default weights are shipped yet (vsdeblur/weights/default.safetensors)")
    return missing


def main() -> int:
    missing = missing_pieces()
    if missing:
        for line in missing:
            print(f"vsdeblur demo: cannot run: {line}", file=sys.stderr)
        return 1
    raise NotImplementedError  # completed with the stream CLI and the trained weights


if __name__ == "__main__":
    sys.exit(main())
