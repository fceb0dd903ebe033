"""The deconvolution prior: from a blur vector per tile (the exposure chord: what the camera
moved while the shutter was open), the blur kernel and a regularised deconvolution in linear
light. Pure torch, on whatever device the frame is on; it depends only on vsdeblur.blur.

- `kernel`: the point-spread function of a straight chord or a sampled exposure path, and the
  spread of kernels a chord allows.
"""

from vsdeblur.prior.kernel import line_kernel, line_kernels, path_kernels, pose_offsets

__all__ = ["line_kernel", "line_kernels", "path_kernels", "pose_offsets"]
