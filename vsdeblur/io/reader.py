"""Decode a video source into RGB numpy frames with their presentation times.

    with Reader("in.mkv") as reader:
        reader.info                      # VideoInfo: size, bit depth, time base, colour, ...
        for frame in reader.frames():    # Frame(index, pts, rgb)
            ...

`Reader(source)` accepts a path, a URL or "-" (standard input: any format FFmpeg can probe
from a pipe, e.g. NUT, Matroska, Y4M); `vsdeblur.io.paths` says which is which. A URL that
sends nothing for `timeout` seconds (`network_timeout` of vsdeblur.config.INPUT), while it is
opened or later, is a UsageError saying so. Opening (up to the first decoded frame) runs in a
helper thread while the calling thread waits: called from the main thread, a signal (Ctrl-C,
SIGTERM through errors.Command) ends the wait at once, even while FFmpeg waits for a server
or a pipe that says nothing, and the abandoned open is closed whenever it ends. It decodes
the first video stream with frame threading and converts every frame to packed RGB with the
source's matrix and range (`colour.to_rgb`): uint8 for 8-bit sources, uint16 for deeper ones.
An alpha channel is not part of those frames, and interlaced frames are converted whole, as
progressive ones; `info` says both (`alpha`, `field_order`) so that a writer can note them,
also VP8/VP9 alpha in WebM, which FFmpeg's own decoders do not read (`side_alpha`).
`chapter_tracks` names the streams that only hold the chapters (MP4's chapter text track),
which a writer copies as chapters rather than as a stream.
Timestamps are the decoder's, never derived from a frame rate, so variable-frame-rate sources
keep their exact times.

`frames(start, stop)` yields frames with index in [start, stop) (a chunk of the clip); from
a file, a later start seeks to the keyframe before it (exact: indices and pixels equal a
decode from the start). `timestamps()` lists every frame's pts from a packet-only pass, for
planning chunks. `items(start, stop)` yields the same frames interleaved, in demux order, with the packets of every
other stream (`packet.stream` is the source stream), for front-ends that copy those streams.
A truncated or corrupt stream raises UsageError naming the frame and time where it broke.
The first frame is decoded when the reader opens, so a file without decodable video fails
at once and `info` holds what only a decoded frame tells (colour, rotation).
"""

from __future__ import annotations

import bisect
import errno
import itertools
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from vsdeblur.config import INPUT
from vsdeblur.errors import UsageError
from vsdeblur.io.colour import Colour, HdrMetadata, rgb_format, to_rgb
from vsdeblur.io.lossless import is_lossless
from vsdeblur.io.paths import PIPE, ffmpeg_name, is_url

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
    duration: float | None  # where the video ends, in seconds, as the file records it (None: unknown)
    colour: Colour
    rotation: int  # display rotation, degrees counter-clockwise
    codec: str
    hdr: HdrMetadata | None = None  # HDR10 static metadata of the first frame
    lossless: bool = False  # coded losslessly (FFV1, PNG, lossless H.264, ...): vsdeblur.io.lossless
    # "tt", "bb", "tb" or "bt" (FFmpeg's field orders, as ffprobe names them) for an interlaced
    # stream, "interlaced" when only its frames say so, None for progressive
    field_order: str | None = None
    # an alpha channel stored beside the picture, which the decoder does not read: VP8/VP9 in
    # Matroska/WebM (BlockAdditions, the track's ALPHA_MODE=1) decoded by FFmpeg's own decoders
    side_alpha: bool = False

    @property
    def alpha(self) -> bool:
        """Whether the source has an alpha channel (which the RGB frames leave out)."""
        return self.side_alpha or _has_alpha(av.VideoFormat(self.pix_fmt))


# AVFieldOrder: 0 unknown, 1 progressive, then the interlaced orders (coded first, shown first)
FIELD_ORDERS = {2: "tt", 3: "bb", 4: "tb", 5: "bt"}
AVDISCARD_ALL = 48  # AVDiscard: how the MOV demuxer marks the chapter text tracks it has read
MOV_DEMUXER = "mov"  # FFmpeg's one demuxer for MOV, MP4, M4A, 3GP, 3G2 and MJ2
NETWORK_TIMEOUT = INPUT["network_timeout"].default  # seconds
# protocols whose own `timeout` option is the socket I/O timeout in microseconds, as FFmpeg's
# generic rw_timeout is (RTMP's `timeout` is a listen timeout in seconds: not given there)
SOCKET_TIMEOUT = ("http", "https", "tcp", "tls", "rtsp", "rtsps")
STALLED = "allow longer with --network-timeout (0: wait for ever)"


@dataclass
class Frame:
    index: int  # position in the clip, counted from its first frame
    pts: int  # presentation time in units of VideoInfo.time_base
    rgb: np.ndarray  # H x W x 3, uint8 or uint16

    def time(self, time_base: Fraction) -> float:
        return float(self.pts * time_base)


def _has_alpha(fmt: av.VideoFormat) -> bool:
    return any(c.is_alpha for c in fmt.components)


def _stalled(exc: av.error.FFmpegError, started: float, timeout: float) -> bool:
    """Whether a network read failed because its peer sent nothing for `timeout` seconds:
    PyAV's deadline (FFmpeg's "immediate exit") or the protocol's own timeout."""
    timed_out = isinstance(exc, av.error.ExitError) or exc.errno in (errno.ETIMEDOUT, errno.EIO)
    return timed_out and time.monotonic() - started >= timeout * 0.9


def network_options(url: str, timeout: float) -> dict[str, Any]:
    """av.open's arguments that bound each wait of a URL by `timeout` seconds (0: none): PyAV's
    deadline, checked while FFmpeg connects, reads the header and each packet, and FFmpeg's own
    socket timeouts, in microseconds."""
    if not timeout:
        return {}
    micro = str(round(timeout * 1_000_000))
    options = {"rw_timeout": micro}
    if url.partition(":")[0].lower() in SOCKET_TIMEOUT:
        options["timeout"] = micro
    return {"timeout": (timeout, timeout), "container_options": options}


def _stdin() -> Any:
    """Standard input as FFmpeg reads it: its file descriptor, unbuffered, so that a thread
    left waiting in it (see `_interruptible`) holds no lock that the interpreter's shutdown
    takes (sys.stdin.buffer's would end the process in a fatal error); sys.stdin.buffer
    itself where standard input is no file descriptor (replaced in Python)."""
    try:
        return open(sys.stdin.fileno(), "rb", buffering=0, closefd=False)
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError and a ValueError
        return sys.stdin.buffer


def open_input(source: str | Path, timeout: float = NETWORK_TIMEOUT) -> av.container.InputContainer:
    """Open a path, a URL or "-" (standard input) for demuxing, with one clear error line on
    failure. Names follow `vsdeblur.io.paths`. A URL that sends nothing for `timeout` seconds
    (0: wait for ever) fails, saying so."""
    network: dict[str, Any] = {}
    if str(source) == PIPE:
        target: Any = _stdin()
        name = "standard input"
    elif is_url(source):
        target = name = str(source)
        network = network_options(target, timeout)
    else:
        path = Path(source)
        if not path.exists():
            raise UsageError(f"input not found: {path}")
        if path.is_dir():
            raise UsageError(f"input is a directory, not a video file: {path}")
        target, name = ffmpeg_name(path), str(path)
    started = time.monotonic()
    try:
        return av.open(target, "r", **network)
    except av.error.FFmpegError as exc:
        if network and _stalled(exc, started, timeout):
            raise UsageError(f"{name}: no answer within {timeout:g} s; check the address, or {STALLED}") from None
        if not isinstance(exc, av.error.InvalidDataError):
            raise UsageError(f"cannot open {name}: {exc}") from None
        raise UsageError(f"{name} is not a video file FFmpeg can read (or it is truncated or corrupt)") from None


def _interruptible(work: Callable[[], None], cleanup: Callable[[], None]) -> None:
    """Run `work` in a helper thread while the main thread waits for it, so that a signal's
    handler runs at once, even while FFmpeg blocks inside a call of `work` that holds no Python
    frame of the main thread (a server or a pipe that sends nothing). Interrupted, the wait
    raises and `work` is abandoned: it ends on its own (at a timeout, or with the process), and
    `cleanup` then undoes what it made. Off the main thread, where no signal handler runs,
    `work` runs in place."""
    if threading.current_thread() is not threading.main_thread():
        work()
        return
    lock, finished = threading.Lock(), threading.Event()
    state: dict[str, Any] = {"error": None, "abandoned": False}

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # raised in the waiting thread
            state["error"] = exc
        with lock:
            finished.set()
            late = state["abandoned"] and state["error"] is None
        if late:
            cleanup()

    threading.Thread(target=run, name="vsdeblur-open", daemon=True).start()
    try:
        finished.wait()  # a signal's handler runs here, and what it raises ends the wait
    except BaseException:
        with lock:
            state["abandoned"] = True
            done = finished.is_set() and state["error"] is None
        if done:
            cleanup()
        raise
    if state["error"] is not None:
        raise state["error"]


class Reader:
    """Decode the first video stream of `source` (a path, a URL or "-") to RGB frames."""

    def __init__(self, source: str | Path, threads: bool = True, timeout: float = NETWORK_TIMEOUT) -> None:
        """timeout: seconds a URL may send nothing, while opened or later (0: wait for ever)."""
        self.name = "standard input" if str(source) == "-" else str(source)
        self.source = str(source)
        self.timeout = timeout if is_url(source) else 0
        self._index: list[int] | None = None
        _interruptible(lambda: self._open(source, threads), self.close)
        self._started = False

    def _open(self, source: str | Path, threads: bool) -> None:
        """Open the container and decode the first frame (which may wait on a network or a pipe)."""
        self.container = open_input(source, self.timeout)
        try:
            if not self.container.streams.video:
                raise UsageError(f"{self.name} has no video stream")
            self.stream = self.container.streams.video[0]
            self.chapter_tracks = self._chapter_tracks()
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

    def _describe(self, first: av.VideoFrame) -> VideoInfo:
        stream = self.stream
        fmt = av.VideoFormat(stream.codec_context.pix_fmt or first.format.name)
        depth = max(c.bits for c in fmt.components)
        rate = stream.average_rate
        duration = self._declared_end()
        if duration is None and self.container.duration is not None:
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
            hdr=HdrMetadata.from_frame(first),
            lossless=is_lossless(stream),
            field_order=FIELD_ORDERS.get(stream.codec_context.field_order) or ("interlaced" if first.interlaced_frame else None),
            side_alpha=not _has_alpha(fmt) and any(k.lower() == "alpha_mode" and v == "1" for k, v in stream.metadata.items()),
        )

    def _chapter_tracks(self) -> frozenset[int]:
        """The indices of the streams that hold the container's chapters: MP4 and MOV store
        chapters as a QuickTime text track, which FFmpeg's demuxer reads into `chapters()` and
        then shows as a data stream that it discards. A writer copies the chapters themselves
        (`set_chapters`), and the output's muxer makes its own chapter track where it needs one."""
        if MOV_DEMUXER not in self.container.format.name.split(",") or not self.container.chapters():
            return frozenset()
        return frozenset(s.index for s in self.container.streams if s.type == "data" and int(s.discard) == AVDISCARD_ALL)

    # ---- decoding --------------------------------------------------------------------------

    def _demux_all(self) -> Iterator[av.VideoFrame | av.Packet]:
        """Video frames and other streams' packets, in demux order; the decoder is drained at EOF."""
        decoded = 0
        end = position = 0.0  # end: where the last decoded frame stops showing
        started = time.monotonic()  # of the packet being waited for
        try:
            for packet in self.container.demux():
                if packet.stream is not self.stream:
                    if packet.size:  # empty packets only flush demuxers; never copy them
                        yield packet
                    continue
                if packet.pts is not None and packet.time_base:
                    position = float(packet.pts * packet.time_base)
                for frame in packet.decode():
                    if frame.is_corrupt:
                        raise UsageError(f"{self.name}: video frame {decoded} (at {float(frame.time or 0):.3f} s) is corrupt")
                    decoded += 1
                    if frame.pts is not None:
                        end = max(end, float((frame.pts + (frame.duration or 0)) * frame.time_base))
                    yield frame
                started = time.monotonic()
        except av.error.FFmpegError as exc:
            if self.timeout and _stalled(exc, started, self.timeout):
                raise UsageError(f"{self.name}: nothing arrived for {self.timeout:g} s after frame {decoded} "
                                 f"(near {position:.3f} s); {STALLED}") from None
            raise UsageError(
                f"{self.name}: the video stream is corrupt or truncated after frame {decoded} "
                f"(near {position:.3f} s): {exc}"
            ) from None
        declared = self._declared_end()
        # a missing tail shows only against what the file declares (MKV and MP4 record it)
        slack = 2 / float(self.stream.average_rate) if self.stream.average_rate else 0.1
        if declared is not None and end < declared - slack:
            raise UsageError(
                f"{self.name}: the video stream is truncated: it stops after frame {decoded} at "
                f"{end:.3f} s, but the file declares {declared:.3f} s"
            )

    def _declared_end(self) -> float | None:
        """The end time of the video stream as the container records it, if it does."""
        stream = self.stream
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        tag = stream.metadata.get("DURATION")  # Matroska's per-track tag: HH:MM:SS.nnnnnnnnn
        if tag is not None:
            try:
                hours, minutes, seconds = tag.split(":")
                return start + int(hours) * 3600 + int(minutes) * 60 + float(seconds)
            except ValueError:
                return None
        # MP4/MOV record each track's own duration; elsewhere FFmpeg fills stream.duration
        # in from the other streams, which says nothing about the video
        if stream.duration is not None and {"mov", "mp4"} & set(self.container.format.name.split(",")):
            return start + float(stream.duration * stream.time_base)
        return None

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
                yield self._converted(index, item)
            index += 1

    def _converted(self, index: int, frame: av.VideoFrame) -> Frame:
        info = self.info
        if frame.pts is None:
            raise UsageError(f"{self.name}: frame {index} has no timestamp; remux the file (e.g. to MKV) first")
        if (frame.width, frame.height) != (info.width, info.height):
            raise UsageError(
                f"{self.name}: frame {index} is {frame.width}x{frame.height} but the stream started "
                f"at {info.width}x{info.height}; size changes are not supported"
            )
        return Frame(index, frame.pts, to_rgb(frame, info.colour, info.rgb_format))

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[Frame]:
        """Frames with index in [start, stop), in presentation order. From a file, a range
        that starts later than frame 0 seeks to the keyframe before it and decodes from there;
        indices stay those of a decode from the start (they come from `timestamps()`)."""
        index = self.timestamps() if start > 0 else None
        if index is None:  # from the start, or a pipe, or a file without usable pts
            for item in self.items(start, stop):
                if isinstance(item, Frame):
                    yield item
                    if stop is not None and item.index + 1 >= stop:
                        return
            return
        if self._started:
            raise RuntimeError("a Reader can be iterated once; open another for a second pass")
        self._started = True
        if start >= len(index):
            return
        self._first = None
        self.container.seek(index[start], backward=True, any_frame=False, stream=self.stream)
        self._demux = self._demux_all()
        for item in self._demux:
            if not isinstance(item, av.VideoFrame):
                continue
            position = bisect.bisect_left(index, item.pts)
            if position >= len(index) or index[position] != item.pts:
                raise UsageError(f"{self.name}: a decoded frame has pts {item.pts}, which no packet has; cannot decode by range")
            if stop is not None and position >= stop:
                return
            if position >= start:
                yield self._converted(position, item)

    def timestamps(self) -> list[int] | None:
        """The pts of every video frame in presentation order, from one pass over the packets
        (no decoding), or None when a packet lacks a pts or two share one, or for a pipe
        (which cannot be read twice)."""
        if self.source == PIPE:
            return None
        if self._index is None:
            with open_input(self.source, self.timeout) as container:
                stream = container.streams[self.stream.index]
                pts = [p.pts for p in container.demux(stream) if p.size]
            ok = pts and None not in pts and len(set(pts)) == len(pts)
            self._index = sorted(pts) if ok else []
        return self._index or None

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
