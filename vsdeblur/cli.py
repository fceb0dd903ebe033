"""The `vsdeblur` command: info, bench, and the training/evaluation tools.

Every command turns a UsageError into one line on stderr and exit status 2 (errors.Command).
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import click

from vsdeblur import __version__
from vsdeblur.config import BATCH, BENCH, BENCH_ENGINE, ENCODE, ENGINE, SYNTH, EngineSettings, click_options, resolve
from vsdeblur.errors import Command, UsageError
from vsdeblur.runtimes import EXPORTS


class Group(click.Group):
    command_class = Command


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vsdeblur")
def main() -> None:
    """Video motion deblurring: the dual-stage network of Brehm, Scherer & Lienhart (2020)."""


@main.command()
def info() -> None:
    """Versions, devices, the VapourSynth plugin and the weights this installation finds."""
    import av
    import numpy
    import torch

    from vsdeblur.backends.runtime import describe_backends
    from vsdeblur.backends.device import describe_auto_precision, describe_devices
    from vsdeblur.weights import default_weights_path, read_weights

    rows = [
        ("vsdeblur", __version__),
        ("python", platform.python_version()),
        ("torch", f"{torch.__version__} (CUDA {torch.version.cuda or 'none'})"),
        ("av / FFmpeg", f"{av.__version__} / {av.ffmpeg_version_info}"),
        ("numpy", numpy.__version__),
    ]
    rows += [("device", d) for d in describe_devices()]
    rows += [("precision", p) for p in describe_auto_precision()]
    rows += [("backend", b) for b in describe_backends()]
    rows.append(("vapoursynth", _vapoursynth_status()))
    path = default_weights_path()
    if path is None:
        rows.append(("default weights", "none shipped in this build"))
    else:
        try:
            w = read_weights(path)
            psnr = w.info.get("val_psnr")
            detail = f", validation PSNR {psnr:.2f} dB" if psnr is not None else ""
            rows.append(("default weights", f"{path} (preset {w.preset.name}, stages {w.stages}{detail})"))
        except UsageError as exc:
            rows.append(("default weights", f"unusable: {exc}"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")


def _vapoursynth_status() -> str:
    try:
        import vapoursynth as vs
    except ImportError as exc:
        return f"not importable ({exc})"
    core = vs.core
    loaded = any(p.namespace == "deblur" for p in core.plugins())
    state = "core.deblur loadable" if loaded else "core.deblur NOT loaded (see docs/vapoursynth.md)"
    return f"{core.core_version.release_major} ({state})"


@main.command()
@click_options(BENCH_ENGINE, BENCH)
def bench(**flags) -> None:
    """Throughput of the bare networks and of the engine on the same frames, at one precision
    or several compared; optionally of the VapourSynth filter and of vsdeblur-stream, each as a
    ratio to the engine, and of batch jobs as a ratio to vsdeblur-stream. The model: --weights,
    else untrained networks of --preset, else the shipped default.

    --suite gpu runs the GPU check instead (docs/performance.md): one JSON with every number
    and a pass/fail per target; on a CPU at reduced sizes."""
    from vsdeblur.measure.speed import run_bench
    from vsdeblur.measure.suite import run_suite

    values = resolve([BENCH_ENGINE, BENCH], None, flags)
    given = {name for name, value in flags.items() if value is not None}
    values["size"] = _parse_size(values["size"])
    json_path = _json_target(values["json"])
    save = (lambda result: _write_json(json_path, result)) if json_path is not None else None
    if values["suite"] is not None:
        result = run_suite(values, given, click.echo, save)
    else:
        result = run_bench(values, given, click.echo)
    if save is not None:
        save(result)


def _json_target(path: Path | None) -> Path | None:
    """A --json path, checked before any work: its folder must exist."""
    if path is not None and not path.parent.is_dir():
        raise UsageError(f"--json {path}: the folder {path.parent} does not exist")
    return path


def _write_json(path: Path, data: dict) -> None:
    """Write `data` as JSON to `path` whole or not at all: a reader never sees half a file."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    partial.replace(path)


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path, dir_okay=False), help="training recipe (TOML); see pipelines/train/")
@click.option("--steps", type=click.IntRange(1), help="override the recipe's total steps")
@click.option("--output", type=click.Path(path_type=Path, file_okay=False), help="override the recipe's output directory")
@click.option("--resume/--no-resume", default=True, show_default=True, help="continue the run found in the output directory")
def train(config_path, steps, output, resume) -> None:
    """Train stage 1 or stage 2 (paper recipe: L1, Adam, crops, colour jitter, flips)."""
    from vsdeblur.train.loop import Trainer, load_config

    config = load_config(config_path, {"steps": steps, "output": output})
    weights = Trainer(config).run(resume=resume)
    click.echo(f"weights: {weights}")


@main.command()
@click.argument("input", metavar="INPUT")
@click.argument("output", metavar="OUTPUT")
@click_options(SYNTH, ENCODE)
@click.option("--overwrite", is_flag=True, help="replace OUTPUT if it exists")
@click.option("-q", "--quiet", is_flag=True, help="no progress on stderr")
def synth(input, output, overwrite, quiet, **flags) -> None:
    """Blur a sharp video with random camera shake: test material with a known answer.

    Each frame gets its own shake kernel (drawn from --seed and the frame number); timestamps,
    audio, subtitles and colour are kept as vsdeblur-stream keeps them. Unless a CRF is given
    (or --no-lossless), the output is lossless: the known answer carries no codec error."""
    from vsdeblur.blur import ShakeBlur, ShakeSpec
    from vsdeblur.io.writer import names_a_rate
    from vsdeblur.stream import stream

    values = resolve([SYNTH, ENCODE], None, flags)
    if values["lossless"] is None and not names_a_rate(values):
        values["lossless"] = True
    if values["kernel_size"] % 2 == 0:
        raise UsageError(f"kernel size must be odd; got {values['kernel_size']}")
    if values["min_length"] > values["max_length"]:
        raise UsageError(f"min length {values['min_length']} is longer than max length {values['max_length']}")
    shake = ShakeSpec(values["min_length"], values["max_length"], values["max_curvature"], values["kernel_size"])
    blur = ShakeBlur(shake, values["noise"], values["seed"], values["linear"])
    result = stream(input, output, values, engine=blur, overwrite=overwrite, progress=False if quiet else None)
    if not quiet:
        click.echo(f"{result.frames} frames blurred -> {output}", err=True)


@main.command("eval")
@click.argument("sharp", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("blurred", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("restored", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click_options(ENGINE)
@click.option("--frames", "max_frames", type=click.IntRange(1), help="score only the first N frames")
@click.option("--json", "json_path", type=click.Path(path_type=Path, dir_okay=False), help="also write the scores (and per-frame scores) as JSON")
@click.option("--picture", type=click.Path(path_type=Path, dir_okay=False), help="write a side-by-side PNG of the middle frame: blurred | restored | sharp")
def evaluate(sharp, blurred, restored, max_frames, json_path, picture, **engine_flags) -> None:
    """PSNR, SSIM and VMAF of RESTORED and of BLURRED against SHARP (videos or images).

    Without RESTORED, the model (engine options below) restores BLURRED first.
    Conventions: 8-bit RGB, PSNR over all channels, SSIM 11x11 Gaussian window, VMAF
    vmaf_v0.6.1 (libvmaf; frames of at least 48x48); means over frames."""
    from vsdeblur.engine import Deblurrer
    from vsdeblur.evaluate import decoded, estimate_frames
    from vsdeblur.evaluate import evaluate as score

    for path in (sharp, blurred, restored):
        if path is not None and not path.is_file():
            raise UsageError(f"input not found: {path}")
    _json_target(json_path)
    if restored is not None:
        restored_frames = decoded(restored, max_frames)
    else:
        engine = Deblurrer(EngineSettings.of(resolve([ENGINE], None, engine_flags)))
        restored_frames = engine.frames(decoded(blurred, max_frames))
    count = min(estimate_frames(sharp), max_frames or sys.maxsize)
    result = score(decoded(sharp, max_frames), decoded(blurred, max_frames), restored_frames, picture, count // 2)
    click.echo(result.table())
    if picture is not None:
        click.echo(f"picture: {picture} (blurred | restored | sharp)")
    if json_path is not None:
        _write_json(json_path, result.as_dict())


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path, file_okay=False), help="output root; the input tree is mirrored below it")
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), help="pipeline definition (TOML), e.g. pipelines/preview.toml")
@click.option("--resume/--no-resume", default=True, show_default=True, help="keep the finished chunks of an earlier run of this job")
@click.option("--plan-only", is_flag=True, help="write the manifest and stop; then drive the chunks with `vsdeblur run-chunk`")
@click.option("--overwrite", is_flag=True, help="replace existing outputs (those this job wrote itself are replaced without it)")
@click_options(BATCH, ENGINE, ENCODE)
def batch(inputs, output, config_path, resume, plan_only, overwrite, **flags) -> None:
    """Deblur many videos: files, folders (recursive) and globs, in resumable chunks.

    Exit status: 0 when every file succeeded, 1 when any failed (see the table and
    OUTPUT/.vsdeblur/report.json), 2 for a usage error."""
    from vsdeblur.batch import progress_printer, resolved_settings, run_batch

    values = resolved_settings(config_path, flags)
    report = run_batch(list(inputs), output, values, resume=resume, plan_only=plan_only, overwrite=overwrite,
                       progress=progress_printer(sys.stderr))
    if plan_only:
        click.echo(f"planned {len(report.files)} files; now run `vsdeblur run-chunk --manifest {output} --index N`")
        return
    click.echo(report.table())
    for result in report.files:
        for what in result.left_out:
            click.echo(f"vsdeblur batch: note: {result.source}: left out {what}", err=True)
    if report.stopped:
        click.echo(f"vsdeblur batch: error: {report.stopped}", err=True)
    sys.exit(0 if report.ok else 1)


@main.command("run-chunk")
@click.option("--manifest", "manifest_path", required=True, type=click.Path(path_type=Path), help="the output root of a planned job, or its .vsdeblur/manifest.sqlite")
@click.option("--index", type=click.IntRange(0), help="chunk number, 0-based over the whole job (e.g. $JOB_COMPLETION_INDEX, $SLURM_ARRAY_TASK_ID)")
@click.option("--count", is_flag=True, help="print the number of chunks and exit (the size of the array job)")
def run_chunk(manifest_path, index, count) -> None:
    """Restore one chunk of a planned batch job (and join its file when it is the last one),
    so that any scheduler can drive a job: Kubernetes indexed jobs, Slurm arrays.

    Plan the job first with `vsdeblur batch ... --plan-only`; `--count` gives the array size.
    Run `vsdeblur batch` with the same arguments afterwards for the report (it joins what is left)."""
    from vsdeblur.batch.manifest import Manifest
    from vsdeblur.batch.work import run_task

    manifest = Manifest.open_existing(manifest_path)
    try:
        chunks = manifest.chunks()
        root = manifest.root
    finally:
        manifest.close()
    if count:
        click.echo(len(chunks))
        return
    if index is None:
        raise UsageError("give --index N (or --count)")
    if index >= len(chunks):
        raise UsageError(f"the job has {len(chunks)} chunks; index {index} is out of range")
    run_task(str(root), "chunk", chunks[index].id)
    manifest = Manifest(root)
    try:
        chunk = manifest.chunk(chunks[index].id)
        record = manifest.file(chunk.file_id)
    finally:
        manifest.close()
    click.echo(f"chunk {index}: {chunk.state}; {record.source.name}: {record.state}")
    if chunk.state != "done" or record.state == "failed":
        raise SystemExit(1)


@main.command()
@click.option("--material", type=click.Path(path_type=Path, file_okay=False), default=Path("data/benchmark/photos"), show_default=True,
              help="folder of photographs no recipe trains on (`make train-data` fills the default)")
@click.option("--weights", type=click.Path(path_type=Path), help="the model to judge (default: the shipped one)")
@click.option("--output", "-o", type=click.Path(path_type=Path, file_okay=False), default=Path("runs/benchmark"), show_default=True,
              help="where the set (kept for the next run) and the restored clips go")
@click.option("--clips", type=click.IntRange(1), default=12, show_default=True, help="photographs used (the first N by name)")
@click.option("--frames", type=click.IntRange(2), default=12, show_default=True, help="frames per clip (stage 2 sees three neighbours each way)")
@click.option("--size", default="640x360", show_default=True, help="frame size WxH")
@click.option("--json", "json_path", type=click.Path(path_type=Path, dir_okay=False), help="also write the scores as JSON")
def benchmark(material, weights, output, clips, frames, size, json_path) -> None:
    """Judge a model on camera-like blur it never trained on: mild, medium and strong blur from
    a camera moving along a continuous path, independent per-frame shake, and no blur at all;
    restored through vsdeblur-stream's defaults (stage 1 alone and both stages), against the
    blurred input, the best unsharp mask and the deconvolution prior alone (from the estimated
    motion and from the true camera path), by PSNR and VMAF; and the motion estimator's blur
    error against the camera path's (docs/training.md)."""
    from vsdeblur.measure.benchmark import run
    from vsdeblur.measure.quality import Setup

    if weights is not None and not weights.is_file():
        raise UsageError(f"weights not found: {weights}")
    _json_target(json_path)
    setup = Setup(material, output, clips, frames, _parse_size(size))
    text, report = run(setup, weights, log=lambda line: click.echo(line, err=True))
    click.echo(text)
    if json_path is not None:
        _write_json(json_path, report)


@main.command("export")
@click.argument("weights", type=click.Path(path_type=Path))
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path), help="folder to create (missing or empty) for the graphs and vsdeblur-onnx.json")
@click.option("--precision", type=click.Choice(EXPORTS), default="fp32", show_default=True,
              help="the networks' precision; images stay float32")
def export_command(weights, output, precision) -> None:
    """ONNX graphs of a model for ONNX Runtime, OpenVINO, TensorRT or vs-mlrt: stage 1, stage 2's
    per-frame encoder and its aggregation over the window, with dynamic height, width and batch,
    described in vsdeblur-onnx.json and each checked against PyTorch with ONNX Runtime."""
    from vsdeblur.backends.export import export_onnx
    from vsdeblur.weights import read_weights

    export_onnx(read_weights(weights), output, precision, log=click.echo)


def _parse_size(size: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise UsageError(f"size must look like 1280x720, not {size!r}") from None
    if width < 32 or height < 32:
        raise UsageError(f"size {size} is too small: at least 32x32")
    return width, height


if __name__ == "__main__":
    sys.exit(main(prog_name="vsdeblur"))
