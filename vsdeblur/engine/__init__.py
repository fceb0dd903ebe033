"""The engine: one place for device, precision, padding, tiling, ensemble, the temporal window
and scene cuts. Every front-end (stream CLI, VapourSynth, batch, training evaluation) goes
through `Deblurrer`; docs/architecture.md draws its parts.

A frame's way through it:

    numpy frame --transfer--> padded tensor in [-1, 1] on the device
      --networks--> stage 1 (tiled, ensembled) --> stage-2 encoder     (once per frame)
      --schedule--> [window of 2r+1 states, cut at scenes] --> stage-2 aggregation
      --transfer--> cropped, clamped numpy frame of the input's dtype

`window` (which stage, which frames, where scenes cut) needs only numpy; importing this
package loads torch only when `Deblurrer` or `EngineStats` is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vsdeblur.engine.deblurrer import Deblurrer
    from vsdeblur.engine.networks import EngineStats

__all__ = ["Deblurrer", "EngineStats"]


def __getattr__(name: str):
    if name == "Deblurrer":
        from vsdeblur.engine.deblurrer import Deblurrer

        return Deblurrer
    if name == "EngineStats":
        from vsdeblur.engine.networks import EngineStats

        return EngineStats
    raise AttributeError(f"module 'vsdeblur.engine' has no attribute {name!r}")
