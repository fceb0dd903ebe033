"""What the C shim (plugin/deblur.c) imports on the first core.deblur.Atrous call of a core.

`register()` hands the shim the Python implementation as a VapourSynth function; the shim
stores it for that core and forwards every Atrous call's argument map to it unchanged.
"""

from __future__ import annotations

import vapoursynth as vs

from vsdeblur.vs import atrous


def register() -> None:
    vs.core.deblur.RegisterImpl(impl=_atrous_entry)


def _atrous_entry(**arguments) -> vs.VideoNode:
    # VapourSynth hands `data` arguments over as bytes when they were set from C
    arguments = {k: v.decode() if isinstance(v, bytes) else v for k, v in arguments.items()}
    return atrous(**arguments)
