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
    h, w = frames.shape[1:3]
    return resize_to(frames, max(1, round(h * factor)), max(1, round(w * factor)))


def resize_to(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bicubic rescale of T x H x W x 3 (uint8 or float) to T x height x width x 3 float32 in
    [0, 1], antialiased where it shrinks."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    if frames.dtype == np.uint8:
        x = x / 255
    shrinks = height < frames.shape[1] or width < frames.shape[2]
    y = F.interpolate(x, size=(height, width), mode="bicubic", antialias=shrinks, align_corners=False)
    return y.clamp(0, 1).permute(0, 2, 3, 1).numpy()
