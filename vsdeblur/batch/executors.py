"""Executors: who runs the tasks of a batch job. Each task is `work.run_task(root, kind, id)`
and records its own result in the manifest, so an executor only has to run them all and
note the crashes (a worker that died, not an input that failed: those are recorded by the task).

- local: worker processes on this machine, one per GPU (each sees only its own), or a pool
  of CPU workers that share the cores; one worker runs in this process (no start-up cost).
- ray: one Ray task per chunk with a GPU each when there are GPUs, retried when a worker or
  node dies; `ray.init()` starts a local cluster, an address joins a running one.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from vsdeblur.batch.manifest import Manifest
from vsdeblur.batch.work import run_task

Task = tuple[str, int]  # ("chunk", chunk id) or ("join", file id)


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_workers() -> int:
    return gpu_count() or max(1, (os.cpu_count() or 1) // 4)


def _init_worker(devices: multiprocessing.Queue, threads: int) -> None:
    """Give this worker process its GPU (it must be set before CUDA starts) and its CPU share."""
    device = devices.get()
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(device)
    import torch

    torch.set_num_threads(threads)


def run_local(root: Path, tasks: list[Task], workers: int, on_done: Callable[[], None]) -> None:
    gpus = gpu_count()
    threads = max(1, (os.cpu_count() or 1) // workers)
    if workers == 1:
        for kind, ident in tasks:
            _guarded(root, kind, ident)
            on_done()
        return
    context = multiprocessing.get_context("spawn")  # fork after torch/CUDA start is unsafe
    devices: multiprocessing.Queue = context.Queue()
    for i in range(workers):
        devices.put(i % gpus if gpus else None)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(devices, threads)) as pool:
        futures = {pool.submit(run_task, str(root), kind, ident): (kind, ident) for kind, ident in tasks}
        for future in as_completed(futures):
            error = future.exception()
            if error is not None:
                _record_crash(root, *futures[future], error)
            on_done()


def run_ray(root: Path, tasks: list[Task], address: str | None, workers: int | None, on_done: Callable[[], None]) -> None:
    try:
        import ray
    except ImportError:
        from vsdeblur.errors import UsageError

        raise UsageError("the ray executor needs Ray: pip install 'vsdeblur[ray]'") from None
    started = not ray.is_initialized()
    if started:
        # a local cluster gets this machine's cores; a real one brings its own resources
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        # like the local executor: `workers` tasks at once share the CPUs, unless GPUs do the work
        cpus = 1 if gpus or workers is None else max(1, int(ray.cluster_resources().get("CPU", 1)) // workers)
        remote = ray.remote(num_cpus=cpus, num_gpus=1 if gpus else 0, max_retries=2)(_ray_task)
        refs = {remote.remote(str(root), kind, ident, cpus): (kind, ident) for kind, ident in tasks}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(done[0])
            except ray.exceptions.RayError as exc:  # the worker died more often than retried
                _record_crash(root, *refs[done[0]], exc)
            on_done()
    finally:
        if started:
            ray.shutdown()


def _ray_task(root: str, kind: str, ident: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)  # the CPUs this task asked Ray for
    run_task(root, kind, ident)


def _guarded(root: Path, kind: str, ident: int) -> None:
    try:
        run_task(str(root), kind, ident)
    except Exception as exc:  # a bug or a crash in the engine: fail this task, not the job
        _record_crash(root, kind, ident, exc)


def _record_crash(root: Path, kind: str, ident: int, error: BaseException) -> None:
    manifest = Manifest.open_existing(root)
    try:
        reason = f"worker failed: {type(error).__name__}: {error}"
        if kind == "chunk":
            manifest.fail_chunk(ident, reason)
        else:
            manifest.fail_file(ident, reason)
    finally:
        manifest.close()
