"""Batch transcodes: many sources, cut into chunks, restored by an executor, joined into
outputs that mirror the input tree. See docs/batch.md.

    report = run_batch(["clips/"], Path("out"), settings)   # settings: ENGINE + ENCODE + BATCH values

Flow: `plan` (sources, output names, chunks by packet index) -> the manifest in
OUT/.vsdeblur/ -> an executor runs `work.run_task` per chunk (the last chunk of a file also
joins it) -> a report from the manifest.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from vsdeblur.batch.executors import Task, default_workers, run_local, run_ray
from vsdeblur.batch.manifest import MANIFEST, STATE_DIR, Manifest, damage_reported, output_stamp
from vsdeblur.batch.plan import Source, check_template, discover, fingerprint, output_paths, packet_index, plan_chunks
from vsdeblur.batch.work import DiskFull, disk_full, refuse_special
from vsdeblur.config import BATCH, ENCODE, ENGINE
from vsdeblur.engine.window import chosen_stage, context_frames
from vsdeblur.errors import UsageError
from vsdeblur.weights import resolve_header

__all__ = ["FileResult", "Report", "progress_printer", "run_batch"]


@dataclass
class FileResult:
    source: str
    output: str
    state: str  # done | failed
    frames: int
    seconds: float  # worker time spent on it (chunks and join), summed over runs that did work
    error: str | None
    left_out: list[str]  # what the output does not keep, one line each (Writer.left_out)


@dataclass
class Report:
    files: list[FileResult]
    wall_seconds: float
    chunks_run: int  # chunks restored by this run (not skipped as done)
    stopped: str | None = None  # why the job stopped before its end (a full disk); a rerun resumes

    @property
    def ok(self) -> bool:
        return self.stopped is None and all(f.state == "done" for f in self.files)

    def as_dict(self) -> dict[str, Any]:
        frames = sum(f.frames for f in self.files)
        return {
            "ok": self.ok,
            "stopped": self.stopped,
            "files": [asdict(f) for f in self.files],
            "totals": {
                "files": len(self.files),
                "failed": sum(f.state != "done" for f in self.files),
                "frames": frames,
                "wall_seconds": self.wall_seconds,
                "fps": frames / self.wall_seconds if self.wall_seconds else 0.0,
                "chunks_run": self.chunks_run,
            },
        }

    def table(self) -> str:
        rows = [("file", "frames", "seconds", "fps", "result")]
        for f in self.files:
            fps = f"{f.frames / f.seconds:.2f}" if f.seconds else "-"
            rows.append((f.source, str(f.frames), f"{f.seconds:.1f}", fps, "ok" if f.state == "done" else f"FAILED: {f.error}"))
        totals = self.as_dict()["totals"]
        rows.append((f"total: {totals['files']} files, {totals['failed']} failed", str(totals["frames"]),
                     f"{self.wall_seconds:.1f}", f"{totals['fps']:.2f}", "ok" if self.ok else "FAILED"))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        return "\n".join(
            f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}  {r[4]}" for r in rows
        )


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _engine_settings(values: dict[str, Any]) -> tuple[dict[str, Any], str, int]:
    """Deblurrer arguments (weights made absolute), their hash (weights by content) and the
    context each chunk needs (engine.window.context_frames)."""
    weights = resolve_header(values["weights"])
    settings = {o.name: values[o.name] for o in ENGINE.options}
    settings["weights"] = str(weights.path)
    stage = chosen_stage(weights, values["stage"])
    content = hashlib.sha256(weights.path.read_bytes()).hexdigest()
    # device and compile change how, not what, frames are computed; precision does change them
    what = {k: v for k, v in settings.items() if k not in ("weights", "device", "compile")}
    return settings, _digest(what, content), context_frames(weights.preset, stage, values["radius"])


def run_batch(
    inputs: list[str],
    output: Path,
    values: dict[str, Any],
    resume: bool = True,
    plan_only: bool = False,
    progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
) -> Report:
    """Run (or resume) a batch job; `values` holds every ENGINE, ENCODE and BATCH option.
    plan_only: write the manifest and stop, for `vsdeblur run-chunk` under another scheduler.
    overwrite: replace existing outputs; without it only the files this job wrote are replaced
    (the rule of vsdeblur-stream's Writer), and any other existing output stops the job before
    it starts."""
    started = time.perf_counter()
    output = Path(output)
    engine, engine_hash, context = _engine_settings(values)  # bad weights or settings stop the job before it writes anything
    check_template(values["name_template"])
    owned = _owned_outputs(output, strict=resume)
    if not resume:
        shutil.rmtree(output / STATE_DIR, ignore_errors=True)
    encode = {o.name: values[o.name] for o in ENCODE.options}
    sources, targets = _sources_and_targets(inputs, output, owned, values["name_template"], values["format"])
    _refuse_foreign_outputs(targets, owned, overwrite)
    with _full_disk_stops_planning(output):
        output.mkdir(parents=True, exist_ok=True)
        tasks = _plan(output, sources, targets, values, engine, engine_hash, context, encode, overwrite, owned)
    if plan_only:
        tasks = []
    chunks_run = sum(kind == "chunk" for kind, _ in tasks)
    stopped = _execute(output, tasks, values, progress)
    report = Report(_file_results(output, stopped), time.perf_counter() - started, chunks_run, stopped)
    _write_report(output, report)
    return report


def _sources_and_targets(inputs: list[str], output: Path, owned: dict[Path, str], template: str,
                         fmt: str | None) -> tuple[list[Source], dict[Path, Path]]:
    """The input files and the output each is written to; an error where two inputs would be
    written to one output, an output would overwrite its own input, or one is a special file."""
    sources = discover(inputs, output, owned)
    targets = output_paths(output, sources, template, fmt)
    clashes = [p for p in set(targets.values()) if list(targets.values()).count(p) > 1]
    if clashes:
        raise UsageError(f"several inputs would be written to {clashes[0]}; use {{dir}} or {{ext}} in the name template")
    if any(target == s.path for s in sources for target in [targets[s.path]]):
        raise UsageError("an output would overwrite its own input; choose another output root or name template")
    for target in sorted(targets.values()):
        refuse_special(target)
    return sources, targets


def _refuse_foreign_outputs(targets: dict[Path, Path], owned: dict[Path, str], overwrite: bool) -> None:
    """Without --overwrite, an existing output that this job did not write stops the job."""
    stamps = {target: output_stamp(target) for target in targets.values()}
    foreign = sorted(t for t, stamp in stamps.items() if stamp is not None and stamp != owned.get(t))
    if foreign and not overwrite:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise UsageError(f"output exists: {foreign[0]}{more}, not written by this job (pass --overwrite to replace it)")


@contextmanager
def _full_disk_stops_planning(output: Path) -> Iterator[None]:
    """No space left while the job is planned is one line."""
    try:
        yield
    except (OSError, sqlite3.OperationalError) as exc:
        if disk_full(exc):
            raise UsageError(f"no space left on device to plan the job in {output}; free some space and run it again") from None
        raise


def _execute(output: Path, tasks: list[Task], values: dict[str, Any], progress: Callable[[int, int], None] | None) -> str | None:
    """Run the tasks on the chosen executor, reporting each one done to `progress`; why the
    job stopped early (a full disk), else None."""
    if not tasks:  # planned only, or all done: no executor to start (nor torch, nor a Ray cluster)
        return None
    done = 0

    def on_done() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, len(tasks))

    try:
        if values["executor"] == "ray":
            run_ray(output.resolve(), tasks, values["ray_address"], values["workers"], on_done)
        else:
            run_local(output.resolve(), tasks, values["workers"] or default_workers(), on_done)
    except DiskFull as exc:
        return str(exc)
    return None


def _file_results(output: Path, stopped: str | None) -> list[FileResult]:
    """Each file's result from the manifest; a planned-only job reports its files as not done yet."""
    unfinished = "not finished: the job stopped" if stopped else "left {}"
    manifest = Manifest(output)
    try:
        return [
            FileResult(str(f.source), str(f.output), "done" if f.state == "done" else "failed", f.frames or 0, f.seconds or 0.0,
                       None if f.state == "done" else (f.error or unfinished.format(f.state)), (f.left_out or "").splitlines())
            for f in manifest.files()
        ]
    finally:
        manifest.close()


def _write_report(output: Path, report: Report) -> None:
    """OUT/.vsdeblur/report.json; a full disk leaves none and says so in report.stopped."""
    path = output / STATE_DIR / "report.json"
    try:
        path.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    except OSError as exc:
        path.unlink(missing_ok=True)
        if not disk_full(exc):
            raise
        report.stopped = report.stopped or f"no space left on device for {path}; free some space and run the job again"


def _owned_outputs(output: Path, strict: bool) -> dict[Path, str]:
    """The outputs an earlier run of this job wrote (path -> output_stamp), from its manifest.
    strict: a damaged manifest is an error (the job resumes from it); else it is ignored."""
    if not (output / STATE_DIR / MANIFEST).is_file():
        return {}
    try:
        manifest = Manifest(output, check=True)
    except UsageError:
        if strict:
            raise
        return {}
    try:
        with damage_reported(manifest.path):
            return manifest.owned_outputs()
    finally:
        manifest.close()


def _plan(output: Path, sources: list[Source], targets: dict[Path, Path], values: dict[str, Any], engine: dict[str, Any],
          engine_hash: str, context: int, encode: dict[str, Any], overwrite: bool, owned: dict[Path, str]) -> list[Task]:
    """Bring the manifest up to date with this run's sources and settings; the tasks left to run."""
    manifest = Manifest(output)
    try:
        with damage_reported(manifest.path):
            manifest.set_settings({"engine": engine, "encode": encode, "overwrite": overwrite})
            manifest.reset_interrupted()
            ids = set()
            for source in sources:
                target = targets[source.path]
                chunk_hash = _digest(engine_hash, fingerprint(source.path), values["chunk_frames"], context)
                file_id, replan = manifest.sync_file(source.path, target, chunk_hash, _digest(chunk_hash, encode, str(target)))
                ids.add(file_id)
                stamp = owned.get(target)  # kept through --no-resume, and for jobs begun before stamps
                if stamp is not None and stamp == output_stamp(target) and manifest.file(file_id).output_stamp != stamp:
                    manifest.set_output_stamp(file_id, stamp)
                if replan:
                    try:
                        frames, keyframes = packet_index(source.path)
                    except UsageError as exc:
                        manifest.fail_file(file_id, str(exc))
                        continue
                    chunks = plan_chunks(frames, keyframes, values["chunk_frames"], context)
                    manifest.add_chunks(file_id, [(c.start, c.stop, c.context, _digest(chunk_hash, c.start, c.stop, c.context)) for c in chunks])
            manifest.retain(ids)
            return _tasks(manifest)
    finally:
        manifest.close()


def progress_printer(stream: TextIO, interval: float = 5.0) -> Callable[[int, int], None]:
    """Tasks done on `stream`: a count redrawn in place on a terminal; elsewhere (a log file, a
    pipe) a plain line at most every `interval` seconds and at the end, without control characters."""
    tty = stream.isatty()
    last = time.monotonic()

    def show(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if tty:
            stream.write(f"\r{done}/{total} tasks" + ("\n" if done == total else ""))
        elif done == total or now - last >= interval:
            stream.write(f"vsdeblur batch: {done}/{total} tasks\n")
            last = now
        stream.flush()

    return show


def _tasks(manifest: Manifest) -> list[Task]:
    """Chunks still to restore, file by file, and joins of files whose chunks are all done."""
    tasks: list[Task] = []
    for record in manifest.files():
        if record.state != "pending":
            continue
        chunks = manifest.chunks(record.id)
        open_chunks = [c for c in chunks if c.state != "done"]
        if open_chunks:
            tasks += [("chunk", c.id) for c in open_chunks]
        else:
            tasks.append(("join", record.id))
    return tasks


def resolved_settings(config: Path | None, flags: dict[str, Any]) -> dict[str, Any]:
    """Defaults < the pipeline TOML < command-line flags, for every group a batch job uses."""
    from vsdeblur.config import resolve

    return resolve([ENGINE, ENCODE, BATCH], config, flags)
