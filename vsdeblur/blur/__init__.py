"""Blur synthesis: sharp material blurred the way cameras blur it, so that the sharp answer is
known. `vsdeblur synth`, the quality benchmark (vsdeblur.measure.quality) and training
(vsdeblur.train) all blur with it; it depends on none of them.

- `synth`: camera-shake kernels (one random trajectory per frame), frame averaging, sub-frame
  shifts, soft focus, and the extras real video carries (noise, a lossy codec); `ShakeBlur`
  blurs a clip frame by frame and is shaped like the engine.
- `camera`: a virtual camera moving along one continuous path, each exposure integrated.
"""

from vsdeblur.blur import camera, synth
from vsdeblur.blur.camera import CameraSpec
from vsdeblur.blur.synth import ExtrasSpec, ShakeBlur, ShakeSpec

__all__ = ["CameraSpec", "ExtrasSpec", "ShakeBlur", "ShakeSpec", "camera", "synth"]
