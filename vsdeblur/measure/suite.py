"""`vsdeblur bench --suite gpu`: the GPU check, one command that measures every configuration
its targets name and writes one JSON with the numbers, the device, the torch version and a
pass/fail per target (docs/performance.md).

On CUDA it runs at full size: the `paper` preset's stage 1 at 720p (fp16 and bf16, eager and
compiled), `paper` both stages through the engine and vsdeblur-stream at 720p and 1080p, the
shipped model's two stages at 1080p and 4K (automatic tiles and forced ones) with peak memory,
compiled against eager over a clip with scene cuts and clip ends, and the VapourSynth graph
with 1, 2 and 4 streams against the engine. On a CPU it runs the same code at reduced sizes
(the `tiny` preset for `paper`, a few frames, no compilation unless --compile) so that it can
be tested without a GPU; its JSON says so, and leaves the absolute targets undecided.

Parts whose package is missing (PyAV for the stream, VapourSynth for the filter) are recorded
as skipped, with the import error, and the rest is still measured.
"""

from __future__ import annotations

import gc
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from vsdeblur.measure.speed import (
    BARE,
    Measurement,
    Run,
    bare_forward,
    bare_networks,
    compare,
    echo_table,
    engine_run,
    model_file,
    peak_memory,
    stream_runs,
    synthetic_frames,
    vapoursynth_run,
)
from vsdeblur.engine import Deblurrer
from vsdeblur.backends.device import resolve_device
from vsdeblur.errors import UsageError

GIB = 2**30
# what the suite decides itself: giving any of these with --suite is an error
FIXED_OPTIONS = ("preset", "stage", "radius", "precision", "tile", "overlap", "ensemble", "scene_threshold",
                 "size", "clip", "vapoursynth", "num_streams", "stream", "batch", "batch_files")


@dataclass(frozen=True)
class Scale:
    """The sizes and amounts the suite runs at."""

    reduced: bool  # True: scaled down to run on a CPU, not comparable with the targets
    sizes: dict[str, tuple[int, int]]  # "720p", "1080p", "4K" -> (width, height) measured for it
    forced_tile: int  # the tile side of the forced-tiles 4K measurement
    paper: str  # the preset measured for `paper`
    frames: int  # frames per measurement
    rounds: int
    compile: bool  # include the compiled measurements


FULL = Scale(False, {"720p": (1280, 720), "1080p": (1920, 1080), "4K": (3840, 2160)}, 1024, "paper", 16, 3, True)
# a CPU takes long to compile each graph (docs/performance.md): left out unless asked for (--compile)
REDUCED = Scale(True, {"720p": (128, 96), "1080p": (192, 112), "4K": (224, 128)}, 128, "tiny", 3, 1, False)
NOT_COMPILED = "compilation left out (a CPU run without --compile, or --no-compile)"


class Record:
    """What the suite has found so far: measurements by name, skipped parts and their reasons."""

    def __init__(self) -> None:
        self.measurements: dict[str, Measurement] = {}
        self.skipped: list[dict[str, str]] = []

    def add(self, measurements: list[Measurement], details: dict[str, dict[str, Any]]) -> None:
        for m in measurements:
            m.details = details[m.name]
            self.measurements[m.name] = m

    def skip(self, name: str, reason: str) -> None:
        self.skipped.append({"name": name, "reason": reason})


def missing(module: str) -> str | None:
    """Why `module` cannot be imported, or None when it can."""
    try:
        __import__(module)
    except ImportError as exc:
        return f"{module} is not importable here: {exc}"
    return None


def released() -> None:
    """Free what the finished part left behind, so that the next part's peak memory is its own."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def size_name(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


# ---- the parts ----------------------------------------------------------------------------------

def paper_stage1(record: Record, scale: Scale, paper: Path, device: str) -> None:
    """`paper` stage 1 at 720p, fp16 and bf16, eager and compiled: bare networks and engine."""
    size = scale.sizes["720p"]
    frames = synthetic_frames(*size, scale.frames)
    runs: dict[str, Run] = {}
    details: dict[str, dict[str, Any]] = {}
    for precision in ("fp16", "bf16"):
        for compiled in (False, True) if scale.compile else (False,):
            engine = Deblurrer(weights=paper, stage=1, device=device, precision=precision, compile=compiled)
            nets = bare_networks(paper, engine)
            mode = "compiled" if compiled else "eager"
            for what, run in ((BARE, bare_forward(nets, frames)), ("engine", engine_run(engine, frames))):
                name = f"paper stage 1, 720p, {precision}, {mode}: {what}"
                runs[name] = run
                details[name] = {"part": "paper_stage1", "model": scale.paper, "stage": 1, "size": size_name(size),
                                 "precision": precision, "compile": compiled, "runs": what}
    if not scale.compile:
        record.skip("paper stage 1, 720p, compiled", NOT_COMPILED)
    record.add(compare(engine.device, runs, len(frames), scale.rounds), details)


def paper_both_stages(record: Record, scale: Scale, paper: Path, device: str) -> None:
    """`paper` both stages, fp16, at 720p and 1080p: the engine alone and vsdeblur-stream
    (decode + engine + encode) on the same decoded frames; the engine alone on synthetic
    frames where PyAV is missing."""
    engine = Deblurrer(weights=paper, stage=2, device=device, precision="fp16")
    no_av = missing("av")
    for label in ("720p", "1080p"):
        size = scale.sizes[label]
        frames = synthetic_frames(*size, scale.frames)
        common = {"part": "paper_both_stages", "model": scale.paper, "stage": 2, "size": size_name(size),
                  "precision": "fp16", "compile": False}
        names = {"engine": f"paper both stages, {label}, fp16: engine", "stream": f"paper both stages, {label}, fp16: stream"}
        with tempfile.TemporaryDirectory() as workdir:
            if no_av:
                runs = {names["engine"]: engine_run(engine, frames)}
                record.skip(names["stream"], no_av)
            else:
                engine_alone, streamed = stream_runs(engine, frames, Path(workdir)).values()
                runs = {names["engine"]: engine_alone, names["stream"]: streamed}
            details = {name: {**common, "runs": what} for what, name in names.items()}
            record.add(compare(engine.device, runs, len(frames), scale.rounds), details)


def shipped_model(record: Record, scale: Scale, weights: Path | None, device: str) -> None:
    """The shipped model's (or --weights') stages in the automatic precision at 1080p and 4K,
    tiles chosen by the engine, and 4K in forced tiles; each with its peak CUDA memory."""
    configurations = [("1080p", None), ("4K", None), ("4K", scale.forced_tile)]
    for label, tile in configurations:
        size = scale.sizes[label]
        engine = Deblurrer(weights=weights, device=device, tile=tile)
        frames = synthetic_frames(*size, scale.frames)
        name = f"shipped model, {label}, tile {tile or 'auto'}: engine"
        run = engine_run(engine, frames)
        [measured] = compare(engine.device, {name: run}, len(frames), scale.rounds)
        peak = peak_memory(engine.device, run)
        record.add([measured], {name: {"part": "shipped_model", "model": engine.preset.name, "stage": engine.stage,
                                       "size": size_name(size), "precision": engine.runtime.precision, "compile": False,
                                       "tile": tile, "peak_memory_gib": None if peak is None else round(peak / GIB, 3)}})
        del engine, run
        released()


def compiled_over_cuts(record: Record, scale: Scale, paper: Path, device: str) -> None:
    """`paper` both stages at 720p, fp16, compiled against eager over a clip of three scenes:
    windows clamped at two cuts and at both clip ends. The compiled run's first pass (its
    compilations) is in the JSON as first_pass_seconds."""
    if not scale.compile:
        record.skip("compiled against eager over cuts", NOT_COMPILED)
        return
    size = scale.sizes["720p"]
    per_scene = max(scale.frames // 3, 2)
    frames = [f for seed in range(3) for f in synthetic_frames(*size, per_scene, seed=seed)]
    cuts = [per_scene, 2 * per_scene]
    runs, details = {}, {}
    for compiled in (False, True):
        engine = Deblurrer(weights=paper, stage=2, device=device, precision="fp16", compile=compiled)
        name = f"paper both stages, 720p, fp16, cut clip: {'compiled' if compiled else 'eager'}"
        runs[name] = engine_run(engine, frames, cuts)
        details[name] = {"part": "compiled_over_cuts", "model": scale.paper, "stage": 2, "size": size_name(size),
                         "precision": "fp16", "compile": compiled, "cuts": cuts}
    record.add(compare(engine.device, runs, len(frames), scale.rounds), details)


def vapoursynth_streams(record: Record, scale: Scale, weights: Path | None, device: str) -> None:
    """The VapourSynth graph with 1, 2 and 4 streams against the engine alone: the shipped
    model at 1080p in the automatic precision, the same engine and frames."""
    reason = missing("vapoursynth")
    if reason:
        record.skip("vapoursynth, 1080p, 1/2/4 streams", reason)
        return
    size = scale.sizes["1080p"]
    engine = Deblurrer(weights=weights, device=device)
    frames = synthetic_frames(*size, scale.frames)
    runs = {"shipped model, 1080p: engine": engine_run(engine, frames)}
    runs.update({f"shipped model, 1080p: vapoursynth, {n} streams": vapoursynth_run(engine, frames, n) for n in (1, 2, 4)})
    common = {"part": "vapoursynth", "model": engine.preset.name, "stage": engine.stage, "size": size_name(size),
              "precision": engine.runtime.precision, "compile": False}
    record.add(compare(engine.device, runs, len(frames), scale.rounds), {name: common for name in runs})


# ---- the targets --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """One of the targets: a value read from measurements, against a limit."""

    text: str
    unit: str  # ms, fps, GiB or % (a ratio of throughputs)
    limit: float
    at_least: bool  # passes when measured >= limit (else <= limit)
    absolute: bool  # holds for the full sizes on CUDA only (a ratio holds at any size)
    basis: tuple[str, ...]  # measurement names
    value: Callable[[list[Measurement]], float | None]  # from the basis measurements, in order

    def check(self, measurements: dict[str, Measurement], reduced: bool) -> dict[str, Any]:
        found = [measurements[name] for name in self.basis if name in measurements]
        result = {"target": self.text, "limit": self.limit, "unit": self.unit, "basis": list(self.basis)}
        if len(found) < len(self.basis):
            return {**result, "measured": None, "passed": None, "note": "not measured: a part was skipped"}
        value = self.value(found)
        if value is None:
            return {**result, "measured": None, "passed": None, "note": "not measured on this device"}
        result["measured"] = round(value, 3)
        if reduced and self.absolute:
            return {**result, "passed": None, "note": "reduced run: the target is for the full sizes on CUDA"}
        return {**result, "passed": value >= self.limit if self.at_least else value <= self.limit}


def _fastest_ms(found: list[Measurement]) -> float:
    return min(m.ms_per_frame for m in found)


def _fastest_fps(found: list[Measurement]) -> float:
    return max(m.fps for m in found)


def _peak_gib(found: list[Measurement]) -> float | None:
    return found[0].details["peak_memory_gib"]


def _ratio_percent(found: list[Measurement]) -> float:
    """The second measurement's throughput as a percentage of the first's."""
    return 100 * found[1].fps / found[0].fps


def targets(scale: Scale) -> list[Target]:
    """The targets over this suite's measurement names. A target whose basis was not all
    measured (compilation or a package left out) stays undecided."""
    stage1_fp16 = tuple(f"paper stage 1, 720p, fp16, {mode}: engine" for mode in ("eager", "compiled") if mode == "eager" or scale.compile)
    both_720p = ("paper both stages, 720p, fp16: engine",) + (
        ("paper both stages, 720p, fp16, cut clip: compiled",) if scale.compile else ())
    return [
        Target("shipped model, both stages, 1080p: at least 100 fps", "fps", 100, True, True,
               ("shipped model, 1080p, tile auto: engine",), _fastest_fps),
        Target("shipped model, both stages, 4K: at least 30 fps", "fps", 30, True, True,
               ("shipped model, 4K, tile auto: engine",), _fastest_fps),
        Target("shipped model, both stages, 1080p: peak memory at most 4 GiB", "GiB", 4, False, True,
               ("shipped model, 1080p, tile auto: engine",), _peak_gib),
        Target("paper stage 1, 720p, fp16 (eager or compiled): at most 45 ms a frame", "ms", 45, False, True,
               stage1_fp16, _fastest_ms),
        Target("paper both stages, 720p (eager or compiled): at least 15 fps", "fps", 15, True, True, both_720p, _fastest_fps),
        Target("compile=True not slower than eager over a clip with cuts and ends", "%", 100, True, False,
               ("paper both stages, 720p, fp16, cut clip: eager", "paper both stages, 720p, fp16, cut clip: compiled"), _ratio_percent),
        *(Target(f"vsdeblur-stream at least 90 % of the engine alone, paper both stages, {label}", "%", 90, True, False,
                 (f"paper both stages, {label}, fp16: engine", f"paper both stages, {label}, fp16: stream"), _ratio_percent)
          for label in ("720p", "1080p")),
        Target("VapourSynth with 2 streams at least 90 % of the engine", "%", 90, True, False,
               ("shipped model, 1080p: engine", "shipped model, 1080p: vapoursynth, 2 streams"), _ratio_percent),
    ]


def verdict(checks: list[dict[str, Any]]) -> str:
    """fail if any target failed, else incomplete if any is undecided, else pass."""
    outcomes = [c["passed"] for c in checks]
    return "fail" if False in outcomes else "incomplete" if None in outcomes else "pass"


# ---- the suite ----------------------------------------------------------------------------------

def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{device} {props.name} ({props.total_memory / GIB:.0f} GiB)"
    return f"cpu {platform.machine()} ({torch.get_num_threads()} threads)"


def chosen_scale(device: torch.device, given: set[str], values: dict[str, Any]) -> Scale:
    """FULL on CUDA, REDUCED elsewhere; --compile/--no-compile, --frames and --rounds, when
    given, override the scale's own."""
    scale = FULL if device.type == "cuda" else REDUCED
    overrides = {key: values[key] for key in ("compile", "frames", "rounds") if key in given}
    return Scale(**{**asdict(scale), **overrides})


def run_suite(values: dict[str, Any], given: set[str], echo: Callable[[str], None],
              save: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run every part, printing each as it starts; `save` receives the JSON's content after
    each part (a run cut short still leaves what it measured) and returns the final one."""
    fixed = [name for name in FIXED_OPTIONS if name in given]
    if fixed:
        flags = ", ".join("--" + name.replace("_", "-") for name in fixed)
        raise UsageError(f"--suite {values['suite']} chooses {flags} itself; leave {'it' if len(fixed) == 1 else 'them'} out")
    device = resolve_device(values["device"])
    scale = chosen_scale(device, given, values)
    record = Record()
    header = {
        "suite": values["suite"],
        "device": describe_device(device),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,  # the CUDA version this torch was built for
        "reduced": scale.reduced,
        "note": ("reduced sizes on a CPU: the sizes named 720p, 1080p and 4K are those in scale.sizes, `paper` is the "
                 f"{scale.paper} preset; absolute targets are left undecided") if scale.reduced else "full sizes on CUDA",
        "scale": {**asdict(scale), "sizes": {k: size_name(v) for k, v in scale.sizes.items()}},
    }

    def result(complete: bool) -> dict[str, Any]:
        checks = [t.check(record.measurements, scale.reduced) for t in targets(scale)]
        return {**header, "complete": complete, "measurements": [m.as_dict() for m in record.measurements.values()],
                "skipped": record.skipped, "targets": checks, "verdict": verdict(checks)}

    with tempfile.TemporaryDirectory() as workdir:
        paper = model_file(None, scale.paper, Path(workdir))
        parts = [
            ("paper stage 1 at 720p", lambda: paper_stage1(record, scale, paper, str(device))),
            ("paper both stages at 720p and 1080p, engine and stream", lambda: paper_both_stages(record, scale, paper, str(device))),
            ("shipped model at 1080p and 4K", lambda: shipped_model(record, scale, values["weights"], str(device))),
            ("compiled against eager over cuts", lambda: compiled_over_cuts(record, scale, paper, str(device))),
            ("vapoursynth with 1, 2 and 4 streams", lambda: vapoursynth_streams(record, scale, values["weights"], str(device))),
        ]
        echo(f"suite {values['suite']} on {header['device']}, torch {torch.__version__}"
             + (" (reduced sizes: not a GPU run)" if scale.reduced else ""))
        for title, part in parts:
            echo(f"-- {title}")
            started = time.perf_counter()
            part()
            released()
            echo(f"   {time.perf_counter() - started:.1f} s")
            if save is not None:
                save(result(complete=False))
    final = result(complete=True)
    echo_table(list(record.measurements.values()), echo)
    for skipped in record.skipped:
        echo(f"skipped: {skipped['name']}: {skipped['reason']}")
    for check in final["targets"]:
        outcome = {True: "pass", False: "FAIL", None: "undecided"}[check["passed"]]
        measured = [] if check["measured"] is None else [f"{check['measured']} {check['unit']}"]
        echo(f"{outcome:>9}  {check['target']}: {'; '.join(measured + [check.get('note', '')]).strip('; ')}")
    echo(f"verdict: {final['verdict']}")
    return final
