"""The `vsdeblur` command: info, bench, and the training/evaluation tools.

Every command turns a UsageError into one line on stderr and exit status 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import click

from vsdeblur import __version__
from vsdeblur.config import ENGINE
from vsdeblur.errors import UsageError


class Command(click.Command):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            click.echo(f"{ctx.command_path}: error: {exc}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo(f"{ctx.command_path}: interrupted", err=True)
            ctx.exit(130)


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

    from vsdeblur.engine.device import describe_devices
    from vsdeblur.weights import default_weights_path, read_weights

    rows = [
        ("vsdeblur", __version__),
        ("python", platform.python_version()),
        ("torch", f"{torch.__version__} (CUDA {torch.version.cuda or 'none'})"),
        ("av / FFmpeg", f"{av.__version__} / {av.ffmpeg_version_info}"),
        ("numpy", numpy.__version__),
    ]
    rows += [("device", d) for d in describe_devices()]
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
@click.option("--preset", default="small", show_default=True, help="preset to measure (untrained weights unless --weights)")
@click.option("--weights", type=click.Path(path_type=Path, dir_okay=False), help="measure this weights file instead")
@click.option("--stage", type=click.Choice(["1", "2"]), default="1", show_default=True, help="networks to run")
@click.option("--size", default="640x360", show_default=True, help="frame size WIDTHxHEIGHT")
@click.option("--frames", type=click.IntRange(1), default=8, show_default=True, help="frames per measurement")
@click.option("--rounds", type=click.IntRange(1), default=3, show_default=True, help="interleaved repetitions; medians are reported")
@click.option("--device", default=ENGINE["device"].default, show_default=True, help=ENGINE["device"].help)
@click.option("--precision", default=ENGINE["precision"].default, show_default=True, help=ENGINE["precision"].help)
@click.option("--tile", type=click.IntRange(0), default=None, help=ENGINE["tile"].help)
@click.option("--compile/--no-compile", default=False, help=ENGINE["compile"].help)
@click.option("--json", "json_path", type=click.Path(path_type=Path, dir_okay=False), help="also write the results as JSON")
@click.option("--stream", "with_stream", is_flag=True, help="also time vsdeblur-stream (decode + engine + encode) against the engine alone on the same decoded frames")
def bench(preset, weights, stage, size, frames, rounds, device, precision, tile, compile, json_path, with_stream) -> None:
    """Throughput of the bare networks and of the engine on the same frames."""
    from vsdeblur.bench import bare_forward, compare, engine_for, engine_run, synthetic_frames

    width, height = _parse_size(size)
    engine = engine_for(preset, weights, int(stage), device=device, precision=precision, tile=tile, compile=compile, scene_threshold=0)
    clip = synthetic_frames(width, height, frames)
    runs = {"bare networks": bare_forward(engine, clip), "engine (numpy in, numpy out)": engine_run(engine, clip)}
    bare, full = compare(engine.device, runs, frames, rounds)
    overhead = full.seconds / bare.seconds - 1
    header = (f"preset {engine.preset.name}, stage {engine.stage}, {width}x{height}, {frames} frames x {rounds} rounds, "
              f"device {engine.device}, {str(engine.dtype).removeprefix('torch.')}")
    click.echo(header)
    click.echo(f"{'measurement':<32} {'ms/frame':>10} {'fps':>8}")
    for m in (bare, full):
        click.echo(f"{m.name:<32} {m.ms_per_frame:>10.1f} {m.fps:>8.2f}")
    click.echo(f"engine overhead over the bare networks: {100 * overhead:+.1f} %")
    streamed = []
    if with_stream:
        import tempfile

        from vsdeblur.bench import stream_runs

        with tempfile.TemporaryDirectory() as workdir:
            streamed = compare(engine.device, stream_runs(engine, clip, Path(workdir)), frames, rounds)
        for m in streamed:
            click.echo(f"{m.name:<32} {m.ms_per_frame:>10.1f} {m.fps:>8.2f}")
        click.echo(f"stream fps / engine-only fps: {100 * streamed[1].fps / streamed[0].fps:.1f} %")
    if json_path is not None:
        result = {"config": {"preset": engine.preset.name, "stage": engine.stage, "width": width, "height": height,
                             "frames": frames, "rounds": rounds, "device": str(engine.device), "precision": str(engine.dtype)},
                  "measurements": [m.as_dict() for m in (bare, full, *streamed)], "engine_overhead": overhead}
        if streamed:
            result["stream_ratio"] = streamed[1].fps / streamed[0].fps
        json_path.write_text(json.dumps(result, indent=2) + "\n")


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
