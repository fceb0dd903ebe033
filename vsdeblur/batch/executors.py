"""Executors: who runs the tasks of a batch job. Each task is `work.run_task(root, kind, id)`
and records its own result in the manifest, so an executor only has to run them all and
note the crashes (a worker that died, not an input that failed: those are recorded by the task).

- local: worker processes on this machine, one per GPU (each sees only its own), or a pool
  of CPU workers that share the cores; one worker runs in this process (no start-up cost).
- ray: one Ray task per chunk with a GPU each when there are GPUs, retried when a worker or
  node dies; without an address a local cluster is started that listens on the loopback
  interface only (`start_local_ray`), an address joins a running one.

A task that finds the disk full raises DiskFull; the executor then runs nothing more and
raises it, so that the job stops at once with that one reason.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from vsdeblur.batch.manifest import Manifest
from vsdeblur.batch.work import DiskFull, run_task
from vsdeblur.errors import UsageError

RAY_CONNECT_TIMEOUT = 10.0  # seconds to reach a Ray cluster given by address; Ray itself retries for minutes

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
            if isinstance(error, DiskFull):
                pool.shutdown(wait=True, cancel_futures=True)
                raise error
            if error is not None:
                _record_crash(root, *futures[future], error)
            on_done()


def run_ray(root: Path, tasks: list[Task], address: str | None, workers: int | None, on_done: Callable[[], None]) -> None:
    try:
        import ray
    except ImportError:
        raise UsageError("the ray executor needs Ray: pip install 'vsdeblur[ray]'") from None
    started = not ray.is_initialized()
    if started and address is None:
        start_local_ray()  # this machine's cores; a real cluster brings its own resources
    elif started:
        _check_reachable(address)
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except ConnectionError as exc:
            raise UsageError(f"cannot join the Ray cluster at {address}: {exc}") from None
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
            except DiskFull as exc:  # Ray's task error is also an instance of the task's exception
                for ref in pending:
                    ray.cancel(ref)
                raise DiskFull(str(getattr(exc, "cause", exc))) from None
            except ray.exceptions.RayError as exc:  # the worker died more often than retried
                _record_crash(root, *refs[done[0]], exc)
            on_done()
    finally:
        if started:
            ray.shutdown()


def start_local_ray(**options: Any) -> None:
    """Start a Ray instance on this machine whose every process (GCS, raylet, workers, agents,
    the driver's own server) listens on 127.0.0.1 only: Ray's servers take commands from
    whoever reaches them. `options` go to `ray.init` (num_cpus, ...).

    On Linux Ray turns 127.0.0.1 as node address into the machine's outward address and binds
    its servers to that and to all interfaces; only with multi-node clusters switched off
    (what Ray does on macOS and Windows) does the loopback address stay. The switch is an
    environment variable read when Ray is imported, by the processes started here, and by this
    one (through the constant it set, in case Ray was imported before); both are put back once
    the instance runs, so that a later `ray.init(address=...)` joins clusters as usual."""
    import ray
    from ray._private import ray_constants

    variable = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    previous = os.environ.get(variable), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[variable] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False, **options)
    finally:
        if previous[0] is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = previous[0]
        ray_constants.ENABLE_RAY_CLUSTER = previous[1]


def _check_reachable(address: str) -> None:
    """Fail in seconds, with one line, when nothing answers at a host:port address (`auto` and
    other forms are left to Ray)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=RAY_CONNECT_TIMEOUT).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise UsageError(f"cannot reach the Ray cluster at {address}: {reason} (is `ray start --head` running there?)") from None


def _ray_task(root: str, kind: str, ident: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)  # the CPUs this task asked Ray for
    run_task(root, kind, ident)


def _guarded(root: Path, kind: str, ident: int) -> None:
    try:
        run_task(str(root), kind, ident)
    except DiskFull:
        raise
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
