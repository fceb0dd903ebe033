"""`vsdeblur-stream INPUT OUTPUT`: deblur one video, ffmpeg-style (docs/stream.md).

    source --[reader thread: demux, decode, YUV->RGB]--> bounded queue
           --[this thread: the engine]--> bounded queue
           --[writer thread: RGB->YUV, encode, mux, copy other streams]--> output

Decoding and encoding overlap the model (PyAV releases the GIL inside FFmpeg), and the two
queues keep memory bounded whatever the clip's length. Packets of the other streams travel
through the same queues in demux order, so the writer muxes them next to the video frames of
about the same time. Any failure, Ctrl-C or SIGTERM stops all three stages, removes the
temporary output and exits non-zero.

Public API: `stream(input, output, settings, engine=None, overwrite=False, progress=None)`
and `main` (the click command).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from vsdeblur.config import ENCODE, ENGINE, INPUT, EngineSettings, click_options, resolve
from vsdeblur.errors import Command, UsageError
from vsdeblur.threads import END, Cancelled, Channel, Stage, join, raise_first

if TYPE_CHECKING:
    from vsdeblur.engine import Deblurrer
    from vsdeblur.io import Reader, VideoInfo, Writer

@dataclass
class StreamResult:
    frames: int
    seconds: float
    left_out: list[str] = field(default_factory=list)  # what the output does not keep (Writer.left_out)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


class Progress:
    """Frames done, fps and ETA on stderr: a redrawn bar on a terminal, else a plain line
    every `interval` seconds (easy to parse, and no control characters in log files)."""

    def __init__(self, total: int | None, duration: float | None, stream=None, interval: float = 5.0) -> None:
        self.total, self.duration = total, duration
        self.out = stream or sys.stderr
        self.tty = self.out.isatty()
        self.interval = 0.25 if self.tty else interval
        self.start = self.last = time.monotonic()
        self.done = 0
        self.position = 0.0

    def update(self, seconds_into_clip: float) -> None:
        self.done += 1
        self.position = seconds_into_clip
        now = time.monotonic()
        if now - self.last < self.interval:
            return
        self.last = now
        self._show(seconds_into_clip, now)

    def _show(self, position: float, now: float) -> None:
        fps = self.done / max(now - self.start, 1e-9)
        if self.total:
            fraction = self.done / self.total
        elif self.duration:
            fraction = min(position / self.duration, 1.0)
        else:
            fraction = None
        count = f"{self.done}/{self.total}" if self.total else str(self.done)
        eta = ""
        if fraction:
            eta = f"  ETA {_clock((now - self.start) * (1 - fraction) / fraction)}"
        if self.tty:
            bar = "" if fraction is None else "|" + "#" * int(30 * fraction) + " " * (30 - int(30 * fraction)) + f"| {100 * fraction:5.1f}%  "
            self.out.write(f"\r{bar}frame {count}  {fps:6.2f} fps{eta}\x1b[K")
        else:
            percent = "" if fraction is None else f" ({100 * fraction:.1f}%)"
            self.out.write(f"vsdeblur-stream: frame {count}{percent} {fps:.2f} fps{eta}\n")
        self.out.flush()

    def finish(self) -> None:
        if self.tty and self.done:
            self._show(self.duration or self.position, time.monotonic())  # done: the whole clip
            self.out.write("\n")
            self.out.flush()


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def stream(
    input: str | Path,
    output: str | Path,
    settings: Mapping[str, Any] | None = None,
    engine: Deblurrer | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
) -> StreamResult:
    """Deblur `input` into `output` (paths, or "-" for stdin/stdout).

    settings: ENGINE, ENCODE and INPUT option values (missing keys take their defaults).
    engine: a ready `Deblurrer` to use instead of building one from the ENGINE settings.
    progress: show progress on stderr; None shows it unless the output is stdout and stderr
    is not a terminal either.
    """
    from vsdeblur.engine import Deblurrer
    from vsdeblur.io import Reader, Writer

    values = {**ENGINE.defaults(), **ENCODE.defaults(), **INPUT.defaults(), **(settings or {})}
    _refuse_same_file(input, output)
    started = time.monotonic()
    with Reader(input, timeout=values["network_timeout"]) as reader:
        info = reader.info
        # the output's settings are checked and its encoder opened before the model loads
        writer = Writer(output, info, values, source=reader, overwrite=overwrite)
        stop = threading.Event()
        decoded, encoded = Channel(stop), Channel(stop)
        stages = [Stage("vsdeblur-read", partial(_read, reader, decoded), stop),
                  Stage("vsdeblur-write", partial(_write, writer, encoded), stop)]
        meter = _meter(info, output, progress)
        try:
            if engine is None:
                engine = Deblurrer(EngineSettings.of(values))
            for stage in stages:
                stage.start()
            frames = _restore(engine, decoded, encoded, meter, info.time_base)
            _finish(stages, writer)
        except BaseException as exc:
            _abandon(stop, stages, writer)
            if isinstance(exc, Cancelled):  # another stage failed: its error is the story
                raise_first(stages)
            raise
        finally:
            if meter is not None:
                meter.finish()
    return StreamResult(frames, time.monotonic() - started, writer.left_out)


def _refuse_same_file(input: str | Path, output: str | Path) -> None:
    if str(input) != "-" and str(output) != "-" and Path(output).exists() and Path(input).resolve() == Path(output).resolve():
        raise UsageError(f"input and output are the same file: {output}")


def _meter(info: VideoInfo, output: str | Path, progress: bool | None) -> Progress | None:
    """The progress display, or None: as `progress` says; by default shown unless the video goes
    to stdout and stderr is no terminal either."""
    show = progress if progress is not None else (str(output) != "-" or sys.stderr.isatty())
    return Progress(info.frames, info.duration) if show else None


def _read(reader: Reader, decoded: Channel) -> None:
    """The reader thread: every decoded frame and every other stream's packet, in demux order."""
    for item in reader.items():
        decoded.put(item)
    decoded.put(END)


def _write(writer: Writer, encoded: Channel) -> None:
    """The writer thread: restored frames (rgb, pts) are encoded, other packets copied."""
    while (item := encoded.get()) is not END:
        if isinstance(item, tuple):
            writer.write(*item)
        else:
            writer.copy(item)


def _restore(engine: Deblurrer, decoded: Channel, encoded: Channel, meter: Progress | None, time_base: Fraction) -> int:
    """This thread: the engine over the decoded frames, each restored frame on to the writer;
    the number of frames restored."""
    frames = 0
    for pts, rgb in engine.tagged(_engine_input(decoded, encoded)):
        encoded.put((rgb, pts))
        frames += 1
        if meter is not None:
            meter.update(float(pts * time_base))
    encoded.put(END)
    return frames


def _engine_input(decoded: Channel, encoded: Channel) -> Iterator[tuple[int, Any]]:
    """(pts, rgb) of each decoded frame; another stream's packet goes straight on to the writer."""
    from vsdeblur.io import Frame

    while (item := decoded.get()) is not END:
        if isinstance(item, Frame):
            yield item.pts, item.rgb
        else:
            encoded.put(item)


def _finish(stages: list[Stage], writer: Writer) -> None:
    """Wait for the reader and the writer, raise the first error of theirs, then close the
    output (moved into place)."""
    join(stages)
    raise_first(stages)
    writer.close()


def _abandon(stop: threading.Event, stages: list[Stage], writer: Writer) -> None:
    """Stop every stage before the writer's file goes (a stage may be inside FFmpeg), then
    remove the temporary output."""
    stop.set()
    join(stages)
    writer.abort()


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("input", metavar="INPUT")
@click.argument("output", metavar="OUTPUT")
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), help="TOML job file ([engine], [encode] and [input] tables); flags override it")
@click_options(ENGINE, ENCODE, INPUT)
@click.option("--overwrite", is_flag=True, help="replace OUTPUT if it exists")
@click.option("-q", "--quiet", is_flag=True, help="no progress on stderr")
@click.pass_context
def main(ctx: click.Context, input: str, output: str, config_path: Path | None, overwrite: bool, quiet: bool, **flags: Any) -> None:
    """Deblur INPUT into OUTPUT ("-" for a pipe: stdin/stdout, Matroska by default).

    Timestamps, audio, subtitles, attachments, chapters, metadata and colour are kept.
    """
    name = ctx.command_path
    values = resolve([ENGINE, ENCODE, INPUT], config_path, flags)
    result = stream(input, output, values, overwrite=overwrite, progress=False if quiet else None)
    for what in result.left_out:
        click.echo(f"{name}: note: left out {what}", err=True)
    if not quiet:
        click.echo(f"{name}: {result.frames} frames in {result.seconds:.1f} s ({result.fps:.2f} fps) -> {output}", err=True)


if __name__ == "__main__":
    sys.exit(main())
