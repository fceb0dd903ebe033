"""Still images: reading any picture FFmpeg decodes, and rescaling frames. Training's sources
and validation, and the quality benchmark's photographs, are read and scaled with these."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from vsdeblur.errors import UsageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def read_image(path: Path) -> np.ndarray:
    """Any image FFmpeg can decode, as uint8 H x W x 3 RGB."""
    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
            return frame.to_ndarray(format="rgb24")
    except (av.FFmpegError, StopIteration) as exc:
        raise UsageError(f"cannot read image {path}: {exc}") from None


def resize(frames: np.ndarray, factor: float) -> np.ndarray:
    """Antialiased bicubic rescale of T x H x W x 3 (uint8 or float) to float32."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    if frames.dtype == np.uint8:
        x = x / 255
    h, w = frames.shape[1:3]
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    y = F.interpolate(x, size=size, mode="bicubic", antialias=factor < 1, align_corners=False)
    return y.clamp(0, 1).permute(0, 2, 3, 1).numpy()
