"""The deconvolution prior: from a blur vector per tile (the exposure chord: what the camera
moved while the shutter was open), the blur kernel and a regularised deconvolution in linear
light. Pure torch, on whatever device the frame is on; it depends only on vsdeblur.blur.

- `kernel`: the point-spread function of a straight chord or a sampled exposure path, and the
  spread of kernels a chord allows (`Uncertainty`);
- `deconvolve`: FFT deconvolution with a gradient prior whose weight follows the noise and the
  kernel, the frame's unknown surroundings left out of the fit, over overlapping tiles blended
  without seams, each with a confidence. Its function of the same name (any kernels per tile)
  is reached through the module, which the package does not shadow.
"""

from vsdeblur.prior.deconvolve import PriorSettings, deblur, estimate_noise, luminance
from vsdeblur.prior.kernel import EXACT, Uncertainty, kernel_moments, line_kernel, line_kernels, path_kernels, pose_offsets

__all__ = ["EXACT", "PriorSettings", "Uncertainty", "deblur", "estimate_noise", "kernel_moments", "line_kernel", "luminance",
           "line_kernels", "path_kernels", "pose_offsets"]
