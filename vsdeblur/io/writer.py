"""Encode RGB numpy frames with their source timestamps, and copy every other stream.

    with Reader("in.mkv") as reader, Writer("out.mkv", reader.info, settings, source=reader) as writer:
        for item in reader.items():
            if isinstance(item, Frame):
                writer.write(restored_rgb, item.pts)
            else:
                writer.copy(item)        # an audio/subtitle/... packet of the source

`Writer(target, video, settings, source=None, overwrite=False)`:
- target: a path or "-" (standard output; Matroska unless settings["format"] names another).
  A path is written to a hidden temporary file beside it (`.NAME.XXXX.part.EXT`), renamed
  onto the target by `close()`; `abort()` (or leaving the `with` block by an exception)
  removes it. An existing target is refused unless overwrite=True.
- video: the source's `VideoInfo`; its time base, colour tags and rotation are reproduced.
- settings: ENCODE options (`vsdeblur.config.ENCODE`; missing keys take their defaults):
  codec, crf, lossless, pix_fmt, encoder_preset, encoder_options, format, drop_incompatible.
- source: a `Reader` whose other streams (audio, subtitles, attachments, data, further video
  streams), chapters and metadata are copied without re-encoding; `copy(packet)` muxes one
  of its packets. Streams the container cannot carry are an error naming the stream, or are
  dropped when drop_incompatible is set.
`writer.left_out` lists, one line each, what the output does not keep: dropped streams, and the
HDR10 metadata of a source when the encoder cannot store it (FFV1, rawvideo).
`write(rgb, pts)` takes H x W x 3 uint8/uint16 frames in presentation order; pts is in the
source's video time base. A writer is not thread-safe: call it from one thread.
`writer.encoder` holds the resolved codec, pix_fmt and options (`encoder_settings(video,
settings, container_format)` computes them without opening anything); `writer.time_base` is
the output video's time base: the source's, except for Y4M, which has no timestamps (1/rate).
"""

from __future__ import annotations

import io
import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import av
import numpy as np

from vsdeblur.config import ENCODE
from vsdeblur.errors import UsageError
from vsdeblur.io.colour import HDR_SYNTAX, from_rgb
from vsdeblur.io.reader import Reader, VideoInfo

__all__ = ["Writer", "encoder_settings", "names_a_rate"]

DEFAULT_CRF = {"libx264": 16, "libx265": 18}
# the option (and entry) that makes these encoders lossless: the default for a lossless source
LOSSLESS_OPTION = {"libx264": ("qp", "0"), "libx265": ("x265-params", "lossless=1")}
CONSTANT_RATE_FORMATS = {"yuv4mpegpipe"}  # containers without timestamps
# tags that describe the old file or encode rather than the content (Matroska statistics,
# the old muxer or encoder): the new muxer writes its own
STALE_TAGS = {"encoder", "duration", "bps", "number_of_frames", "number_of_bytes"}


def encoder_settings(video: VideoInfo, settings: Mapping[str, Any], container_format: str | None = None) -> dict[str, Any]:
    """Resolve the automatic choices for this source (and output container): codec, pixel
    format, CRF and options. Raises UsageError for an unknown codec or pixel format or an
    option the codec lacks."""
    values = {**ENCODE.defaults(), **settings}
    codec_name = values["codec"] or ("libx264" if video.bit_depth <= 8 else "libx265")
    if values["codec"] is None and container_format == "yuv4mpegpipe":
        codec_name = "rawvideo"  # Y4M holds raw frames only
    try:
        codec = av.Codec(codec_name, "w")
    except av.error.FFmpegError:
        codec = None
    except ValueError:
        codec = None
    if codec is None or codec.type != "video":
        raise UsageError(f"unknown video encoder {codec_name!r} (e.g. libx264, libx265, ffv1, libsvtav1)")
    formats = [f.name for f in codec.video_formats or ()]
    if values["pix_fmt"] is not None:
        try:
            pix_fmt = av.VideoFormat(values["pix_fmt"]).name
        except (ValueError, av.error.FFmpegError):
            raise UsageError(f"unknown pixel format {values['pix_fmt']!r} (e.g. yuv420p, yuv420p10le, yuv444p)") from None
        if formats and pix_fmt not in formats:
            raise UsageError(f"{codec_name} cannot encode {pix_fmt}; it takes {', '.join(formats)}")
    else:
        # the source's format if the encoder takes it, else the usual 4:2:0 of the same depth
        wanted = [video.pix_fmt, "yuv420p" if video.bit_depth <= 8 else "yuv420p10le"]
        if video.width % 2 or video.height % 2:
            # x264/x265 cannot subsample odd sizes: keep full-resolution chroma instead
            wanted = ["yuv444p" if video.bit_depth <= 8 else "yuv444p10le", *wanted]
        pix_fmt = next((f for f in wanted if not formats or f in formats), formats[0] if formats else video.pix_fmt)
    options = dict(_parse_options(values["encoder_options"]))
    rate_given = names_a_rate(values)
    can_be_lossless = codec_name in LOSSLESS_OPTION or (codec.lossless and not codec.lossy)  # FFV1, PNG, ...
    lossless = values["lossless"]
    if lossless is None:
        # A lossless source (FFV1, PNG, lossless H.264, ...) is a master: a lossy default would add
        # codec error of the same order as what the model removes from lightly blurred footage.
        lossless = video.lossless and can_be_lossless and not rate_given
    if lossless and rate_given:
        raise UsageError("lossless encoding takes no CRF or qp; give one or the other")
    if lossless and not can_be_lossless:
        raise UsageError(f"{codec_name} cannot encode losslessly; use libx264, libx265 or ffv1, or give a CRF")
    if lossless and codec_name in LOSSLESS_OPTION:
        option, entry = LOSSLESS_OPTION[codec_name]
        _add_params(options, option, [entry])
    elif values["crf"] is not None:
        options.setdefault("crf", str(values["crf"]))
    elif codec_name in DEFAULT_CRF and not rate_given:  # lossless here means FFV1 and the like
        options["crf"] = str(DEFAULT_CRF[codec_name])
    if values["encoder_preset"] is not None:
        options.setdefault("preset", values["encoder_preset"])
    if codec_name == "libx265":  # else a page of [info] on stderr
        _add_params(options, "x265-params", ["log-level=error"])
    if codec_name == "libx264" and _has_avx512():
        _add_params(options, "x264-params", [X264_WITHOUT_AVX512])
    hdr = video.hdr.encoder_params(codec_name) if video.hdr is not None else None
    if hdr is not None:  # HDR10 metadata travels with the pixels
        _add_params(options, *hdr)
    known = _option_names(codec_name)
    for key in options:
        if key not in known:
            raise UsageError(f"{codec_name} has no option {key!r}")
    return {"codec": codec_name, "pix_fmt": pix_fmt, "options": options}


def names_a_rate(settings: Mapping[str, Any]) -> bool:
    """Whether ENCODE settings fix the rate themselves: a CRF, or crf/qp among the encoder options."""
    given = {key for key, _ in _parse_options(settings.get("encoder_options"))}
    return settings.get("crf") is not None or not {"crf", "qp"}.isdisjoint(given)


# x264's AVX-512 code reads memory it has not written: at a CRF, the same frames came out
# differently from run to run, and changed with what the heap held (MALLOC_PERTURB_). Without
# AVX-512 every run was identical, as fast (720p, 2 cores). AVX2,Cache64 is what x264 detects on
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


def _option_names(codec_name: str) -> set[str]:
    supported = av.CodecContext.create(codec_name, "w").supported_options
    return {o.name for o in (*supported.generic, *supported.private)}


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
        encoder_settings(video, values)  # bad codec, format or option: fail before any file exists
        self.to_stdout = str(target) == "-"
        self.target = None if self.to_stdout else Path(target)
        self.temp: Path | None = None
        self.left_out: list[str] = []
        self._copies: dict[int, av.stream.Stream] = {}  # source stream index -> output stream
        self._closed = False
        self.container = self._open(values["format"], overwrite)
        try:
            self.encoder = encoder_settings(video, values, self.container.format.name)
            if video.hdr is not None and self.encoder["codec"] not in HDR_SYNTAX:
                self.left_out.append(f"the HDR10 mastering display and light levels ({self.encoder['codec']} cannot "
                                     f"store them; {', '.join(HDR_SYNTAX)} can)")
            self.stream = self._add_video()
            if source is not None:
                self._add_copies(source, values["drop_incompatible"])
        except BaseException:
            self.abort()
            raise

    # ---- setup -----------------------------------------------------------------------------

    def _open(self, fmt: str | None, overwrite: bool) -> av.container.OutputContainer:
        if self.to_stdout:
            if sys.stdout.isatty():
                raise UsageError("standard output is a terminal; send the video into a pipe or a file")
            return self._av_open(sys.stdout.buffer, fmt or "matroska", "standard output")
        target = self.target
        if target.is_dir():
            raise UsageError(f"output is a directory: {target}")
        if target.exists() and not overwrite:
            raise UsageError(f"output exists: {target} (pass --overwrite to replace it)")
        if not target.parent.is_dir():
            raise UsageError(f"output directory does not exist: {target.parent}")
        # hidden, unique, beside the target (same file system, so the final rename is atomic);
        # it keeps the target's extension so that FFmpeg can pick the container from it
        self.temp = target.parent / f".{target.stem}.{secrets.token_hex(4)}.part{target.suffix}"
        try:
            self.temp.touch(exist_ok=False)
        except OSError as exc:
            self.temp = None
            raise UsageError(f"cannot write to {target.parent}: {exc.strerror or exc}") from None
        try:
            return self._av_open(str(self.temp), fmt, str(target))
        except BaseException:
            self._remove_temp()
            raise

    def _av_open(self, file: Any, fmt: str | None, name: str) -> av.container.OutputContainer:
        try:
            options = {"movflags": "+faststart"} if fmt in ("mp4", "mov") or str(name).lower().endswith((".mp4", ".mov", ".m4v")) else {}
            return av.open(file, "w", format=fmt, options=options)
        except ValueError as exc:
            hint = f"unknown container format {fmt!r}" if fmt else f"cannot tell the container format from the name {name!r}; use --format (e.g. matroska)"
            raise UsageError(f"{hint} ({exc})") from None
        except av.error.FFmpegError as exc:
            raise UsageError(f"cannot open {name} for writing: {exc}") from None

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
        out.metadata.update(_fresh_tags(source.container.metadata))
        self.stream.metadata.update(_fresh_tags(source.stream.metadata))
        self.stream.disposition = source.stream.disposition
        for stream in source.container.streams:
            if stream is source.stream:
                continue
            label = _describe(stream)
            if not self._fits(stream):
                if drop:
                    self.left_out.append(f"{label} ({out.format.name} cannot store it; --drop-incompatible)")
                    continue
                raise UsageError(
                    f"{label} of {source.name} cannot be stored in {out.format.name}; "
                    "write MKV, or pass --drop-incompatible to leave it out"
                )
            copy = out.add_stream_from_template(stream)
            copy.metadata.update(_fresh_tags(stream.metadata))
            copy.disposition = stream.disposition
            self._copies[stream.index] = copy
        chapters = source.container.chapters()
        if chapters:
            out.set_chapters(chapters)

    def _fits(self, stream: av.stream.Stream) -> bool:
        """Whether the output container takes this stream: try a header in memory."""
        try:
            with av.open(io.BytesIO(), "w", format=self.container.format.name) as probe:
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
        self._mux(self._encoded(frame))

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
        """Mux a packet of one of the source's other streams unchanged (dropped streams: ignored)."""
        copy = self._copies.get(packet.stream.index)
        if copy is not None:
            packet.stream = copy
            self._mux([packet])

    def _mux(self, packets: list[av.Packet]) -> None:
        try:
            self.container.mux(packets)
        except av.error.FFmpegError as exc:
            raise UsageError(f"writing {self.target or 'standard output'} failed: {exc}") from None

    def close(self) -> None:
        """Flush the encoder, finish the file and move it onto the target."""
        if self._closed:
            return
        try:
            self._mux(self._encoded(None))
            self.container.close()
            self._closed = True
        except BaseException:
            self.abort()
            raise
        if self.temp is not None:
            os.replace(self.temp, self.target)
            self.temp = None

    def abort(self) -> None:
        """Stop without a result: close the container and remove the temporary file."""
        if not self._closed:
            self._closed = True
            try:
                self.container.close()
            except Exception:  # the file is being thrown away; its trailer does not matter
                pass
        self._remove_temp()

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


def _fresh_tags(tags: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in tags.items() if k.lower() not in STALE_TAGS and not k.upper().startswith("_STATISTICS")}


def _describe(stream: av.stream.Stream) -> str:
    """'stream #2 (subtitle, subrip)' or 'stream #3 (attachment, font.ttf)'."""
    what = stream.codec_context.name if stream.codec_context is not None else stream.metadata.get("filename", "data")
    return f"stream #{stream.index} ({stream.type}, {what})"
