"""What the tests share: small real media files made with PyAV's own encoders and read back,
numpy frames in and out of VapourSynth clips, weights files, the command line in a
subprocess, and `copy_through`, vsdeblur.io's decode and re-encode without a model.

Test modules import their helpers from here (fixtures come from conftest.py), never from one
another. torch loads only in the weights helpers, so that a subprocess can import this module
cheaply (test_io runs copy_through in one)."""

from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np
import vapoursynth as vs

from vsdeblur.engine.window import window_indices
from vsdeblur.io import Frame, Reader, Writer
from vsdeblur.stream import stream

if TYPE_CHECKING:
    from vsdeblur.engine import Deblurrer

REPO = Path(__file__).resolve().parents[1]
SAMPLE_CLIP = REPO / "vsdeblur" / "data" / "bigbuckbunny.mp4"

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


def write_lossless(path: Path, frames: list[np.ndarray]) -> Path:
    """An FFV1 RGB file at 25 fps: decoding gives back exactly these 8-bit RGB frames."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "bgr0"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def write_png(path: Path, image: np.ndarray) -> Path:
    """An 8-bit RGB PNG, its folder made as needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = image.shape[1], image.shape[0], "rgb24"
        container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def decoded(path: Path | str) -> list[np.ndarray]:
    """Every video frame of a file as 8-bit RGB, in presentation order."""
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def contents(path: Path | str) -> tuple[list[np.ndarray], list[int], list[tuple[str, int]]]:
    """Decoded RGB frames, their pts, and (type, packet count) of every other stream."""
    with av.open(str(path)) as c:
        frames = [(f.pts, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        others = [(s.type, sum(1 for p in c.demux(s) if p.size)) for s in c.streams if s.type != "video"]
    return [f for _, f in frames], [p for p, _ in frames], others


def assert_same_video(a: Path, b: Path) -> None:
    """Same pixels, pts and other streams. Meant for lossless outputs, whose pixels are the
    restored frames themselves whatever a lossy encoder decides (x264's AVX-512 code makes CRF
    outputs differ between runs, which writer.py avoids and test_io checks on its own)."""
    fa, pa, oa = contents(a)
    fb, pb, ob = contents(b)
    assert pa == pb
    assert oa == ob and oa
    assert len(fa) == len(fb) and all(np.array_equal(x, y) for x, y in zip(fa, fb))


def single_pass(source: Path, target: Path, values: dict) -> Path:
    """The single-pass vsdeblur-stream output for one file, the reference batch must equal."""
    stream(source, target, values, progress=False)
    return target


# ---- VapourSynth ------------------------------------------------------------------------------


def to_clip(frames: list[np.ndarray], fmt: int, props: dict[int, dict] | None = None) -> vs.VideoNode:
    """A clip of format `fmt` holding H x W x 3 numpy frames, with per-frame props."""
    height, width = frames[0].shape[:2]
    blank = vs.core.std.BlankClip(width=width, height=height, format=fmt, length=len(frames))

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        for p in range(3):
            np.copyto(np.asarray(out[p]), frames[n][..., p])
        out.props.update((props or {}).get(n, {}))
        return out

    return blank.std.ModifyFrame(blank, fill)


def to_arrays(clip: vs.VideoNode) -> list[np.ndarray]:
    """Every frame of a clip as an H x W x planes numpy array."""
    return [np.stack([np.asarray(f[p]) for p in range(f.format.num_planes)], axis=-1) for f in clip.frames()]


def restore(engine: Deblurrer, padded: list, frames: list[np.ndarray], t: int) -> np.ndarray:
    """Frame t of `frames` (one scene) as the VapourSynth filter restores it: the engine's stage 2
    on t's window of padded stage-1 images (`padded`: engine.stage1_padded of every frame)."""
    window = window_indices(t, engine.radius, 0, len(frames) - 1)
    return engine.stage2_padded([padded[j] for j in window], window, frames[t])


# ---- weights ----------------------------------------------------------------------------------


def make_weights(path: Path, preset: str = "tiny", stages: tuple[int, ...] = (1, 2), seed: int = 0, prior: bool = False) -> Path:
    """Untrained networks of a preset (random initialisation from `seed`) in a real weights file;
    `prior`: its stage 1 reads the motion prior."""
    import dataclasses

    import torch

    from vsdeblur.models import build_model, get_preset
    from vsdeblur.weights import save_weights

    torch.manual_seed(seed)
    cfg = get_preset(preset)
    if prior:
        cfg = dataclasses.replace(cfg, stage1=dataclasses.replace(cfg.stage1, prior=True))
    return save_weights(path, cfg, {s: build_model(cfg, s) for s in stages}, recipe={"note": "untrained, for tests"})


def panning_frames(count: int, step: int = 3, width: int = 96, height: int = 64, blur: int = 0) -> list[np.ndarray]:
    """uint8 H x W x 3 frames of a camera panning right by `step` pixels a frame over the first
    frame of the bundled clip: real texture, known motion. `blur`: the exposure's length in
    pixels (the shutter open for blur / step of the interval): that many positions one pixel
    apart averaged in linear light, a box `blur` pixels long."""
    with av.open(str(SAMPLE_CLIP)) as container:
        picture = next(container.decode(video=0)).to_ndarray(format="rgb24")
    top = (picture.shape[0] - height) // 2
    linear = (picture[top : top + height].astype(np.float64) / 255) ** 2.2
    frames = []
    for i in range(count):
        start = i * step + blur // 2
        exposure = np.mean([linear[:, start + s : start + s + width] for s in range(max(blur, 1))], axis=0)
        frames.append(np.round(exposure ** (1 / 2.2) * 255).astype(np.uint8))
    return frames


def overflowing_weights(path: Path) -> Path:
    """Finite weights (they load) so large that the network's output is NaN."""
    import torch

    from vsdeblur.models import build_model, get_preset
    from vsdeblur.weights import save_weights

    torch.manual_seed(0)
    cfg = get_preset("tiny")
    models = {s: build_model(cfg, s) for s in (1, 2)}
    with torch.no_grad():
        for p in models[1].parameters():
            p.mul_(1e30)
    return save_weights(path, cfg, models)


# ---- the command line -------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """`vsdeblur ARGS` as a user runs it, in a subprocess with this checkout's vsdeblur."""
    return subprocess.run(_cli(*args), capture_output=True, text=True, env=_cli_env(), timeout=600)


def run_stream(*args: str) -> subprocess.CompletedProcess:
    """`vsdeblur-stream ARGS` as a user runs it, in a subprocess with this checkout's vsdeblur."""
    command = [sys.executable, "-m", "vsdeblur.stream", *args]
    return subprocess.run(command, capture_output=True, text=True, env=_cli_env(), timeout=600)


def batch_cli(*args: str, **kwargs) -> subprocess.Popen:
    """`vsdeblur batch ARGS` started in a subprocess (this checkout's vsdeblur), not waited for."""
    return subprocess.Popen(_cli("batch", *args), env=_cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "vsdeblur.cli", *args]


def _cli_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO))


def disorder(path: Path) -> float:
    """How far (seconds) a packet is stored after a packet of a later time: the worst case."""
    latest, worst = float("-inf"), 0.0
    with av.open(str(path)) as c:
        for packet in c.demux():
            when = packet.dts if packet.dts is not None else packet.pts
            if packet.size and when is not None:
                latest = max(latest, float(when * packet.time_base))
                worst = max(worst, latest - float(when * packet.time_base))
    return worst


def spread_clip(path: Path, times_ms: list[int]) -> Path:
    """Few video frames over a long time, with AAC audio throughout, stored in time order."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25, options={"preset": "ultrafast", "tune": "zerolatency"})
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.time_base = video.codec_context.time_base = Fraction(1, 1000)
        sound = out.add_stream("aac", rate=48000, layout="mono")
        samples = (times_ms[-1] + 40) * 48
        tone = (0.2 * np.sin(np.arange(samples) * 0.05)).astype(np.float32)[None]
        events = [(t / 1000, 0, i) for i, t in enumerate(times_ms)] + [(s / 48000, 1, s) for s in range(0, samples, 1024)]
        for _, kind, value in sorted(events):
            if kind == 0:
                frame = av.VideoFrame.from_ndarray(pattern(64, 48, value), format="rgb24").reformat(format="yuv420p")
                frame.pts, frame.time_base = times_ms[value], Fraction(1, 1000)
                out.mux(video.encode(frame))
            else:
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, value:value + 1024]), format="fltp", layout="mono")
                af.sample_rate, af.pts, af.time_base = 48000, value, Fraction(1, 48000)
                out.mux(sound.encode(af))
        out.mux(video.encode(None))
        out.mux(sound.encode(None))
    return path
