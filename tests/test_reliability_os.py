"""What the operating system and the files around a run may do to it (issue 31): cached ONNX
graphs are checked before they are believed; opening an input honours signals and a timeout;
a full disk or a read-only folder is one line naming the path; the VapourSynth filter's
smallest frame is checked when it is called. Tiny clips, the tiny model, the CPU."""

from __future__ import annotations

import pytest

# ---- 12(f): the VapourSynth filter's smallest frame ------------------------------------------


@pytest.mark.parametrize("width, height", [(16, 64), (64, 31)])
def test_a_frame_below_32x32_is_a_vapoursynth_error_when_the_filter_is_called(tiny_weights, width, height):
    vs = pytest.importorskip("vapoursynth")
    from vsdeblur.vs import atrous

    clip = vs.core.std.BlankClip(width=width, height=height, format=vs.RGBS, length=3)
    with pytest.raises(vs.Error, match=rf"^deblur\.Atrous: the clip is {width}x{height}; vsdeblur needs at least 32x32 pixels$"):
        atrous(clip, weights=str(tiny_weights), device="cpu")
