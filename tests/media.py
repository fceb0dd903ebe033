"""Small real media files for the io and stream tests, made with PyAV's own encoders, and
`copy_through`, vsdeblur.io's decode and re-encode without a model."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vsdeblur.io import Frame, Reader, Writer

SRT = """1
00:00:00,000 --> 00:00:00,200
first line

2
00:00:00,250 --> 00:00:00,400
second line
"""


def pattern(width: int, height: int, i: int, dtype=np.uint8) -> np.ndarray:
    """A moving gradient with some structure, so that encoders and the model have work."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = (x + 3 * i) / width
    g = (y + 2 * i) / height
    b = 0.5 + 0.5 * np.sin((x + y) / 7.0 + i)
    image = np.clip(np.stack([r, g, b], -1) % 1.0, 0, 1)
    scale = 255 if dtype == np.uint8 else 65535
    return (image * scale).round().astype(dtype)


def make_clip(
    path: Path,
    width: int = 64,
    height: int = 48,
    frames: int = 6,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    times_ms: list[int] | None = None,
    audio: bool = True,
    subtitles: bool = False,
    attachment: bool = False,
    colour: dict | None = None,
    rotation: int = 0,
    fmt: str | None = None,
    options: dict | None = None,
) -> Path:
    """A clip with `frames` frames at 25 fps (or at `times_ms`, for VFR), optional AAC audio,
    SRT subtitles (MKV), a font attachment, colour tags, a display rotation and encoder options."""
    times_ms = times_ms or [40 * i for i in range(frames)]
    deep = av.VideoFormat(pix_fmt).components[0].bits > 8
    with av.open(str(path), "w", format=fmt) as out:
        video = out.add_stream(codec, rate=25, options=({"preset": "ultrafast"} if codec.startswith("libx26") else {}) | (options or {}))
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        video.time_base = video.codec_context.time_base = Fraction(1, 1000)
        colour = colour or {}
        for key, value in colour.items():
            setattr(video.codec_context, key, value)
        if rotation:
            video.set_display_rotation(rotation)
        sound = out.add_stream("aac", rate=48000, layout="stereo") if audio else None
        srt_input = None
        if subtitles:
            srt_path = path.with_suffix(".srt")
            srt_path.write_text(SRT)
            srt_input = av.open(str(srt_path))
            sub = out.add_stream_from_template(srt_input.streams.subtitles[0])
            sub.metadata["language"] = "eng"
        if attachment:
            out.add_attachment("font.ttf", "font/ttf", b"not really a font, but bytes to carry")
        for i, t in enumerate(times_ms):
            rgb = pattern(width, height, i, np.uint16 if deep else np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb48le" if deep else "rgb24")
            frame = frame.reformat(format=pix_fmt, dst_colorspace=colour.get("colorspace", 1) or 1,
                                   dst_color_range=colour.get("color_range", 1) or 1)
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            seconds = (times_ms[-1] + 40) / 1000
            samples = int(seconds * 48000)
            tone = (0.2 * np.sin(np.arange(samples) * 2 * np.pi * 440 / 48000)).astype(np.float32)
            for start in range(0, samples, 1024):
                chunk = np.stack([tone[start:start + 1024]] * 2)
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="stereo")
                af.sample_rate, af.pts, af.time_base = 48000, start, Fraction(1, 48000)
                out.mux(sound.encode(af))
            out.mux(sound.encode(None))
        if srt_input is not None:
            for packet in srt_input.demux(srt_input.streams.subtitles[0]):
                if packet.size:
                    packet.stream = sub
                    out.mux(packet)
            srt_input.close()
    return path


def video_times(path: Path | str) -> list[float]:
    """Presentation times (seconds) of every video frame, in presentation order."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return sorted(float(p.pts * p.time_base) for p in c.demux(s) if p.size)


def packets(path: Path | str, kind: str) -> list[tuple[bytes, float | None]]:
    """Payload and time of every packet of every stream of one type, in file order per stream."""
    with av.open(str(path)) as c:
        streams = [s for s in c.streams if s.type == kind]
        return [(bytes(p), float(p.pts * p.time_base) if p.pts is not None else None) for p in c.demux(*streams) if p.size]


def sliding_noise_clip(path: Path, frames: int = 10, seed: int = 0, width: int = 64, height: int = 48) -> Path:
    """Random texture sliding 2 px a frame: H.264 with a keyframe every 4 frames, uneven
    timestamps (1/1000 time base) and AAC audio; a brightness jump halfway gives the scene
    detector a cut."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 200, (height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25, options={"preset": "ultrafast", "g": "4", "keyint_min": "4"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.time_base = video.codec_context.time_base = Fraction(1, 1000)
        sound = out.add_stream("aac", rate=48000, layout="mono")
        for i in range(frames):
            rgb = np.roll(base, 2 * i, axis=1) + (55 if i >= frames // 2 else 0)
            frame = av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = 40 * i + (i % 3), Fraction(1, 1000)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        samples = frames * 48000 // 25
        tone = (0.2 * np.sin(np.arange(samples) * 0.05)).astype(np.float32)[None]
        for start in range(0, samples, 1024):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, start:start + 1024]), format="fltp", layout="mono")
            af.sample_rate, af.pts, af.time_base = 48000, start, Fraction(1, 48000)
            out.mux(sound.encode(af))
        out.mux(sound.encode(None))
    return path


def copy_through(source: Path, target: Path, **settings) -> Writer:
    """Decode and re-encode without a model, copying every other stream."""
    with Reader(source) as reader, Writer(target, reader.info, settings, source=reader) as writer:
        for item in reader.items():
            if isinstance(item, Frame):
                writer.write(item.rgb, item.pts)
            else:
                writer.copy(item)
    return writer
