"""Decode a video source into RGB numpy frames with their presentation times.

    with Reader("in.mkv") as reader:
        reader.info                      # VideoInfo: size, bit depth, time base, colour, ...
        for frame in reader.frames():    # Frame(index, pts, rgb)
            ...

`Reader(source)` accepts a path or "-" (standard input: any format FFmpeg can probe from a
pipe, e.g. NUT, Matroska, Y4M). It decodes the first video stream with frame threading and
converts every frame to packed RGB with the source's matrix and range (`colour.to_rgb`):
uint8 for 8-bit sources, uint16 for deeper ones. Timestamps are the decoder's, never derived
from a frame rate, so variable-frame-rate sources keep their exact times.

`frames(start, stop)` yields frames with index in [start, stop) (a chunk of the clip);
`items()` yields the same frames interleaved, in demux order, with the packets of every
other stream (`packet.stream` is the source stream), for front-ends that copy those streams.
A truncated or corrupt stream raises UsageError naming the frame and time where it broke.
The first frame is decoded when the reader opens, so a file without decodable video fails
at once and `info` holds what only a decoded frame tells (colour, rotation).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from vsdeblur.errors import UsageError
from vsdeblur.io.colour import Colour, rgb_format, to_rgb

__all__ = ["Frame", "Reader", "VideoInfo", "open_input"]


@dataclass(frozen=True)
class VideoInfo:
    """What a writer needs to reproduce the source's video stream."""

    width: int
    height: int
    pix_fmt: str  # the decoder's pixel format, e.g. yuv420p10le
    bit_depth: int
    rgb_format: str  # rgb24 (uint8 frames) or rgb48le (uint16 frames)
    time_base: Fraction
    frame_rate: Fraction | None  # the container's average rate; a hint only, never used for times
    frames: int | None  # frame count the container declares (None when unknown)
    duration: float | None  # seconds, when known
    colour: Colour
    rotation: int  # display rotation, degrees counter-clockwise
    codec: str


@dataclass
class Frame:
    index: int  # position in the clip, counted from its first frame
    pts: int  # presentation time in units of VideoInfo.time_base
    rgb: np.ndarray  # H x W x 3, uint8 or uint16

    def time(self, time_base: Fraction) -> float:
        return float(self.pts * time_base)


def open_input(source: str | Path) -> av.container.InputContainer:
    """Open a path or "-" (standard input) for demuxing, with one clear error line on failure."""
    if str(source) == "-":
        target: Any = sys.stdin.buffer
        name = "standard input"
    else:
        path = Path(source)
        if not path.exists():
            raise UsageError(f"input not found: {path}")
        if path.is_dir():
            raise UsageError(f"input is a directory, not a video file: {path}")
        target, name = str(path), str(path)
    try:
        return av.open(target, "r")
    except av.error.InvalidDataError:
        raise UsageError(f"{name} is not a video or audio file FFmpeg can read") from None
    except av.error.FFmpegError as exc:
        raise UsageError(f"cannot open {name}: {exc}") from None


class Reader:
    """Decode the first video stream of `source` (a path or "-") to RGB frames."""

    def __init__(self, source: str | Path, threads: bool = True) -> None:
        self.name = "standard input" if str(source) == "-" else str(source)
        self.container = open_input(source)
        try:
            if not self.container.streams.video:
                raise UsageError(f"{self.name} has no video stream")
            self.stream = self.container.streams.video[0]
            # frame threading decodes several frames at once; times come from pts, not
            # from frame.index (which frame threading gets wrong at the tail)
            self.stream.thread_type = "AUTO" if threads else "SLICE"
            self._demux = self._demux_all()
            self._pending: list[av.Packet] = []  # other streams' packets demuxed before frame 0
            self._first = self._next_frame()
            if self._first is None:
                raise UsageError(f"{self.name}: the video stream holds no decodable frame")
            self.info = self._describe(self._first)
        except BaseException:
            self.container.close()
            raise
        self._started = False

    def _describe(self, first: av.VideoFrame) -> VideoInfo:
        stream = self.stream
        fmt = av.VideoFormat(stream.codec_context.pix_fmt or first.format.name)
        depth = max(c.bits for c in fmt.components)
        rate = stream.average_rate
        duration = None
        if stream.duration is not None and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif self.container.duration is not None:
            duration = self.container.duration / av.time_base
        return VideoInfo(
            width=first.width,
            height=first.height,
            pix_fmt=fmt.name,
            bit_depth=depth,
            rgb_format=rgb_format(depth),
            time_base=Fraction(stream.time_base.numerator, stream.time_base.denominator),
            frame_rate=Fraction(rate.numerator, rate.denominator) if rate else None,
            frames=stream.frames or None,
            duration=duration,
            colour=Colour.from_frame(first),
            rotation=int(first.rotation or 0),
            codec=stream.codec_context.name,
        )

    # ---- decoding --------------------------------------------------------------------------

    def _demux_all(self) -> Iterator[av.VideoFrame | av.Packet]:
        """Video frames and other streams' packets, in demux order; the decoder is drained at EOF."""
        decoded = 0
        position = 0.0
        try:
            for packet in self.container.demux():
                if packet.stream.type != "video" or packet.stream is not self.stream:
                    if packet.size:  # empty packets only flush demuxers; never copy them
                        yield packet
                    continue
                if packet.pts is not None and packet.time_base:
                    position = float(packet.pts * packet.time_base)
                for frame in packet.decode():
                    decoded += 1
                    yield frame
        except av.error.FFmpegError as exc:
            raise UsageError(
                f"{self.name}: the video stream is corrupt or truncated after frame {decoded} "
                f"(near {position:.3f} s): {exc}"
            ) from None

    def _next_frame(self) -> av.VideoFrame | None:
        for item in self._demux:
            if isinstance(item, av.VideoFrame):
                return item
            self._pending.append(item)
        return None

    def items(self, start: int = 0, stop: int | None = None) -> Iterator[Frame | av.Packet]:
        """Frames with index in [start, stop) and, interleaved in demux order, every packet of the
        other streams (all of them, whatever the range). Can be iterated once."""
        if self._started:
            raise RuntimeError("a Reader can be iterated once; open another for a second pass")
        self._started = True
        yield from self._pending
        self._pending = []
        info = self.info
        index = 0
        first, self._first = self._first, None
        for item in itertools.chain([first], self._demux):
            if not isinstance(item, av.VideoFrame):
                yield item
                continue
            if stop is not None and index >= stop:
                index += 1
                continue
            if index >= start:
                if item.pts is None:
                    raise UsageError(f"{self.name}: frame {index} has no timestamp; remux the file (e.g. to MKV) first")
                if (item.width, item.height) != (info.width, info.height):
                    raise UsageError(
                        f"{self.name}: frame {index} is {item.width}x{item.height} but the stream started "
                        f"at {info.width}x{info.height}; size changes are not supported"
                    )
                yield Frame(index, item.pts, to_rgb(item, info.colour, info.rgb_format))
            index += 1

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[Frame]:
        """Frames with index in [start, stop), in presentation order."""
        for item in self.items(start, stop):
            if isinstance(item, Frame):
                yield item
                if stop is not None and item.index + 1 >= stop:
                    return

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
