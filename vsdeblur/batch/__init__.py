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
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vsdeblur.batch.executors import Task, default_workers, run_local, run_ray
from vsdeblur.batch.manifest import STATE_DIR, Manifest
from vsdeblur.batch.plan import discover, fingerprint, output_path, packet_index, plan_chunks
from vsdeblur.config import BATCH, ENCODE, ENGINE
from vsdeblur.engine import chosen_stage, window_radius
from vsdeblur.errors import UsageError
from vsdeblur.weights import resolve_weights

__all__ = ["FileResult", "Report", "run_batch"]


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

    @property
    def ok(self) -> bool:
        return all(f.state == "done" for f in self.files)

    def as_dict(self) -> dict[str, Any]:
        frames = sum(f.frames for f in self.files)
        return {
            "ok": self.ok,
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
    context each chunk needs: the temporal radius when stage 2 runs, else none."""
    weights = resolve_weights(values["weights"])
    settings = {o.name: values[o.name] for o in ENGINE.options}
    settings["weights"] = str(weights.path)
    stage = chosen_stage(weights, values["stage"])
    content = hashlib.sha256(weights.path.read_bytes()).hexdigest()
    # device and compile change how, not what, frames are computed; precision does change them
    what = {k: v for k, v in settings.items() if k not in ("weights", "device", "compile")}
    return settings, _digest(what, content), window_radius(weights.preset, stage, values["radius"])


def run_batch(
    inputs: list[str], output: Path, values: dict[str, Any], resume: bool = True, plan_only: bool = False, progress=None
) -> Report:
    """Run (or resume) a batch job; `values` holds every ENGINE, ENCODE and BATCH option.
    plan_only: write the manifest and stop, for `vsdeblur run-chunk` under another scheduler."""
    started = time.perf_counter()
    output = Path(output)
    engine, engine_hash, context = _engine_settings(values)  # bad weights or settings stop the job before it writes anything
    output.mkdir(parents=True, exist_ok=True)
    if not resume:
        shutil.rmtree(output / STATE_DIR, ignore_errors=True)
    encode = {o.name: values[o.name] for o in ENCODE.options}
    sources = discover(inputs)
    targets = {s.path: output_path(output, s, values["name_template"]) for s in sources}
    clashes = [p for p in set(targets.values()) if list(targets.values()).count(p) > 1]
    if clashes:
        raise UsageError(f"several inputs would be written to {clashes[0]}; use {{dir}} or {{ext}} in the name template")
    if any(target == s.path for s in sources for target in [targets[s.path]]):
        raise UsageError("an output would overwrite its own input; choose another output root or name template")

    manifest = Manifest(output)
    try:
        manifest.set_settings({"engine": engine, "encode": encode})
        manifest.reset_interrupted()
        ids = set()
        for source in sources:
            target = targets[source.path]
            chunk_hash = _digest(engine_hash, fingerprint(source.path), values["chunk_frames"], context)
            file_id, replan = manifest.sync_file(source.path, target, chunk_hash, _digest(chunk_hash, encode, str(target)))
            ids.add(file_id)
            if replan:
                try:
                    frames, keyframes = packet_index(source.path)
                except UsageError as exc:
                    manifest.fail_file(file_id, str(exc))
                    continue
                chunks = plan_chunks(frames, keyframes, values["chunk_frames"], context)
                manifest.add_chunks(file_id, [(c.start, c.stop, c.context, _digest(chunk_hash, c.start, c.stop, c.context)) for c in chunks])
        manifest.retain(ids)
        tasks = _tasks(manifest)
    finally:
        manifest.close()

    if plan_only:
        tasks = []
    chunks_run = sum(kind == "chunk" for kind, _ in tasks)
    done = 0

    def on_done() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, len(tasks))

    workers = values["workers"]
    if values["executor"] == "ray":
        run_ray(output.resolve(), tasks, values["ray_address"], workers, on_done)
    else:
        run_local(output.resolve(), tasks, workers or default_workers(), on_done)

    manifest = Manifest(output)
    try:
        results = [  # a planned-only job reports its files as not done yet
            FileResult(str(f.source), str(f.output), "done" if f.state == "done" else "failed", f.frames or 0, f.seconds or 0.0,
                       None if f.state == "done" else (f.error or f"left {f.state}"), (f.left_out or "").splitlines())
            for f in manifest.files()
        ]
    finally:
        manifest.close()
    report = Report(results, time.perf_counter() - started, chunks_run)
    (output / STATE_DIR / "report.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    return report


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
