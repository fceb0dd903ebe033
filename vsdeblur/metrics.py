"""The quality metrics of `vsdeblur eval`, the benchmark and training validation.

PSNR and SSIM with the deblurring papers' conventions (GoPro, REDS):

- both images quantised to 8 bits per channel first (what a viewer sees);
- computed on RGB, not on luma; no border crop;
- PSNR: 10 log10(255^2 / MSE) over all three channels of a frame;
- SSIM: Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
  valid region only, per channel, then averaged over the channels;
- clip scores are means of per-frame scores.

A predicted blur chord against the true one (the motion estimator's, `vsdeblur benchmark`):
its length error in % of the true length, its axis error in degrees.

VMAF, the encoding world's perceptual score (0-100), by libvmaf through PyAV's filter graph
(`VmafMeter`, `clip_vmaf`): model vmaf_v0.6.1, on the luma of the 8-bit RGB frames converted
as a player converts untagged video; a clip's score is the mean of its per-frame scores.
"""

from __future__ import annotations

import gc
import json
import tempfile
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import av.filter
import numpy as np
import torch
import torch.nn.functional as F

from vsdeblur.io.colour import Colour, from_rgb


def to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return ((image.astype(np.float64) / 65535) * 255 + 0.5).astype(np.uint8)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((to_uint8(a).astype(np.float64) - to_uint8(b).astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> tuple[torch.Tensor, torch.Tensor]:
    """The 2-D Gaussian as its two 1-D factors (rows, then columns): the same filter with
    eleven times fewer multiplications than the 11x11 kernel."""
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    g = g.float()
    return g.view(1, 1, 1, size).expand(3, 1, 1, size), g.view(1, 1, size, 1).expand(3, 1, size, 1)


_ROWS, _COLUMNS = _gaussian_window()


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    # float32 (fast kernels) agrees with float64 to about 1e-6 on 8-bit images (tested)
    x = torch.from_numpy(to_uint8(a).astype(np.float32)).permute(2, 0, 1)[None]
    y = torch.from_numpy(to_uint8(b).astype(np.float32)).permute(2, 0, 1)[None]
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def filt(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, _ROWS, groups=3), _COLUMNS, groups=3)

    mx, my = filt(x), filt(y)
    sxx, syy, sxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    ssim_map = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(ssim_map.mean())


# ---- VMAF ------------------------------------------------------------------------------------

VMAF_MODEL = "vmaf_v0.6.1"
# the libvmaf of PyAV 19 (measured) scores identical frames below 100 when under 37 pixels wide
# or 34 high, and crashes the process on 16x16 frames; 48 leaves a margin
VMAF_MIN_SIDE = 48
# VMAF's features (VIF, ADM, motion) read the luma plane only, so chroma subsampling does not
# change the score (4:2:0 and 4:4:4 give the same); 4:4:4 because it takes odd sizes, which
# 4:2:0 does not
_VMAF_FORMAT = "yuv444p"
_VMAF_TIME_BASE = Fraction(1, 25)  # any: the frames are paired by order, not by time


def vmaf_unavailable(width: int, height: int) -> str | None:
    """Why VMAF cannot score frames of this size, or None when it can."""
    if min(width, height) < VMAF_MIN_SIDE:
        return f"VMAF needs frames of at least {VMAF_MIN_SIDE}x{VMAF_MIN_SIDE} pixels, these are {width}x{height}"
    return None


class VmafMeter:
    """The VMAF of a distorted clip against its reference, fed one pair of frames at a time, so
    that clips of any length are scored in bounded memory. A meter scores one clip; use it as
    a context manager (or call `close`) so that an abandoned clip leaves no files behind."""

    def __init__(self) -> None:
        self._folder: tempfile.TemporaryDirectory | None = None
        self._graph: _VmafGraph | None = None
        self._size: tuple[int, int] | None = None
        self._count = 0

    def add(self, distorted: np.ndarray, reference: np.ndarray) -> None:
        """One more frame pair (H x W x 3 RGB, any dtype `to_uint8` takes, both the same size)."""
        height, width = reference.shape[:2]
        if self._size is None:
            reason = vmaf_unavailable(width, height)
            if reason is not None:
                raise ValueError(reason)
            self._folder = tempfile.TemporaryDirectory(prefix="vsdeblur-vmaf-")
            self._graph = _VmafGraph(width, height, self._log)
            self._size = (width, height)
        if distorted.shape[:2] != reference.shape[:2] or (width, height) != self._size:
            raise ValueError(f"VMAF: frame {self._count} is {_size(distorted)} against {_size(reference)}, the clip {self._size[0]}x{self._size[1]}")
        assert self._graph is not None, "add after scores"
        self._graph.push(_yuv(distorted, self._count), _yuv(reference, self._count))
        self._count += 1

    def scores(self) -> list[float]:
        """The per-frame scores, in order; this ends the clip."""
        if self._count == 0:
            raise ValueError("VMAF: no frames were added")
        assert self._graph is not None, "scores asked for twice"
        self._graph.finish()
        self._release_graph()
        try:
            log = json.loads(self._log.read_text())
        finally:
            self.close()
        per_frame = [frame["metrics"]["vmaf"] for frame in log["frames"]]
        if len(per_frame) != self._count:
            raise RuntimeError(f"libvmaf scored {len(per_frame)} of {self._count} frames")
        return per_frame

    def close(self) -> None:
        self._release_graph()
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None

    def __enter__(self) -> VmafMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _log(self) -> Path:
        assert self._folder is not None
        return Path(self._folder.name) / "vmaf.json"

    def _release_graph(self) -> None:
        # libvmaf pools its scores and writes its log when the filter is freed, and PyAV's graph
        # and its filter contexts reference each other: only the cycle collector frees them
        if self._graph is not None:
            self._graph = None
            gc.collect()


def clip_vmaf(distorted: Iterable[np.ndarray], reference: Iterable[np.ndarray]) -> float:
    """The mean VMAF of a clip; frame pairs in order, the same size throughout."""
    with VmafMeter() as meter:
        for d, r in zip(distorted, reference, strict=True):
            meter.add(d, r)
        return float(np.mean(meter.scores()))


class _VmafGraph:
    """buffer (distorted) -> libvmaf "main"; buffer (reference) -> libvmaf "reference"; -> sink.
    The order matters: VMAF is not symmetric."""

    def __init__(self, width: int, height: int, log: Path) -> None:
        self.graph = av.filter.Graph()
        self.distorted, self.reference = (self.graph.add_buffer(width=width, height=height, format=_VMAF_FORMAT, time_base=_VMAF_TIME_BASE)
                                          for _ in range(2))
        vmaf = self.graph.add("libvmaf", model=f"version={VMAF_MODEL}", log_path=str(log), log_fmt="json")
        self.sink = self.graph.add("buffersink")
        self.distorted.link_to(vmaf, 0, 0)
        self.reference.link_to(vmaf, 0, 1)
        vmaf.link_to(self.sink)
        self.graph.configure()

    def push(self, distorted: av.VideoFrame, reference: av.VideoFrame) -> None:
        self.distorted.push(distorted)
        self.reference.push(reference)
        self._drain()

    def finish(self) -> None:
        self.distorted.push(None)
        self.reference.push(None)
        self._drain()

    def _drain(self) -> None:
        """Take the passed-through frames out, so that they do not pile up in the sink."""
        while True:
            try:
                self.sink.pull()
            except (av.BlockingIOError, av.EOFError):
                return


def _yuv(image: np.ndarray, index: int) -> av.VideoFrame:
    # the pipeline's conversion with no tags: BT.709 for HD, BT.601 below, limited range, as
    # VMAF's training videos were coded
    frame = from_rgb(to_uint8(image), Colour(), _VMAF_FORMAT)
    frame.pts, frame.time_base = index, _VMAF_TIME_BASE
    return frame


def _size(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]}"


# ---- blur chords: a predicted blur against the true one ---------------------------------------


def chord_length_error(predicted: np.ndarray, true: np.ndarray) -> np.ndarray:
    """How far each predicted chord's length (N x 2 chords, pixels) is from the true one's, in %
    of the true length (N,)."""
    true_length = np.linalg.norm(true, axis=-1)
    return 100 * np.abs(np.linalg.norm(predicted, axis=-1) - true_length) / true_length


def chord_axis_error(predicted: np.ndarray, true: np.ndarray) -> np.ndarray:
    """The angle between each predicted chord's axis and the true one's (N x 2 chords), in
    degrees, 0..90: an axis is a direction modulo 180 degrees, as a straight blur shows it."""
    # from the cross and dot products: exact near 0 and 90 degrees, where arccos of a cosine is not
    cross = predicted[..., 0] * true[..., 1] - predicted[..., 1] * true[..., 0]
    return np.degrees(np.arctan2(np.abs(cross), np.abs((predicted * true).sum(axis=-1))))
