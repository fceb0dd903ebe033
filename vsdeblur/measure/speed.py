"""Throughput measurements behind `vsdeblur bench`, through public interfaces only: the bare
networks (built from the model API and run on ready tensors) against the engine
(`Deblurrer.frames`, numpy in and out) on the same frames, so that the engine's own cost
(conversion, padding, windowing, copies) shows; optionally vsdeblur-stream, the VapourSynth
graph and batch jobs. `vsdeblur bench --suite gpu` (vsdeblur.measure.suite) is built from the
same parts.

Nothing here imports PyAV, VapourSynth or Ray at module level: the measurements that need them
import them when they run, so that the networks and the engine can be measured on a machine
without them (`python -m vsdeblur bench --suite gpu` on a bare CUDA machine).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vsdeblur.config import EngineSettings
from vsdeblur.engine import Deblurrer
from vsdeblur.backends.runtime import UnsupportedPrecision
from vsdeblur.engine.prior_inputs import Intervals, frame_shutter, motion_of, prior_planes
from vsdeblur.engine.tiling import pad_to_multiple
from vsdeblur.engine.window import luma
from vsdeblur.errors import UsageError
from vsdeblur.models import build_model, get_preset
from vsdeblur.weights import resolve_weights, save_weights

Run = Callable[[], None]
BARE = "bare networks"
ENGINE_RUN = "engine (numpy in, numpy out)"


@dataclass
class Measurement:
    name: str
    frames: int
    seconds: float  # median of the timed rounds
    first_seconds: float | None = None  # the untimed warm-up pass: compilation and caches
    details: dict[str, Any] = field(default_factory=dict)  # what was measured, for the JSON

    @property
    def ms_per_frame(self) -> float:
        return 1000 * self.seconds / self.frames

    @property
    def fps(self) -> float:
        return self.frames / self.seconds

    def as_dict(self) -> dict:
        first = {} if self.first_seconds is None else {"first_pass_seconds": round(self.first_seconds, 4)}
        return {"name": self.name, "frames": self.frames, "seconds": round(self.seconds, 4),
                "ms_per_frame": round(self.ms_per_frame, 3), "fps": round(self.fps, 4), **first, **self.details}


# ---- material ---------------------------------------------------------------------------------

def synthetic_frames(width: int, height: int, count: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth random frames (noise is not what a deblurrer sees, but costs the same)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    big = base.repeat(8, 0).repeat(8, 1)[:height, :width]
    return [np.roll(big, 3 * i, axis=1).copy() for i in range(count)]


def clip_frames(path: Path, count: int, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """The first `count` frames of a video as 8-bit RGB, converted as the pipeline converts
    them: real pictures, for measurements whose result depends on the content (precision,
    motion); scaled to `size` (width, height) where one is given."""
    from vsdeblur.evaluate import decoded  # PyAV
    from vsdeblur.io.images import resize_to  # PyAV too (vsdeblur.io)

    if not path.is_file():
        raise UsageError(f"clip not found: {path}")
    frames = list(decoded(path, count))
    if not frames:
        raise UsageError(f"{path} has no video frames")
    if size is not None and size != (frames[0].shape[1], frames[0].shape[0]):
        scaled = resize_to(np.stack(frames), size[1], size[0])
        frames = list(np.round(scaled * 255).astype(np.uint8))
    return frames


def model_file(weights: Path | None, preset: str | None, workdir: Path) -> Path | None:
    """The weights to measure: the file given; else, for a preset, its untrained networks (both
    stages, seed 0) saved into `workdir` (speed does not depend on the values); else None, the
    shipped default."""
    if weights is not None or preset is None:
        return weights
    cfg = get_preset(preset)
    torch.manual_seed(0)
    models = {s: build_model(cfg, s) for s in (1, 2)}
    return save_weights(workdir / f"untrained-{preset}.safetensors", cfg, models, recipe={"note": "untrained, for benchmarks"})


# ---- timing -----------------------------------------------------------------------------------

def _timed(device: torch.device, work: Run) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def compare(device: torch.device, runs: dict[str, Run], frames: int, rounds: int = 3) -> list[Measurement]:
    """Time each run `rounds` times, interleaved so that a passing load on the machine hits
    all of them alike, after one warm-up each (timed apart: it holds compilation); report
    each run's median."""
    first = {name: _timed(device, work) for name, work in runs.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, work in runs.items():
            times[name].append(_timed(device, work))
    return [Measurement(name, frames, float(np.median(t)), first[name]) for name, t in times.items()]


def peak_memory(device: torch.device, work: Run) -> int | None:
    """Bytes the CUDA allocator held at most while `work` ran; None off CUDA."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    work()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)


# ---- the bare networks ------------------------------------------------------------------------

@dataclass
class BareNetworks:
    """A model's networks as the engine runs them (folded, on its device, in its precision
    and layout, compiled or not), without the engine around them."""

    stage1: Callable[[torch.Tensor], torch.Tensor]
    encode: Callable | None  # stage 2: frame -> pyramid
    aggregate: Callable | None  # stage 2: (window of pyramids, centre image) -> image
    radius: int
    multiple: int
    device: torch.device
    layout: torch.memory_format


def bare_networks(weights: Path | None, engine: Deblurrer) -> BareNetworks:
    """The networks of `weights` (None: the shipped default) as `engine` runs them: its stage,
    device, precision, memory layout and compilation, by PyTorch or, for a graph backend, by
    that backend's runner of the exported graphs."""
    loaded = resolve_weights(weights)
    stage = engine.stage
    runner = engine.runtime.runner(loaded, {s: loaded.build(s) for s in range(1, stage + 1)}, engine.settings.compile)
    return BareNetworks(
        stage1=runner.stage1,
        encode=runner.encode if stage == 2 else None,
        aggregate=runner.aggregate if stage == 2 else None,
        radius=loaded.preset.stage2.radius if stage == 2 else 0,
        multiple=loaded.preset.multiple(stage),
        device=engine.device,
        layout=runner.memory_format,
    )


def ready_tensor(frame: np.ndarray, nets: BareNetworks) -> torch.Tensor:
    """An 8-bit H x W x 3 frame as the networks take it: 1 x 3 x H' x W' in [-1, 1] on the
    device, reflect-padded to the model's multiple, in the networks' layout."""
    x = torch.from_numpy(np.ascontiguousarray(frame)).to(nets.device).permute(2, 0, 1)[None].float() * (2 / 255) - 1
    return pad_to_multiple(x.contiguous(memory_format=nets.layout), nets.multiple)


def bare_forward(nets: BareNetworks, frames: list[np.ndarray]) -> Run:
    """The networks alone on tensors already on the device, the once-per-frame work of the
    engine's steady state: stage 1 per frame and, for stage 2, the encoder per frame plus one
    aggregation over a window of 2r+1 distinct pyramids (the neighbours' are encoded once,
    beforehand: a window that repeats a tensor would make a compiled graph recompile)."""
    inputs = [ready_tensor(f, nets) for f in frames]
    with torch.inference_mode():
        neighbours = [nets.encode(nets.stage1(inputs[0]).clamp_(-1, 1)) for _ in range(2 * nets.radius)] if nets.encode else []

    @torch.inference_mode()
    def work() -> None:
        for x in inputs:
            s1 = nets.stage1(x).clamp_(-1, 1)
            if nets.encode is not None:
                window = neighbours[:nets.radius] + [nets.encode(s1)] + neighbours[nets.radius:]
                nets.aggregate(window, s1)

    return work


# ---- the engine and the doors onto it ----------------------------------------------------------

PRIOR_MOTION = "motion prior: motion"
PRIOR_SHUTTER = "motion prior: motion + auto shutter"
PRIOR_ALL = "motion prior: all (+ deconvolution, planes)"


def prior_runs(frames: list[np.ndarray], device: torch.device) -> dict[str, Run]:
    """What a stage 1 that reads the motion prior adds to a frame, as the engine computes it
    along a stream (engine.prior_inputs: each frame prepared and each interval measured once):
    the motion, then the auto shutter too, then all of it."""
    pictures = [torch.from_numpy(f).to(device).permute(2, 0, 1).float() / 255 for f in frames]

    def motions() -> list:
        intervals = Intervals()
        prepared = [intervals.prepared(f, lambda f=f: torch.from_numpy(luma(f.transpose(2, 0, 1))).to(device)) for f in frames]
        last = len(prepared) - 1
        return [motion_of(prepared[t - 1] if t else None, p, prepared[t + 1] if t < last else None, intervals.pair)
                for t, p in enumerate(prepared)]

    def shutters() -> None:
        for picture, motion in zip(pictures, motions(), strict=True):
            frame_shutter(picture, motion, "auto")

    def everything() -> None:
        for picture, motion in zip(pictures, motions(), strict=True):
            prior_planes(picture, motion, "auto")

    return {PRIOR_MOTION: motions, PRIOR_SHUTTER: shutters, PRIOR_ALL: everything}


def engine_run(engine: Deblurrer, frames: list[np.ndarray], cuts: list[int] | None = None) -> Run:
    """The whole engine: numpy frames in, numpy frames out."""
    return lambda: [None for _ in engine.frames(frames, cuts=cuts)]


def precision_label(token: str, engine: Deblurrer) -> str:
    """A precision as asked for, with what `auto` chose: "auto (bf16)"."""
    return f"auto ({engine.runtime.precision})" if token == "auto" else token


def backend_label(token: str, engine: Deblurrer) -> str:
    """A backend as asked for, with what `auto` chose: "auto (openvino)"."""
    return f"auto ({engine.runtime.backend})" if token == "auto" else token


def vapoursynth_run(engine: Deblurrer, frames: list[np.ndarray], num_streams: int = 1) -> Run:
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
    def work() -> None:
        for _ in graph(source, engine, num_streams).frames():
            pass

    return work


def stream_runs(engine: Deblurrer, frames: list[np.ndarray], workdir: Path) -> dict[str, Run]:
    """vsdeblur-stream against the engine alone on the same decoded frames: the frames are
    encoded losslessly (FFV1) into a clip; the stream run decodes it, restores and encodes
    with the default encoder settings, so the ratio shows what decode and encode cost on top
    of the model when they run in their own threads."""
    from vsdeblur.io import Reader
    from vsdeblur.stream import stream

    clip = write_clip(workdir / "bench.mkv", frames)
    with Reader(clip) as reader:
        decoded = [f.rgb for f in reader.frames()]
    target = workdir / "out.mkv"
    return {
        "engine on the decoded frames": engine_run(engine, decoded),
        "stream (decode + engine + encode)": lambda: stream(clip, target, engine=engine, overwrite=True, progress=False),
    }


def batch_runs(engine: Deblurrer, frames: list[np.ndarray], files: int, workdir: Path, settings: dict) -> dict[str, Run]:
    """`files` short clips (the same frames, each its own file) restored three ways with the
    same engine settings and the default encoder: vsdeblur-stream on one file after another
    (one engine), and `vsdeblur batch` with the local and with the Ray executor, each into a
    fresh output folder without resuming. `settings` are the batch job's values (ENGINE,
    ENCODE, BATCH); its weights must be the engine's file. The Ray executor needs a cluster
    already started (`local_ray`), so that its start-up is not timed."""
    from vsdeblur.batch import run_batch
    from vsdeblur.stream import stream

    clips = workdir / "clips"
    clips.mkdir()
    sources = [write_clip(clips / f"clip{i}.mkv", frames) for i in range(files)]
    streamed = workdir / "stream"
    streamed.mkdir()

    def one_after_another() -> None:
        for source in sources:
            stream(source, streamed / source.name, engine=engine, overwrite=True, progress=False)

    def batch(executor: str) -> Run:
        output = workdir / executor

        def work() -> None:
            shutil.rmtree(output, ignore_errors=True)
            report = run_batch([str(clips)], output, {**settings, "executor": executor}, resume=False)
            if not report.ok:
                raise RuntimeError(f"batch ({executor}) failed: {report.table()}")

        return work

    return {"stream, one file after another": one_after_another, "batch, local executor": batch("local"),
            "batch, ray executor": batch("ray")}


def batch_comparison(engine: Deblurrer, frames: list[np.ndarray], files: int, engine_options: dict, rounds: int) -> list[Measurement]:
    """`batch_runs` timed on a local Ray cluster of 2 CPUs; `engine_options` are the engine's
    ENGINE values, its weights a file (batch workers load weights by path)."""
    from vsdeblur.batch import resolved_settings

    with tempfile.TemporaryDirectory() as workdir, local_ray(cpus=2):
        runs = batch_runs(engine, frames, files, Path(workdir), resolved_settings(None, engine_options))
        return compare(engine.device, runs, files * len(frames), rounds)


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


def write_clip(path: Path, frames: list[np.ndarray]) -> Path:
    """The frames as a lossless (FFV1) 25 fps, BT.709 limited-range 8-bit clip."""
    from vsdeblur.io import Colour, VideoInfo, Writer

    h, w = frames[0].shape[:2]
    info = VideoInfo(w, h, "yuv420p", 8, "rgb24", Fraction(1, 25), Fraction(25), len(frames), len(frames) / 25,
                     Colour(1, 1, 1, 1), 0, "rawvideo")
    with Writer(path, info, {"codec": "ffv1", "pix_fmt": "yuv420p"}, overwrite=True) as writer:
        for i, frame in enumerate(frames):
            writer.write(frame, i)
    return path


# ---- `vsdeblur bench`: one configuration, or several (precisions, backends) compared ------------

@dataclass
class Comparison:
    """One configuration (a precision, a backend or both) against the reference (the last one
    listed) on the same frames."""

    label: str
    reference: str
    speedup: float  # engine throughput over the reference engine's
    psnr_db: float | None  # PSNR of all output frames together from the reference's; None: identical
    max_difference: int  # largest difference of any output value, in 8-bit code values

    def as_dict(self) -> dict:
        return {"configuration": self.label, "reference": self.reference, "engine_speedup": round(self.speedup, 4),
                "psnr_db": None if self.psnr_db is None else round(self.psnr_db, 2), "max_difference": self.max_difference}

    def line(self) -> str:
        quality = "identical output" if self.psnr_db is None else (
            f"output {self.psnr_db:.1f} dB PSNR from {self.reference}'s, max difference {self.max_difference} code value(s)")
        return f"{self.label} against {self.reference}: engine {self.speedup:.2f}x the throughput; {quality}"


def compare_configurations(engines: dict[str, Deblurrer], frames: list[np.ndarray], engine_fps: dict[str, float]) -> list[Comparison]:
    """Each configuration but the last against the last: their engines' throughput
    (`engine_fps` by label) and their outputs on `frames`, run once more."""
    from vsdeblur.metrics import psnr  # imports PyAV (for VMAF)

    labels = list(engines)
    reference = labels[-1]
    expected = np.stack(list(engines[reference].frames(frames)))
    comparisons = []
    for label in labels[:-1]:
        outputs = np.stack(list(engines[label].frames(frames)))
        score = psnr(outputs, expected)
        difference = int(np.abs(outputs.astype(np.int16) - expected.astype(np.int16)).max())
        comparisons.append(Comparison(label, reference, engine_fps[label] / engine_fps[reference],
                                      None if score == float("inf") else score, difference))
    return comparisons


def listed(values: dict[str, Any], name: str) -> list[str]:
    """The comma-separated tokens of a BENCH_ENGINE list option, each once."""
    tokens = [t.strip() for t in values[name].split(",")]
    for token in tokens:
        if tokens.count(token) > 1:
            raise UsageError(f"{name} {token!r} is listed twice in {values[name]!r}")
    return tokens


def configuration_engines(values: dict[str, Any], weights: Path | None, echo: Callable[[str], None]) -> dict[str, Deblurrer]:
    """One engine per backend and precision of the comma-separated --backend and --precision
    (every pair), keyed by a label that names what varies and what `auto` chose; the other
    engine options and the networks are the same for all. A pair that a backend cannot
    compute (ONNX Runtime in bf16) is skipped with a line saying why, when other pairs remain."""
    backends, precisions = listed(values, "backend"), listed(values, "precision")
    engines: dict[str, Deblurrer] = {}
    skipped: list[str] = []
    for backend in backends:
        for precision in precisions:
            try:
                engine = Deblurrer(EngineSettings.of({**values, "weights": weights, "backend": backend, "precision": precision}, "command line"))
            except UnsupportedPrecision as exc:
                if len(backends) == 1:
                    raise
                skipped.append(f"skipped {backend} {precision}: {exc}")
                continue
            parts = ([backend_label(backend, engine)] if len(backends) > 1 else []) + (
                [precision_label(precision, engine)] if len(precisions) > 1 or len(backends) == 1 else [])
            engines[" ".join(parts)] = engine
    if not engines:
        raise UsageError("; ".join(skipped))
    for line in skipped:
        echo(line)
    return engines


@dataclass
class BenchResult:
    """What `vsdeblur bench` measured for one configuration."""

    engines: dict[str, Deblurrer]  # by configuration label; the first ran every other measurement
    width: int
    height: int
    measurements: list[Measurement]
    ratios: dict[str, float]  # e.g. engine_overhead, stream_ratio, by their JSON keys
    comparisons: list[Comparison]


def measure_configuration(values: dict[str, Any], weights: Path | None, clip: list[np.ndarray],
                          echo: Callable[[str], None]) -> BenchResult:
    """The bare networks and the engine in each configuration, then what the BENCH options ask
    for, in the first."""
    engines = configuration_engines(values, weights, echo)
    first, engine = next(iter(engines.items()))
    rounds = values["rounds"]

    def named(what: str, label: str) -> str:
        return f"{what} [{label}]" if len(engines) > 1 else what

    runs: dict[str, Run] = {}
    for label, e in engines.items():
        runs[named(BARE, label)] = bare_forward(bare_networks(weights, e), clip)
        runs[named(ENGINE_RUN, label)] = engine_run(e, clip)
    if values["vapoursynth"]:
        runs["vapoursynth (core.deblur graph)"] = vapoursynth_run(engine, clip, values["num_streams"])
    if values["prior"]:
        runs.update(prior_runs(clip, engine.device))
    measurements = compare(engine.device, runs, len(clip), rounds)
    by_name = {m.name: m for m in measurements}
    full = by_name[named(ENGINE_RUN, first)]
    ratios = {"engine_overhead": full.seconds / by_name[named(BARE, first)].seconds - 1}
    comparisons = []
    if len(engines) > 1:
        comparisons = compare_configurations(engines, clip, {label: by_name[named(ENGINE_RUN, label)].fps for label in engines})
    if values["prior"]:
        ratios["prior_share"] = by_name[PRIOR_ALL].seconds / full.seconds
    if values["vapoursynth"]:
        ratios["vapoursynth_relative_throughput"] = full.seconds / by_name["vapoursynth (core.deblur graph)"].seconds
    if values["stream"]:
        with tempfile.TemporaryDirectory() as workdir:
            streamed = compare(engine.device, stream_runs(engine, clip, Path(workdir)), len(clip), rounds)
        measurements += streamed
        ratios["stream_ratio"] = streamed[1].fps / streamed[0].fps
    if values["batch"]:
        # batch workers load the weights by path, in the first configuration listed
        options = engine.settings.replace(weights=weights or resolve_weights(None).path, stage=engine.stage,
                                          precision=engine.runtime.precision, backend=engine.runtime.backend).as_dict()
        batched = batch_comparison(engine, clip, values["batch_files"], options, rounds)
        measurements += batched
        ratios["batch_local_ratio"] = batched[1].fps / batched[0].fps
        ratios["batch_ray_cost"] = batched[2].seconds / batched[1].seconds - 1
    height, width = clip[0].shape[:2]
    return BenchResult(engines, width, height, measurements, ratios, comparisons)


RATIO_LINES = {
    "prior_share": "motion prior (all of it) / the engine's time: {:.1f} %",
    "vapoursynth_relative_throughput": "vapoursynth throughput relative to the engine: {:.1f} %",
    "stream_ratio": "stream fps / engine-only fps: {:.1f} %",
    "batch_local_ratio": "batch local fps / stream one after another fps: {:.1f} %",
    "batch_ray_cost": "batch ray time over batch local time: {:+.1f} %",
}


def run_bench(values: dict[str, Any], given: set[str], echo: Callable[[str], None]) -> dict[str, Any]:
    """`vsdeblur bench` without --suite: `values` are the resolved BENCH_ENGINE and BENCH
    options (size as (width, height)), `given` the names of those given on the command line.
    Prints a table through `echo` and returns the JSON's content."""
    with tempfile.TemporaryDirectory() as workdir:
        weights = model_file(values["weights"], values["preset"], Path(workdir))
        if values["clip"] is not None:
            clip = clip_frames(values["clip"], values["frames"], values["size"] if "size" in given else None)
        else:
            clip = synthetic_frames(*values["size"], values["frames"])
        result = measure_configuration(values, weights, clip, echo)
    labels, engine = list(result.engines), next(iter(result.engines.values()))
    echo(f"preset {engine.preset.name}, stage {engine.stage}, {result.width}x{result.height}, {len(clip)} frames x "
         f"{values['rounds']} rounds, device {engine.device}, {', '.join(labels)}"
         + (f", frames of {values['clip']}" if values["clip"] is not None else "") + (", compiled" if values["compile"] else ""))
    echo_table(result.measurements, echo)
    at = f" ({labels[0]})" if len(labels) > 1 else ""
    echo(f"engine overhead over the bare networks{at}: {100 * result.ratios['engine_overhead']:+.1f} %")
    for comparison in result.comparisons:
        echo(comparison.line())
    for key, line in RATIO_LINES.items():
        if key in result.ratios:
            echo(line.format(100 * result.ratios[key]))
    config = {"preset": engine.preset.name, "stage": engine.stage, "width": result.width, "height": result.height,
              "frames": len(clip), "rounds": values["rounds"], "device": str(engine.device), "compile": values["compile"],
              "precision": [e.runtime.precision for e in result.engines.values()] if len(labels) > 1 else engine.runtime.precision,
              "backend": [e.runtime.backend for e in result.engines.values()] if len(labels) > 1 else engine.runtime.backend,
              **({"clip": str(values["clip"])} if values["clip"] is not None else {}),
              **({"batch_files": values["batch_files"]} if values["batch"] else {})}
    return {"config": config, "measurements": [m.as_dict() for m in result.measurements], **result.ratios,
            **({"comparisons": [c.as_dict() for c in result.comparisons]} if result.comparisons else {})}


def echo_table(measurements: list[Measurement], echo: Callable[[str], None]) -> None:
    """One line per measurement: name, ms per frame, frames per second."""
    name_width = max(34, *(len(m.name) for m in measurements))
    echo(f"{'measurement':<{name_width}} {'ms/frame':>10} {'fps':>8}")
    for m in measurements:
        echo(f"{m.name:<{name_width}} {m.ms_per_frame:>10.1f} {m.fps:>8.2f}")
