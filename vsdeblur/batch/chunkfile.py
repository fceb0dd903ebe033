"""A chunk's restored frames on disk, between the worker that makes them and the join.

FFV1 in Matroska with RGB (bgr0, or gbrp16le for uint16 frames): lossless, so the
join sees exactly the frames the engine produced and the final encode equals a single-pass
one; no colour conversion happens because RGB goes in and RGB comes out. The presentation
times live in a JSON sidecar, not in the container, because Matroska rounds them to its
millisecond time base. Both files are written under a temporary name and renamed, sidecar
first: a chunk file that exists is complete, and its sidecar exists too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

PIX_FMTS = {np.dtype(np.uint8): ("bgr0", "rgb24"), np.dtype(np.uint16): ("gbrp16le", "rgb48le")}


def _replace(tmp: Path, path: Path) -> None:
    with tmp.open("rb") as f:
        os.fsync(f.fileno())  # the rename must not become visible before the data
    os.replace(tmp, path)


def write_chunk(path: Path, sidecar: Path, frames: Iterable[tuple[np.ndarray, int]]) -> int:
    """Write (rgb, pts) pairs; returns the frame count. `path` appears only when complete, and
    a failure (a full disk, a bad frame) leaves no partial file behind."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
    side_tmp = sidecar.with_name(f"{sidecar.name}.{os.getpid()}.part")
    try:
        count = _write(tmp, side_tmp, frames)
        _replace(side_tmp, sidecar)
        _replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        side_tmp.unlink(missing_ok=True)
        raise
    return count


def _write(tmp: Path, side_tmp: Path, frames: Iterable[tuple[np.ndarray, int]]) -> int:
    pts: list[int] = []
    container = av.open(str(tmp), "w", format="matroska")
    try:
        stream = None
        for rgb, frame_pts in frames:
            if stream is None:
                pix_fmt, rgb_fmt = PIX_FMTS[rgb.dtype]
                stream = container.add_stream("ffv1", rate=Fraction(25))
                stream.width, stream.height, stream.pix_fmt = rgb.shape[1], rgb.shape[0], pix_fmt
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format=rgb_fmt).reformat(format=pix_fmt)
            frame.pts = len(pts)
            container.mux(stream.encode(frame))
            pts.append(int(frame_pts))
        if stream is not None:
            container.mux(stream.encode(None))
    finally:
        container.close()
    if stream is None:  # no frames (the source was shorter than its packet count): empty file
        tmp.write_bytes(b"")
    side_tmp.write_text(json.dumps({"frames": len(pts), "pts": pts}))
    return len(pts)


def read_pts(sidecar: Path) -> list[int]:
    return json.loads(sidecar.read_text())["pts"]


def read_chunk(path: Path, dtype: np.dtype) -> Iterator[np.ndarray]:
    """The frames of a chunk file, as H x W x 3 arrays of `dtype`."""
    rgb_fmt = PIX_FMTS[np.dtype(dtype)][1]
    if path.stat().st_size == 0:
        return
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format=rgb_fmt)
