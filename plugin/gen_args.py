"""Write the C header with core.deblur.Atrous's argument string, taken from the option schema
(vsdeblur/config.py), so that the plugin's signature cannot drift from the Python function.

Run by CMake at build time, where vsdeblur is not installed (nor torch): the package is taken
from this checkout, and importing its schema needs only click.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vsdeblur.config import ENGINE, VAPOURSYNTH, vapoursynth_args  # noqa: E402

Path(sys.argv[1]).write_text(f'#define ATROUS_ARGS "{vapoursynth_args(ENGINE, VAPOURSYNTH)}"\n')
