"""Encode RGB numpy frames with their source timestamps, and copy every other stream.

    with Reader("in.mkv") as reader, Writer("out.mkv", reader.info, settings, source=reader) as writer:
        for item in reader.items():
            if isinstance(item, Frame):
                writer.write(restored_rgb, item.pts)
            else:
                writer.copy(item)        # an audio/subtitle/... packet of the source

`Writer(target, video, settings, source=None, overwrite=False)`:
- target: a path or "-" (standard output; Matroska unless settings["format"] names another);
  names follow `vsdeblur.io.paths` (colons are fine; URLs are refused).
  A path is written to a hidden temporary file beside it (`.NAME.XXXX.part.EXT`), renamed
  onto the target by `close()`; `abort()` (or leaving the `with` block by an exception)
  removes it. An existing target, a symlink too (even one to nothing), is refused unless
  overwrite=True, which replaces the name (a symlink, not what it points at). A named pipe or
  a character device (/dev/null) at the target, or a symlink to one, is written into as it is,
  never replaced; a directory, block device or socket is refused. Standard output, a pipe and
  a device cannot seek: MP4 and MOV go there fragmented (a line in `left_out` says so). The
  container format, encoder and options are checked, and the encoder is opened, before any
  frame is written.
- video: the source's `VideoInfo`; its time base, colour tags and rotation are reproduced.
- settings: ENCODE options (`vsdeblur.config.ENCODE`; missing keys take their defaults):
  codec, crf, lossless, pix_fmt, encoder_preset, encoder_options, format, drop_incompatible.
- source: a `Reader` whose other streams (audio, subtitles, attachments, data, further video
  streams), chapters and metadata are copied without re-encoding; `copy(packet)` muxes one
  of its packets once the encoded video has reached its time, so that it is stored next to
  the video of that time whatever the encoder holds back. Streams the container cannot carry
  are an error naming the stream, or are dropped when drop_incompatible is set (MP4's chapter
  track is the chapters, copied as such).
`writer.left_out` lists, one line each, what the output does not keep: the source's alpha
channel and interlacing, what the pixel format gives up (chroma resolution, bits, exact RGB;
`vsdeblur.io.formats`), dropped streams, and the HDR10 metadata of a source when the encoder
cannot store it (FFV1, rawvideo).
`write(rgb, pts)` takes H x W x 3 uint8/uint16 frames in presentation order; pts is in the
source's video time base. A writer is not thread-safe: call it from one thread.
`writer.encoder` holds the resolved codec, pix_fmt, options and left_out (`encoder_settings(video,
settings, container_format)` computes them without opening anything; `output_format(target,
fmt)` names the container); `writer.time_base` is the output video's time base: the source's,
except for Y4M, which has no timestamps (1/rate).
"""

from __future__ import annotations

import errno
import io
import math
import os
import re
import secrets
import sys
import tempfile
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from vsdeblur.config import ENCODE
from vsdeblur.errors import UsageError
from vsdeblur.io.colour import HDR_SYNTAX, from_rgb
from vsdeblur.io.formats import Layout, choose, loss
from vsdeblur.io.paths import PIPE, ffmpeg_name, is_url, special_kind
from vsdeblur.io.reader import Reader, VideoInfo

__all__ = ["Writer", "encoder_settings", "names_a_rate", "output_format"]

DEFAULT_CRF = {"libx264": 16, "libx265": 18}
# the option (and entry) that makes these encoders lossless: the default for a lossless source
LOSSLESS_OPTION = {"libx264": ("qp", "0"), "libx265": ("x265-params", "lossless=1"), "libvpx-vp9": ("lossless", "1")}
CONSTANT_RATE_FORMATS = {"yuv4mpegpipe"}  # containers without timestamps
# the pixel formats the Y4M muxer writes (its encoder, rawvideo, takes every format); those
# deeper than 8 bits need strict=-1
Y4M_FORMATS = (*(f"{layout}{depth}" for layout in ("yuv420p", "yuv422p", "yuv444p") for depth in ("", "9le", "10le", "12le", "14le", "16le")),
               "yuv411p", "gray", "gray9le", "gray10le", "gray12le", "gray16le")
# tags that describe the old file or encode rather than the content (Matroska statistics,
# the old muxer or encoder): the new muxer writes its own
STALE_TAGS = {"encoder", "duration", "bps", "number_of_frames", "number_of_bytes"}
# and tags that describe the source's coded video, which the new encode is not: ALPHA_MODE=1
# marks VP8/VP9 alpha in Matroska/WebM (on the track, or for every track on the file), and the
# output is opaque
STALE_VIDEO_TAGS = STALE_TAGS | {"alpha_mode"}
# what an output may be besides a file: written into as it is, never replaced (a named pipe, or
# /dev/null); a temporary file and a rename make no sense there
WRITTEN_INTO = ("a named pipe", "a character device")
# FFmpeg's MOV-family muxers: their index (moov) is written at the end, and moved to the front
# (+faststart) of a file; an output that cannot seek gets fragmented MP4 instead, its index
# written once the first fragment is cut (delay_moov), so that it records where each track
# starts (AAC's priming: -21 ms) and every time stays exact
MOV_MUXERS = ("mp4", "mov", "ipod", "3gp", "3g2", "psp", "f4v")
FRAGMENTED = "frag_keyframe+empty_moov+delay_moov"
# copied packets held back until the encoder's video has reached their time (see Writer.copy):
# beyond this many bytes the oldest go to the muxer anyway
HOLD_LIMIT = 64 << 20
# Limits that FFmpeg's option tables leave open: x264 and x265 take a CRF up to 51 (x264
# clips a higher one to 51 without a word, x265 refuses it), and their speed presets are
# free text there
CRF_LIMIT = {"libx264": 51, "libx264rgb": 51, "libx265": 51}
X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")
NAMED_VALUES = {(codec, "preset"): X26X_PRESETS for codec in ("libx264", "libx264rgb", "libx265")}
NUMERIC_OPTIONS = {"INT", "INT64", "UINT64", "UINT", "DOUBLE", "FLOAT"}
EXPRESSION = re.compile(r"[-+*/()., 0-9eE]*[0-9][-+*/()., 0-9eE]*[KMGTPkmgtpiB]*")  # FFmpeg's numbers: 2M, 1.5e3, 2*8
# formats an encoder takes that FFmpeg decodes as another, so that every FFmpeg-based tool
# (and vsdeblur, in the next pass) sees the output as that: 4:0:0 H.264 decodes as 4:2:0.
# Not chosen automatically; --pix-fmt still gives them
DECODED_AS_OTHER = {"libx264": ("gray", "gray10le")}
# After x264 and x265, the encoders an output may get unless --codec names one: the first
# that the container takes and that keeps the source's pixel format, else the first that the
# container takes. A lossless source first gets the first of x264, x265, VP9 and FFV1 that
# keeps its format exactly (FFV1 only there: its files are the size of a lossless source's)
LOSSY_CHOICES = ("libvpx-vp9", "libsvtav1")


class UnknownFormat(UsageError):
    """No container format of that name, or none that FFmpeg tells from the output's name."""


def output_format(target: str | Path, fmt: str | None) -> str:
    """The container format that `target` ("-": standard output) is written in: `fmt`, or the
    one FFmpeg tells from the name (Matroska for "-"). Found in memory, so no file is touched.
    Formats that write files of their own (one image per frame, segments) are refused: an
    output is one file, written beside its target and renamed."""
    name = str(target)
    probe = io.BytesIO()
    probe.name = name  # what FFmpeg guesses the format from
    try:
        with av.open(probe, "w", format=fmt or ("matroska" if name == PIPE else None)) as container:
            chosen = container.format
    except ValueError as exc:
        hint = f"unknown container format {fmt!r}" if fmt else f"cannot tell the container format from the name {name!r}; use --format (e.g. matroska)"
        raise UnknownFormat(f"{hint} ({exc})") from None
    if chosen.no_file:
        raise UsageError(f"{chosen.name} writes a file of its own for every image or segment ({name}); "
                         "write one video file (.mkv, .mp4, .webm, ...) and cut images from it with ffmpeg")
    return chosen.name


def encoder_settings(video: VideoInfo, settings: Mapping[str, Any], container_format: str | None = None) -> dict[str, Any]:
    """Resolve the automatic choices for this source (and output container): codec, pixel
    format, CRF and options, and `left_out`: what that pixel format gives up (nothing when the
    user chose it). Raises UsageError for an unknown codec or pixel format, a codec the
    container cannot hold, an option the codec lacks or a value out of its range."""
    values = {**ENCODE.defaults(), **settings}
    codec_name = values["codec"] or _default_codec(video, values, container_format)
    codec = _encoder(codec_name)
    if codec is None:
        raise UsageError(f"unknown video encoder {codec_name!r} (e.g. libx264, libx265, ffv1, libsvtav1)")
    if container_format is not None and not _takes(container_format, codec_name):
        others = [c for c in (*_preferred(video), *LOSSY_CHOICES, "ffv1") if _takes(container_format, c)]
        hint = f"give --codec {' or '.join(dict.fromkeys(others))}" if others else "give another --codec"
        raise UsageError(f"{container_format} cannot hold {codec.canonical_name} video ({codec_name}); {hint} or write another format")
    formats = _formats(codec, container_format)
    left_out: list[str] = []
    lossless = _lossless(video, values, codec_name, codec)
    if values["pix_fmt"] is not None:
        try:
            pix_fmt = av.VideoFormat(values["pix_fmt"]).name
        except (ValueError, av.error.FFmpegError):
            raise UsageError(f"unknown pixel format {values['pix_fmt']!r} (e.g. yuv420p, yuv420p10le, yuv444p)") from None
        if formats and pix_fmt not in formats:
            raise UsageError(f"{codec_name} cannot encode {pix_fmt}; it takes {', '.join(formats)}")
        _check_subsampling(pix_fmt, video.width, video.height)
    else:
        layout = choose(video.pix_fmt, _choices(codec_name, formats) or [video.pix_fmt], video.width, video.height)
        if layout is None or layout.depth < min(8, video.bit_depth):
            raise UsageError(f"{codec_name} takes no pixel format for {video.width}x{video.height} {video.pix_fmt} video with "
                             f"8 bits per sample or more (it takes {', '.join(formats)}); write another format, e.g. .mkv or .mp4")
        pix_fmt = layout.name
        left_out += loss(Layout.source(video.pix_fmt), layout).describe(codec_name, lossless)
    options = dict(_parse_options(values["encoder_options"]))
    if lossless and codec_name in LOSSLESS_OPTION:
        option, entry = LOSSLESS_OPTION[codec_name]
        if "=" in entry:
            _add_params(options, option, [entry])
        else:
            options.setdefault(option, entry)
    elif values["crf"] is not None:
        options.setdefault("crf", str(values["crf"]))
    elif codec_name in DEFAULT_CRF and not names_a_rate(values):  # lossless here means FFV1 and the like
        options["crf"] = str(DEFAULT_CRF[codec_name])
    if values["encoder_preset"] is not None:
        options.setdefault("preset", values["encoder_preset"])
    _check_values(codec_name, options, values)
    if codec_name == "libx265":  # else a page of [info] on stderr
        _add_params(options, "x265-params", ["log-level=error"])
    if codec_name == "libx264" and _has_avx512():
        _add_params(options, "x264-params", [X264_WITHOUT_AVX512])
    hdr = video.hdr.encoder_params(codec_name) if video.hdr is not None else None
    if hdr is not None:  # HDR10 metadata travels with the pixels
        _add_params(options, *hdr)
    return {"codec": codec_name, "pix_fmt": pix_fmt, "options": options, "left_out": left_out}


SUBSAMPLING = {(1, 1): "4:2:0", (1, 0): "4:2:2", (2, 0): "4:1:1", (2, 2): "4:1:0"}  # Layout.chroma -> its name


def _check_subsampling(pix_fmt: str, width: int, height: int) -> None:
    """A chosen pixel format whose chroma planes are a half (a quarter) as wide or high needs
    sides that divide by two (four): said here, before any file exists, instead of the encoder's
    'Generic error in an external library'."""
    layout = Layout.of(pix_fmt)
    if layout is None:
        return
    needs = [f"{'an even' if 1 << log2 == 2 else f'a multiple of {1 << log2} as its'} {side}"
             for side, size, log2 in (("width", width, layout.chroma[0]), ("height", height, layout.chroma[1])) if log2]
    if width % (1 << layout.chroma[0]) or height % (1 << layout.chroma[1]):
        name = f" ({SUBSAMPLING[layout.chroma]})" if layout.chroma in SUBSAMPLING else ""
        raise UsageError(f"{pix_fmt}{name} needs {' and '.join(needs)}; the video is {width}x{height}: "
                         "give a 4:4:4 format (yuv444p), or leave --pix-fmt out to have one chosen")


def _encoder(name: str) -> av.Codec | None:
    """The video encoder of that name in this FFmpeg build, or None."""
    try:
        codec = av.Codec(name, "w")
    except (ValueError, av.error.FFmpegError):
        return None
    return codec if codec.type == "video" else None


def _can_be_lossless(codec_name: str, codec: av.Codec) -> bool:
    return codec_name in LOSSLESS_OPTION or (codec.lossless and not codec.lossy)  # FFV1, PNG, ...


def _wants_lossless(video: VideoInfo, values: Mapping[str, Any]) -> bool:
    """Lossless asked for, or the default: a lossless source (FFV1, PNG, lossless H.264, ...) is
    a master, and a lossy default would add codec error of the same order as what the model
    removes from lightly blurred footage."""
    if values["lossless"] is not None:
        return values["lossless"]
    return video.lossless and not names_a_rate(values)


def _lossless(video: VideoInfo, values: Mapping[str, Any], codec_name: str, codec: av.Codec) -> bool:
    """Whether this encode is lossless; UsageError for a lossless encode that cannot be."""
    can = _can_be_lossless(codec_name, codec)
    if values["lossless"] is None:
        return _wants_lossless(video, values) and can
    if values["lossless"] and names_a_rate(values):
        raise UsageError("lossless encoding takes no CRF or qp; give one or the other")
    if values["lossless"] and not can:
        raise UsageError(f"{codec_name} cannot encode losslessly; use libx264, libx265, libvpx-vp9 or ffv1, or give a CRF")
    return values["lossless"]


def _preferred(video: VideoInfo) -> tuple[str, str]:
    """x264 for 8-bit sources, x265 for deeper ones (x264 goes to 10 bits, x265 to 12)."""
    return ("libx264", "libx265") if video.bit_depth <= 8 else ("libx265", "libx264")


def _default_codec(video: VideoInfo, values: Mapping[str, Any], container_format: str | None) -> str:
    """The encoder for an output whose --codec is not given (see LOSSY_CHOICES)."""
    if container_format in CONSTANT_RATE_FORMATS:
        return "rawvideo"  # Y4M holds raw frames only
    source = Layout.source(video.pix_fmt)

    def usable(names: tuple[str, ...]) -> list[tuple[str, av.Codec]]:
        found = [(n, _encoder(n)) for n in names]
        return [(n, c) for n, c in found if c is not None and (container_format is None or _takes(container_format, n))]

    def keeps(name: str, codec: av.Codec, exactly: bool) -> bool:
        layout = choose(video.pix_fmt, _choices(name, _formats(codec, container_format)), video.width, video.height)
        if layout is None:
            return False
        lost = loss(source, layout)
        return lost.none if exactly else lost.faithful

    if _wants_lossless(video, values):
        for name, codec in usable((*_preferred(video), "libvpx-vp9", "ffv1")):
            if _can_be_lossless(name, codec) and keeps(name, codec, exactly=True):
                return name
    lossy = usable((*_preferred(video), *LOSSY_CHOICES))
    for name, codec in lossy:
        if keeps(name, codec, exactly=False):
            return name
    if lossy:
        return lossy[0][0]
    with av.open(io.BytesIO(), "w", format=container_format) as container:  # the container's own choice (GIF: gif)
        default = _encoder(container.default_video_codec)
    if default is None:
        raise UsageError(f"{container_format} holds no video that this FFmpeg build can encode")
    return default.name


def _takes(container_format: str, codec_name: str) -> bool:
    """Whether the container can hold the encoder's video (PyAV's own check, in memory)."""
    with av.open(io.BytesIO(), "w", format=container_format) as probe:
        try:
            probe.add_stream(codec_name)
        except ValueError:
            return False
    return True


def _formats(codec: av.Codec, container_format: str | None) -> list[str]:
    """The pixel formats the encoder takes, as far as the container writes them; [] for any."""
    formats = [f.name for f in codec.video_formats or ()]
    if container_format in CONSTANT_RATE_FORMATS:
        formats = [f for f in formats or Y4M_FORMATS if f in Y4M_FORMATS]
    return formats


def _choices(codec_name: str, formats: list[str]) -> list[str]:
    """The formats to choose from automatically."""
    return [f for f in formats if f not in DECODED_AS_OTHER.get(codec_name, ())]


def _check_values(codec_name: str, options: Mapping[str, str], values: Mapping[str, Any]) -> None:
    """Every option must exist, and a number must lie within the encoder's range, before the
    encoder opens: a refusal there comes as the encoder's own log lines."""
    supported = av.CodecContext.create(codec_name, "w").supported_options
    table = {o.name: o for o in (*supported.generic, *supported.private)}
    for key, text in options.items():
        option = table.get(key)
        where = _origin(key, text, values)
        if option is None:
            raise UsageError(f"{codec_name} has no option {key!r} ({where})")
        names = NAMED_VALUES.get((codec_name, key)) or tuple(c.name for c in option.choices)
        if text in names:
            continue
        if option.type.name not in NUMERIC_OPTIONS:
            if (codec_name, key) in NAMED_VALUES:
                raise UsageError(f"{codec_name}: {where} must be one of {', '.join(names)}")
            continue
        try:
            number = float(text)
        except ValueError:
            if EXPRESSION.fullmatch(text):
                continue  # a number FFmpeg evaluates ('2M', '2*8'): its own check applies
            named = f"one of {', '.join(names)} or " if names else ""
            raise UsageError(f"{codec_name}: {where} must be {named}a number from {option.min:g} to {option.max:g}") from None
        # -1 as both default and minimum means "unset" in FFmpeg's tables, not a value
        low = 0.0 if option.min == -1 and option.default in ("-1", "-1.000000") else option.min
        high = min(option.max, CRF_LIMIT.get(codec_name, math.inf)) if key == "crf" else option.max
        if not low <= number <= high:
            raise UsageError(f"{codec_name}: {where} is out of range; it takes {low:g} to {high:g}")


def _origin(key: str, text: str, values: Mapping[str, Any]) -> str:
    """How the user gave an option: '--crf 60', '--encoder-preset fastest' or 'tune=x in --encoder-options'."""
    if key == "crf" and values["crf"] is not None and text == str(values["crf"]):
        return f"--crf {text}"
    if key == "preset" and values["encoder_preset"] is not None and text == values["encoder_preset"]:
        return f"--encoder-preset {text}"
    return f"{key}={text} in --encoder-options"


def names_a_rate(settings: Mapping[str, Any]) -> bool:
    """Whether ENCODE settings fix the rate themselves: a CRF, or crf/qp among the encoder options."""
    given = {key for key, _ in _parse_options(settings.get("encoder_options"))}
    return settings.get("crf") is not None or not {"crf", "qp"}.isdisjoint(given)


# x264's AVX-512 code reads memory it has not written: at a CRF, the same frames come out
# differently from run to run, and change with what the heap holds (MALLOC_PERTURB_). Without
# AVX-512 every run is identical, and as fast (720p, 2 cores). AVX2,Cache64 is what x264 detects on
# such a CPU, less AVX-512; an asm the user gives in x264-params wins.
X264_WITHOUT_AVX512 = "asm=AVX2,Cache64"


def _has_avx512() -> bool:
    """Whether this CPU and its OS run AVX-512, as numpy's dispatcher detected it."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # a numpy without that table: x264 is left alone
        return False
    return bool(__cpu_features__.get("AVX512F"))


def _add_params(options: dict[str, str], option: str, entries: list[str]) -> None:
    """Append key=value entries to a colon-separated encoder option (x265-params and the like),
    leaving out the keys that the user's own value of it already sets."""
    given = options.get(option, "")
    keys = {item.partition("=")[0] for item in given.split(":")}
    added = [e for e in entries if e.partition("=")[0] not in keys]
    options[option] = ":".join(filter(None, [given, *added]))


def _parse_options(text: str | None) -> list[tuple[str, str]]:
    """'tune=film x264-params=aq-mode=3:ref=4' -> [(tune, film), (x264-params, aq-mode=3:ref=4)]"""
    pairs = []
    for word in (text or "").split():
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise UsageError(f"encoder option {word!r} must look like key=value")
        pairs.append((key, value))
    return pairs


class Writer:
    """Encode restored frames into `target`, copying the other streams of `source`."""

    def __init__(
        self,
        target: str | Path,
        video: VideoInfo,
        settings: Mapping[str, Any] | None = None,
        source: Reader | None = None,
        overwrite: bool = False,
    ) -> None:
        self.video = video
        values = {**ENCODE.defaults(), **(settings or {})}
        self.to_stdout = str(target) == PIPE
        if not self.to_stdout and is_url(target):
            raise UsageError(f"cannot write to a URL ({target}); write a file, or '-' for standard output")
        self.target = None if self.to_stdout else Path(target)
        # bad format, codec or option: fail before any file exists
        container_format = output_format(target, values["format"])
        self.encoder = encoder_settings(video, values, container_format)
        self.temp: Path | None = None
        self.left_out: list[str] = [*_source_notes(video), *self.encoder["left_out"]]
        if video.hdr is not None and self.encoder["codec"] not in HDR_SYNTAX:
            self.left_out.append(f"the HDR10 mastering display and light levels ({self.encoder['codec']} cannot "
                                 f"store them; {', '.join(HDR_SYNTAX)} can)")
        self._copies: dict[int, av.stream.Stream] = {}  # source stream index -> output stream
        self._held: deque[tuple[Fraction | None, av.Packet]] = deque()  # copied packets, with their time (s)
        self._held_bytes = 0
        self._video_time: Fraction | None = None  # the dts (s) of the last video packet muxed
        self._sink: io.BufferedWriter | None = None  # a named pipe or device opened here
        self._closed = False
        self.container = self._open(container_format, overwrite)
        try:
            self.stream = self._add_video()
            self._start_encoder()
            if source is not None:
                self._add_copies(source, values["drop_incompatible"])
        except BaseException:
            self.abort()
            raise

    # ---- setup -----------------------------------------------------------------------------

    def _open(self, fmt: str, overwrite: bool) -> av.container.OutputContainer:
        if self.to_stdout:
            if sys.stdout.isatty():
                raise UsageError("standard output is a terminal; send the video into a pipe or a file")
            return self._av_open(sys.stdout.buffer, fmt, "standard output", seekable=False)
        target = self.target
        kind = special_kind(target)
        if kind in WRITTEN_INTO:
            return self._open_into(target, fmt)
        if kind is not None:
            other = "" if kind == "a directory" else " (an output is a file, a named pipe or a character device such as /dev/null)"
            raise UsageError(f"output is {kind}: {target}{other}")
        if os.path.lexists(target) and not overwrite:
            link = f"a symlink to {os.readlink(target)}; " if target.is_symlink() else ""
            raise UsageError(f"output exists: {target} ({link}pass --overwrite to replace it)")
        if not target.parent.is_dir():
            raise UsageError(f"output directory does not exist: {target.parent}")
        # hidden, unique, beside the target (same file system, so the final rename is atomic);
        # with the target's extension, so that it is recognisable (the format is already chosen)
        self.temp = target.parent / f".{target.stem}.{secrets.token_hex(4)}.part{target.suffix}"
        try:
            self.temp.touch(exist_ok=False)
        except OSError as exc:
            self.temp = None
            raise UsageError(f"cannot write to {target.parent}: {exc.strerror or exc}") from None
        try:
            return self._av_open(ffmpeg_name(self.temp), fmt, str(target))
        except BaseException:
            self._remove_temp()
            raise

    def _open_into(self, target: Path, fmt: str) -> av.container.OutputContainer:
        """Write straight into a named pipe or a character device: nothing there is replaced, and
        there is no file to rename. A named pipe waits here for its reader, as with ffmpeg."""
        try:
            self._sink = os.fdopen(os.open(target, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC), "wb")
        except OSError as exc:
            raise UsageError(f"cannot write to {target}: {exc.strerror or exc}") from None
        try:
            if self._sink.isatty():
                raise UsageError(f"output is a terminal: {target}; send the video into a pipe or a file")
            return self._av_open(self._sink, fmt, str(target), seekable=False)
        except BaseException:
            self._close_sink()
            raise

    def _av_open(self, file: Any, fmt: str, name: str, seekable: bool = True) -> av.container.OutputContainer:
        """seekable: False for standard output, a named pipe or a device, where nothing written
        can be gone back to (as /dev/null seeks but reads nothing back)."""
        try:
            options = {}
            if fmt in MOV_MUXERS and not seekable:
                options["movflags"] = FRAGMENTED
                kind = "MOV" if fmt == "mov" else "MP4"
                self.left_out.append(f"a regular {kind}'s index ({name} cannot seek back to write it; written as fragmented "
                                     f"{kind} with movflags {FRAGMENTED}, which players read as it arrives)")
            elif fmt in MOV_MUXERS:
                options["movflags"] = "+faststart"
            if fmt in CONSTANT_RATE_FORMATS:
                options["strict"] = "-1"  # Y4M's deeper than 8-bit formats are FFmpeg's extension (x265 --y4m reads them)
            return av.open(file, "w", format=fmt, options=options)
        except av.error.FFmpegError as exc:
            raise UsageError(f"cannot open {name} for writing: {exc}") from None

    def _start_encoder(self) -> None:
        """Open the video encoder now, so that settings it refuses end the run before any frame
        is made, in one line that carries the encoder's own reason (x264, x265 and libvpx print
        it on stderr themselves)."""
        enc = self.encoder
        with _library_stderr() as printed:
            try:
                self.stream.codec_context.open()
                failure = None
            except av.error.FFmpegError as exc:
                failure = exc
        if failure is None:
            sys.stderr.write("".join(f"{line}\n" for line in printed))  # warnings still show
            return
        said = [line.strip() for line in printed if line.strip()]
        reason = next((line for line in reversed(said) if "error" in line.lower()), said[-1] if said else failure.strerror or str(failure))
        options = " ".join(f"{k}={v}" for k, v in enc["options"].items())
        raise UsageError(f"{enc['codec']} refused {self.video.width}x{self.video.height} {enc['pix_fmt']} with options "
                         f"'{options}': {reason}")

    def _add_video(self) -> av.video.stream.VideoStream:
        video, enc = self.video, self.encoder
        if enc["codec"] == "libsvtav1":
            # SVT-AV1 prints a page of [info] to stderr; its SVT_LOG (1: errors only) quiets it
            # as log-level=error does x265. A level the user set stays
            os.environ.setdefault("SVT_LOG", "1")
        stream = self.container.add_stream(enc["codec"], rate=video.frame_rate, options=enc["options"])
        stream.width, stream.height = video.width, video.height
        stream.pix_fmt = enc["pix_fmt"]
        # the source's time base, so that every pts is carried over exactly; Y4M knows no
        # timestamps and reads its frame rate from the time base, so it gets 1/rate
        tb = video.time_base
        if self.container.format.name in CONSTANT_RATE_FORMATS and video.frame_rate:
            tb = 1 / video.frame_rate
        self.time_base = tb
        stream.time_base = tb
        stream.codec_context.time_base = tb
        video.colour.tag(stream.codec_context)
        if video.rotation:
            stream.set_display_rotation(video.rotation)
        return stream

    def _add_copies(self, source: Reader, drop: bool) -> None:
        out = self.container
        out.metadata.update(_fresh_tags(source.container.metadata, STALE_VIDEO_TAGS))
        self.stream.metadata.update(_fresh_tags(source.stream.metadata, STALE_VIDEO_TAGS))
        self.stream.disposition = source.stream.disposition
        for stream in source.container.streams:
            if stream is source.stream or stream.index in source.chapter_tracks:  # chapters: set below
                continue
            label = _describe(stream)
            if not self._fits(stream, out.format.name):
                if drop:
                    self.left_out.append(f"{label} ({out.format.name} cannot store it; --drop-incompatible)")
                    continue
                mkv = out.format.name != "matroska" and self._fits(stream, "matroska")
                raise UsageError(
                    f"{label} of {source.name} cannot be stored in {out.format.name}; "
                    f"{'write MKV, or pass' if mkv else 'pass'} --drop-incompatible to leave it out"
                )
            copy = out.add_stream_from_template(stream)
            copy.metadata.update(_fresh_tags(stream.metadata))
            copy.disposition = stream.disposition
            self._copies[stream.index] = copy
        chapters = source.container.chapters()
        if chapters:
            out.set_chapters(chapters)

    @staticmethod
    def _fits(stream: av.stream.Stream, container_format: str) -> bool:
        """Whether the container format takes this stream: try a header in memory."""
        try:
            with av.open(io.BytesIO(), "w", format=container_format) as probe:
                probe.add_stream_from_template(stream)
                probe.start_encoding()
            return True
        except (av.error.FFmpegError, ValueError, NotImplementedError):
            return False

    # ---- writing ---------------------------------------------------------------------------

    def write(self, rgb: np.ndarray, pts: int) -> None:
        """Encode one frame shown at `pts` (in the source's video time base)."""
        frame = from_rgb(rgb, self.video.colour, self.encoder["pix_fmt"])
        frame.pts = pts if self.time_base == self.video.time_base else round(pts * self.video.time_base / self.time_base)
        frame.time_base = self.time_base
        self._mux_video(self._encoded(frame))

    def _encoded(self, frame: av.VideoFrame | None) -> list[av.Packet]:
        try:
            packets = self.stream.encode(frame)
        except av.error.FFmpegError as exc:
            enc = self.encoder
            raise UsageError(
                f"{enc['codec']} failed on {self.video.width}x{self.video.height} {enc['pix_fmt']} "
                f"with options {enc['options']}: {exc.strerror or exc}"
            ) from None
        # The encoder works in self.time_base; PyAV labels its packets with the
        # stream's, which the muxer may have changed (MP4 picks its own timescale when a
        # copied packet writes the header first), so label them again before muxing.
        for packet in packets:
            packet.time_base = self.time_base
            if packet.pts is not None and (packet.dts is None or packet.dts > packet.pts):
                # libx265 sometimes leaves the DTS of packets that only come out at the final
                # flush (a clip of 2 frames) uninitialised, and the muxer refuses them; a
                # packet is never decoded after it is shown, so its PTS is a valid DTS
                packet.dts = packet.pts
        return packets

    def copy(self, packet: av.Packet) -> None:
        """Mux a packet of one of the source's other streams unchanged (dropped streams: ignored).

        It waits here until the encoder's video has reached its time: an encoder holds frames
        back (x264's lookahead: 40 frames), and a sparse clip's 40 frames can span minutes, more
        than FFmpeg's interleaver waits (10 s), so that the audio would be stored far ahead of
        its video. Held back instead, every packet reaches the muxer next to the video of its
        time, however sparse the frames or deep the encoder's lookahead."""
        copy = self._copies.get(packet.stream.index)
        if copy is None:
            return
        when = packet.dts if packet.dts is not None else packet.pts
        time = when * packet.time_base if when is not None and packet.time_base else None
        packet.stream = copy
        self._held.append((time, packet))
        self._held_bytes += packet.size
        self._release()

    def _mux_video(self, packets: list[av.Packet]) -> None:
        """Mux encoded video packets one by one, each followed by the copied packets up to its time."""
        for packet in packets:
            when = packet.dts if packet.dts is not None else packet.pts  # before muxing, which rescales it
            self._mux([packet])
            if when is not None:
                self._video_time = when * self.time_base
            self._release()

    def _release(self, everything: bool = False) -> None:
        """Mux the held packets whose time the video has reached (all of them at the end)."""
        while self._held:
            time, packet = self._held[0]
            due = time is None or (self._video_time is not None and time <= self._video_time)
            if not (everything or due or self._held_bytes > HOLD_LIMIT):
                return
            self._held.popleft()
            self._held_bytes -= packet.size
            self._mux([packet])

    def _mux(self, packets: list[av.Packet]) -> None:
        try:
            self.container.mux(packets)
        except av.error.FFmpegError as exc:
            raise self._failed(exc) from None

    def _failed(self, exc: Exception) -> UsageError:
        """A write that the system refused (a full disk, a quota, an I/O error) as one line that
        names the output, not its temporary file, and the reason."""
        name = self.target or "standard output"
        reason = getattr(exc, "strerror", None) or str(exc)
        full = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
        return UsageError(f"cannot write {name}: {reason}{'; free some space, or write elsewhere' if full else ''}")

    def close(self) -> None:
        """Flush the encoder, finish the file and move it onto the target."""
        if self._closed:
            return
        try:
            self._mux_video(self._encoded(None))
            self._release(everything=True)
            try:
                self.container.close()  # writes what FFmpeg still buffers, and the index
            except av.error.FFmpegError as exc:
                raise self._failed(exc) from None
            self._closed = True
            self._close_sink()
            if self.temp is not None:
                try:
                    os.replace(self.temp, self.target)
                except OSError as exc:
                    raise self._failed(exc) from None
                self.temp = None
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Stop without a result: close the container and remove the temporary file."""
        if not self._closed:
            self._closed = True
            try:
                self.container.close()
            except Exception:  # the file is being thrown away; its trailer does not matter
                pass
        self._held.clear()
        self._close_sink()
        self._remove_temp()

    def _close_sink(self) -> None:
        if self._sink is not None:
            try:
                self._sink.close()
            except OSError:  # the pipe's reader went away: nothing is left to tell it
                pass
            self._sink = None

    def _remove_temp(self) -> None:
        if self.temp is not None:
            self.temp.unlink(missing_ok=True)
            self.temp = None

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type: type | None, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _source_notes(video: VideoInfo) -> list[str]:
    """What every output leaves out of such a source, whatever the encoder: its alpha channel
    and its interlacing."""
    notes = []
    if video.side_alpha:
        notes.append(f"the alpha channel of the {video.codec} source (stored beside its {video.pix_fmt} picture, which FFmpeg's "
                     f"{video.codec} decoder does not read; the model restores colour only; the output is opaque)")
    elif video.alpha:
        notes.append(f"the alpha channel of the {video.pix_fmt} source (the model restores colour only; the output is opaque)")
    if video.field_order is not None:
        order = "" if video.field_order == "interlaced" else f", field order {video.field_order}"
        notes.append(f"the interlacing of the source{order}: each frame's two fields were deblurred together as one "
                     "progressive picture and are written as progressive frames (deinterlace first, e.g. with "
                     "ffmpeg -vf bwdif, to deblur each field's own picture)")
    return notes


@contextmanager
def _library_stderr() -> Iterator[list[str]]:
    """The lines that C libraries write to file descriptor 2 meanwhile (they bypass Python and
    FFmpeg's logging), held back instead of printed."""
    lines: list[str] = []
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to hold back
        yield lines
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines.extend(held.read().decode("utf-8", "replace").splitlines())


def _fresh_tags(tags: Mapping[str, str], stale: set[str] = STALE_TAGS) -> dict[str, str]:
    return {k: v for k, v in tags.items() if k.lower() not in stale and not k.upper().startswith("_STATISTICS")}


def _describe(stream: av.stream.Stream) -> str:
    """'stream #2 (subtitle, subrip)' or 'stream #3 (attachment, font.ttf)'."""
    if stream.codec_context is not None:
        what = stream.codec_context.name
    else:  # an attachment's file name, else the codec (bin_data, ...)
        what = stream.metadata.get("filename") or getattr(stream, "name", None) or "data"
    return f"stream #{stream.index} ({stream.type}, {what})"
