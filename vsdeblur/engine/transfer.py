"""Frames between the host and the device: numpy H x W x 3 (or three planes) in, a padded
1 x 3 x H' x W' tensor in [-1, 1] on the device; the network's output back as a frame of the
input's shape and dtype.

On CUDA both directions go through pinned memory with non-blocking copies, and the copy back
is marked by an event recorded on the output's own device and stream, so the next frame's
compute overlaps it and a reader never sees a half-copied frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from vsdeblur.engine.tiling import MIN_SIDE, pad_to_multiple
from vsdeblur.errors import UsageError

# numpy dtype -> the value of full white
FULL_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0, np.dtype(np.float16): 1.0, np.dtype(np.float32): 1.0}
TORCH_DTYPES = {np.dtype(np.uint8): torch.uint8, np.dtype(np.uint16): torch.uint16, np.dtype(np.float16): torch.float16, np.dtype(np.float32): torch.float32}
NUMPY_DTYPES = {t: n for n, t in TORCH_DTYPES.items()}

NONFINITE_OUTPUT = (
    "the network's output holds NaN or infinite values: the weights do not work on this input "
    "(damaged, or a diverged training run), or the precision overflows (try precision fp32)"
)


def check_frame(frame: object, index: int | None = None) -> np.ndarray:
    """Validate an H x W x 3 RGB frame; raise UsageError naming the problem."""
    where = f"frame {index}" if index is not None else "frame"
    if not isinstance(frame, np.ndarray):
        raise UsageError(f"{where} must be a numpy array, not {type(frame).__name__}")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise UsageError(f"{where} must be H x W x 3 (RGB); got shape {frame.shape}")
    if frame.dtype not in FULL_SCALE:
        raise UsageError(f"{where} has dtype {frame.dtype}; use uint8, uint16, float16 or float32")
    if frame.shape[0] < MIN_SIDE or frame.shape[1] < MIN_SIDE:
        raise UsageError(f"{where} is {frame.shape[1]}x{frame.shape[0]}; vsdeblur needs at least {MIN_SIDE}x{MIN_SIDE} pixels")
    if frame.dtype.kind == "f" and not np.isfinite(frame).all():
        raise UsageError(f"{where} contains NaN or infinite values")
    return frame


def check_planes(planes: Sequence[np.ndarray]) -> Sequence[np.ndarray]:
    """Validate the three H x W planes of an RGB frame, as `check_frame` does a frame."""
    if len(planes) != 3 or any(p.ndim != 2 or p.shape != planes[0].shape or p.dtype != planes[0].dtype for p in planes):
        raise UsageError("a planar frame must be three H x W planes of one shape and dtype")
    for plane in planes:  # a broadcast view: checked as a frame, with no copy
        check_frame(np.broadcast_to(plane[..., None], (*plane.shape, 3)))
    return planes


class Transfer:
    """Moves frames to one device in one memory format, padded to the model's multiple."""

    def __init__(self, device: torch.device, memory_format: torch.memory_format, multiple: int) -> None:
        self.device, self.memory_format, self.multiple = device, memory_format, multiple
        self._pinned = device.type == "cuda"

    def upload(self, frame: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
        """An H x W x 3 frame, or its three H x W planes (VapourSynth's layout, copied straight
        into a C x H x W tensor with no interleaved copy between) -> padded 1 x 3 x H' x W'
        fp32 tensor in [-1, 1] on the device."""
        if isinstance(frame, np.ndarray):
            host = torch.from_numpy(np.ascontiguousarray(frame))
            host = host.pin_memory() if self._pinned else host
            x, dtype = host.to(self.device, non_blocking=True).permute(2, 0, 1), frame.dtype
        else:
            dtype = frame[0].dtype
            host = torch.empty((3, *frame[0].shape), dtype=TORCH_DTYPES[dtype], pin_memory=self._pinned)
            for p in range(3):
                np.copyto(host[p].numpy(), frame[p])
            x = host.to(self.device, non_blocking=True)
        x = x[None].float()
        x = x * (2.0 / FULL_SCALE[dtype]) - 1.0
        return pad_to_multiple(x.contiguous(memory_format=self.memory_format), self.multiple)

    def upload_padded(self, planes: Sequence[np.ndarray]) -> torch.Tensor:
        """Three H' x W' float planes already in [-1, 1] and padded -> 1 x 3 x H' x W' fp32.
        One copy per plane straight into a staging tensor: planes may be strided views of
        someone else's memory (VapourSynth frames)."""
        host = torch.empty((3, *planes[0].shape), dtype=torch.float32, pin_memory=self._pinned)
        for p in range(3):
            np.copyto(host[p].numpy(), planes[p])
        x = host.to(self.device, non_blocking=True)[None]
        return x.contiguous(memory_format=self.memory_format)

    def download(self, y: torch.Tensor, shape: tuple[int, ...], dtype: np.dtype, planar: bool = False) -> HostFrame:
        """Padded output tensor -> cropped to `shape` (H x W x ...), in `dtype`'s range; as
        H x W x 3, or as 3 x H x W when `planar` (VapourSynth's layout)."""
        h, w = shape[:2]
        y = y[0, :, :h, :w]
        finite = torch.isfinite(y).all()  # NaN would otherwise be cast to black
        y = (y.float().clamp(-1, 1) + 1.0) * 0.5
        scale = FULL_SCALE[np.dtype(dtype)]
        if scale != 1.0:
            y = (y * scale).round_()
        y = y.to(TORCH_DTYPES[np.dtype(dtype)])
        return HostFrame(y if planar else y.permute(1, 2, 0), finite)


class HostFrame:
    """A tensor on its way to the host. On CUDA the copy runs asynchronously into pinned
    memory; `result()` waits for it. The event is recorded on the stream that queued the copy
    on the tensor's own device (not the current device's), and it blocks rather than spins,
    so threads waiting on it (VapourSynth's) leave their cores to others."""

    def __init__(self, tensor: torch.Tensor, finite: torch.Tensor | None = None) -> None:
        self.event = None
        if tensor.device.type == "cuda":
            host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            host.copy_(tensor.contiguous(), non_blocking=True)
            if finite is not None:  # travels with the frame: checking it on the device would wait
                finite = finite.to("cpu", non_blocking=True)
            self.event = torch.cuda.Event(blocking=True)
            self.event.record(torch.cuda.current_stream(tensor.device))
            tensor = host
        self.tensor, self.finite = tensor, finite

    def result(self) -> np.ndarray:
        """The frame as a numpy array that owns its memory: a caller may keep every frame of
        a clip, which must pin neither page-locked memory nor a tensor's storage."""
        if self.event is not None:
            self.event.synchronize()
        if self.finite is not None and not self.finite.item():
            raise UsageError(NONFINITE_OUTPUT)
        out = np.empty(self.tensor.shape, dtype=NUMPY_DTYPES[self.tensor.dtype])
        torch.from_numpy(out).copy_(self.tensor)
        return out
