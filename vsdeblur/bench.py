"""Throughput benchmarks behind `vsdeblur bench`: the bare networks against the engine on the
same frames, so that the engine's own cost (conversion, padding, windowing, copies) shows."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from vsdeblur.batch import resolved_settings, run_batch
from vsdeblur.engine import Deblurrer
from vsdeblur.engine.device import precision_name
from vsdeblur.errors import UsageError
from vsdeblur.io import Colour, Reader, VideoInfo, Writer
from vsdeblur.models import build_model, get_preset
from vsdeblur.stream import stream
from vsdeblur.metrics import psnr
from vsdeblur.weights import save_weights


@dataclass
class Measurement:
    name: str
    frames: int
    seconds: float

    @property
    def ms_per_frame(self) -> float:
        return 1000 * self.seconds / self.frames

    @property
    def fps(self) -> float:
        return self.frames / self.seconds

    def as_dict(self) -> dict:
        return {"name": self.name, "frames": self.frames, "seconds": round(self.seconds, 4),
                "ms_per_frame": round(self.ms_per_frame, 3), "fps": round(self.fps, 4)}


def synthetic_frames(width: int, height: int, count: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth random frames (noise is not what a deblurrer sees, but costs the same)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    big = base.repeat(8, 0).repeat(8, 1)[:height, :width]
    return [np.roll(big, 3 * i, axis=1).copy() for i in range(count)]


def clip_frames(path: Path, count: int) -> list[np.ndarray]:
    """The first `count` frames of a video as 8-bit RGB, converted as the pipeline converts
    them: real pictures, for measurements whose result depends on the content (precision)."""
    from vsdeblur.evaluate import decoded

    if not path.is_file():
        raise UsageError(f"clip not found: {path}")
    frames = list(decoded(path, count))
    if not frames:
        raise UsageError(f"{path} has no video frames")
    return frames


def _timed(device: torch.device, work: Callable[[], None]) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def compare(device: torch.device, runs: dict[str, Callable[[], None]], frames: int, rounds: int = 3) -> list[Measurement]:
    """Time each run `rounds` times, interleaved so that a passing load on the machine hits
    all of them alike, after one warm-up each; report each run's median."""
    for work in runs.values():
        work()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, work in runs.items():
            times[name].append(_timed(device, work))
    return [Measurement(name, frames, float(np.median(t))) for name, t in times.items()]


def engine_for(preset: str, weights: str | None, stage: int, **options) -> Deblurrer:
    """The engine over the given weights, or over untrained weights of the preset (speed does
    not depend on the values)."""
    if weights is not None:
        return Deblurrer(weights=weights, stage=stage, **options)
    return Deblurrer.from_models(get_preset(preset), untrained_models(preset, stage), **options)


def untrained_models(preset: str, stage: int) -> dict[int, torch.nn.Module]:
    """The preset's networks up to `stage`, initialised from seed 0: the same every call."""
    cfg = get_preset(preset)
    torch.manual_seed(0)
    return {s: build_model(cfg, s) for s in range(1, stage + 1)}


def precision_engines(preset: str, weights: str | None, stage: int, precisions: str, **options) -> dict[str, Deblurrer]:
    """One engine per precision of a comma-separated list, keyed by a label that shows what
    `auto` chose ("auto (bf16)"); the networks are the same for all."""
    engines: dict[str, Deblurrer] = {}
    for token in (t.strip() for t in precisions.split(",")):
        engine = engine_for(preset, weights, stage, precision=token, **options)
        label = f"auto ({precision_name(engine.dtype)})" if token == "auto" else token
        if label in engines:
            raise UsageError(f"precision {token!r} is listed twice in {precisions!r}")
        engines[label] = engine
    return engines


def precision_runs(engines: dict[str, Deblurrer], frames: list[np.ndarray]) -> dict[str, Callable[[], None]]:
    """The bare networks and the engine at each precision; with more than one precision each
    name ends in its label, e.g. "engine (numpy in, numpy out) [auto (bf16)]"."""
    runs: dict[str, Callable[[], None]] = {}
    for label, engine in engines.items():
        runs[_run_name("bare networks", label, engines)] = bare_forward(engine, frames)
        runs[_run_name("engine (numpy in, numpy out)", label, engines)] = engine_run(engine, frames)
    return runs


def _run_name(what: str, label: str, engines: dict[str, Deblurrer]) -> str:
    return f"{what} [{label}]" if len(engines) > 1 else what


@dataclass
class PrecisionComparison:
    """One precision against the reference (the last one listed) on the same frames."""

    label: str
    reference: str
    speedup: float  # engine throughput over the reference engine's
    psnr_db: float | None  # PSNR of all output frames together from the reference's; None: identical
    max_difference: int  # largest difference of any output value, in 8-bit code values

    def as_dict(self) -> dict:
        return {"precision": self.label, "reference": self.reference, "engine_speedup": round(self.speedup, 4),
                "psnr_db": None if self.psnr_db is None else round(self.psnr_db, 2), "max_difference": self.max_difference}

    def line(self) -> str:
        quality = "identical output" if self.psnr_db is None else (
            f"output {self.psnr_db:.1f} dB PSNR from {self.reference}'s, max difference {self.max_difference} code value(s)")
        return f"{self.label} against {self.reference}: engine {self.speedup:.2f}x the throughput; {quality}"


def compare_precisions(engines: dict[str, Deblurrer], frames: list[np.ndarray], measurements: list[Measurement]) -> list[PrecisionComparison]:
    """Each precision but the last against the last: the engines' throughput from
    `measurements` (of `precision_runs`) and their outputs on `frames`, run once more."""
    labels = list(engines)
    reference = labels[-1]
    fps = {m.name: m.fps for m in measurements}
    engine_fps = {label: fps[_run_name("engine (numpy in, numpy out)", label, engines)] for label in labels}
    expected = np.stack(list(engines[reference].frames(frames)))
    comparisons = []
    for label in labels[:-1]:
        outputs = np.stack(list(engines[label].frames(frames)))
        score = psnr(outputs, expected)
        difference = int(np.abs(outputs.astype(np.int16) - expected.astype(np.int16)).max())
        comparisons.append(PrecisionComparison(label, reference, engine_fps[label] / engine_fps[reference],
                                               None if score == float("inf") else score, difference))
    return comparisons


def bare_forward(engine: Deblurrer, frames: list[np.ndarray]) -> Callable[[], None]:
    """The networks alone on tensors already on the device: stage 1 per frame and, for stage 2,
    the encoder per frame plus one aggregation per frame with the window's pyramids reused.
    They run as the engine runs them (compiled, in its precision)."""
    inputs = [engine._to_tensor(f) for f in frames]
    model1 = engine._stage1_net

    @torch.inference_mode()
    def work() -> None:
        previous = None
        for x in inputs:
            s1 = model1(x).clamp_(-1, 1)
            if engine.stage == 2:
                pyramid = engine._encode(s1)
                r = engine.radius  # a window of 2r+1 pyramids, the earlier ones from the previous frame
                engine._aggregate([previous or pyramid] * r + [pyramid] * (r + 1), s1)
                previous = pyramid

    return work


def engine_run(engine: Deblurrer, frames: list[np.ndarray]) -> Callable[[], None]:
    """The whole engine: numpy frames in, numpy frames out."""
    return lambda: [None for _ in engine.frames(frames)]


def vapoursynth_run(engine: Deblurrer, frames: list[np.ndarray], num_streams: int = 1) -> Callable[[], None]:
    """The VapourSynth graph of core.deblur.Atrous over the same engine and frames (RGB24, so
    no format conversion is timed). A fresh graph per run: the core's frame cache and the
    engine's encoder cache must not carry results over from the previous round."""
    import vapoursynth as vs

    from vsdeblur.vs import graph

    height, width = frames[0].shape[:2]
    blank = vs.core.std.BlankClip(width=width, height=height, format=vs.RGB24, length=len(frames), keep=True)

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        for p in range(3):
            np.copyto(np.asarray(out[p]), frames[n][..., p])
        return out

    source = blank.std.ModifyFrame(blank, fill)
    options = {"num_streams": num_streams, "scene_props": True, "scene_threshold": engine.scene_threshold or 0.0}

    def work() -> None:
        for _ in graph(source, engine, options).frames():
            pass

    return work


def stream_runs(engine: Deblurrer, frames: list[np.ndarray], workdir: Path) -> dict[str, Callable[[], None]]:
    """vsdeblur-stream against the engine alone on the same decoded frames: the frames are
    encoded losslessly (FFV1) into a clip; the stream run decodes it, restores and encodes
    with the default encoder settings, so the ratio shows what decode and encode cost on top
    of the model when they run in their own threads."""
    clip = _write_clip(workdir / "bench.mkv", frames)
    with Reader(clip) as reader:
        decoded = [f.rgb for f in reader.frames()]
    target = workdir / "out.mkv"
    return {
        "engine on the decoded frames": engine_run(engine, decoded),
        "stream (decode + engine + encode)": lambda: stream(clip, target, engine=engine, overwrite=True, progress=False),
    }


def batch_runs(engine: Deblurrer, frames: list[np.ndarray], files: int, workdir: Path, settings: dict) -> dict[str, Callable[[], None]]:
    """`files` short clips (the same frames, each its own file) restored three ways with the
    same engine settings and the default encoder: vsdeblur-stream on one file after another
    (one engine), and `vsdeblur batch` with the local and with the Ray executor, each into a
    fresh output folder without resuming. `settings` are the batch job's values (ENGINE,
    ENCODE, BATCH); its weights must be the engine's, saved to a file (see `saved_weights`).
    The Ray executor needs a cluster already started (`local_ray`), so that its start-up is
    not timed."""
    clips = workdir / "clips"
    clips.mkdir()
    sources = [_write_clip(clips / f"clip{i}.mkv", frames) for i in range(files)]
    streamed = workdir / "stream"
    streamed.mkdir()

    def one_after_another() -> None:
        for source in sources:
            stream(source, streamed / source.name, engine=engine, overwrite=True, progress=False)

    def batch(executor: str) -> Callable[[], None]:
        output = workdir / executor

        def work() -> None:
            shutil.rmtree(output, ignore_errors=True)
            report = run_batch([str(clips)], output, {**settings, "executor": executor}, resume=False)
            if not report.ok:
                raise RuntimeError(f"batch ({executor}) failed: {report.table()}")

        return work

    return {"stream, one file after another": one_after_another, "batch, local executor": batch("local"),
            "batch, ray executor": batch("ray")}


def batch_comparison(engine: Deblurrer, frames: list[np.ndarray], files: int, weights: Path | str, engine_options: dict, rounds: int) -> list[Measurement]:
    """`batch_runs` timed on a local Ray cluster of 2 CPUs. Batch workers load weights by path:
    given a preset name instead, its untrained networks (the engine's) are saved to a file."""
    with tempfile.TemporaryDirectory() as workdir, local_ray(cpus=2):
        path = weights if isinstance(weights, Path) else saved_weights(weights, engine_options["stage"], Path(workdir) / "weights.safetensors")
        runs = batch_runs(engine, frames, files, Path(workdir), batch_settings(path, **engine_options))
        return compare(engine.device, runs, files * len(frames), rounds)


def saved_weights(preset: str, stage: int, path: Path) -> Path:
    """`engine_for`'s untrained networks as a weights file, for runs that load weights by path
    (batch workers); the engine's own modules are already prepared for inference."""
    return save_weights(path, get_preset(preset), untrained_models(preset, stage), recipe={"note": "untrained, for benchmarks"})


def batch_settings(weights: Path, **engine_options) -> dict:
    """A batch job's values: the defaults with these weights and engine options."""
    return resolved_settings(None, {"weights": weights, **engine_options})


@contextmanager
def local_ray(cpus: int) -> Iterator[None]:
    """A local Ray cluster for the duration, without the dashboard (it only costs start-up),
    listening on 127.0.0.1 only, as the batch executor starts it."""
    import ray

    from vsdeblur.batch.executors import start_local_ray

    start_local_ray(num_cpus=cpus)
    try:
        yield
    finally:
        ray.shutdown()


def _write_clip(path: Path, frames: list[np.ndarray]) -> Path:
    """The frames as a lossless (FFV1) 25 fps clip."""
    with Writer(path, _video_info(frames), {"codec": "ffv1", "pix_fmt": "yuv420p"}, overwrite=True) as writer:
        for i, frame in enumerate(frames):
            writer.write(frame, i)
    return path


def _video_info(frames: list[np.ndarray]) -> VideoInfo:
    """A 25 fps, BT.709 limited-range 8-bit stream description for synthetic frames."""
    h, w = frames[0].shape[:2]
    return VideoInfo(w, h, "yuv420p", 8, "rgb24", Fraction(1, 25), Fraction(25), len(frames), len(frames) / 25,
                     Colour(1, 1, 1, 1), 0, "rawvideo")
