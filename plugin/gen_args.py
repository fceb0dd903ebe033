"""Write the C header with core.deblur.Atrous's argument string, taken from the option schema
(vsdeblur/config.py), so that the plugin's signature cannot drift from the Python function.

Run by CMake at build time, where torch is not installed: the vsdeblur package is registered
without running its __init__ (which imports the engine), so only config.py and errors.py load.
"""

import sys
import types
from pathlib import Path

package = types.ModuleType("vsdeblur")
package.__path__ = [str(Path(__file__).resolve().parents[1] / "vsdeblur")]
sys.modules["vsdeblur"] = package

from vsdeblur.config import ENGINE, VAPOURSYNTH, vapoursynth_args  # noqa: E402

Path(sys.argv[1]).write_text(f'#define ATROUS_ARGS "{vapoursynth_args(ENGINE, VAPOURSYNTH)}"\n')
