"""The runtime an engine runs on: device, backend (the runner of the three network calls),
compute precision and, for a graph backend, the precision of the exported graphs it runs;
resolved once from the settings through the tables of vsdeblur.runtimes.

Each runner class declares what it can do: `devices` (device types), `precisions` (the
PRECISIONS names it computes in, each with its own name for it and the export it runs) and
`module` (the package it needs). Only the three network calls change hands; padding, tiling,
ensemble, window and cache stay the engine's.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from importlib import metadata
from typing import Protocol

import torch
from torch import nn

from vsdeblur.backends.device import auto_precision, resolve_device, torch_dtype
from vsdeblur.config import EngineSettings
from vsdeblur.errors import UsageError
from vsdeblur.models.stage2 import Pyramid
from vsdeblur.runtimes import AUTO_BACKENDS, BACKENDS, Computes
from vsdeblur.weights import Weights


class UnsupportedPrecision(UsageError):
    """A backend asked for a precision that its runtime does not compute in."""


class NetworkRunner(Protocol):
    """The three network calls, as a backend (vsdeblur.backends) makes them, with the memory
    layout it takes, the modules it runs (none for a graph runtime) and whether they are
    compiled."""

    memory_format: torch.memory_format
    models: dict[int, nn.Module]
    compiled: bool

    def stage1(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        """Stage 1 of N x 3 x H x W images in [-1, 1]; `prior` (N x len(stage1.PRIOR_CHANNELS) x
        H x W, float32 like x) exactly when the weights' stage 1 reads it, else a ValueError."""
        ...

    def encode(self, x: torch.Tensor) -> Pyramid: ...

    def aggregate(self, pyramids: list[Pyramid], centre: torch.Tensor) -> torch.Tensor: ...


class RunnerClass(Protocol):
    """What a runner class (a BACKENDS row names one) declares, and how the engine makes one."""

    name: str
    module: str  # the package its runtime needs
    devices: tuple[str, ...]  # device types
    precisions: dict[str, Computes]  # the PRECISIONS it computes in, each in its own terms

    def for_runtime(self, runtime: Runtime, weights: Weights | None, models: dict[int, nn.Module], compile: bool) -> NetworkRunner: ...


def runner_class(backend: str) -> RunnerClass:
    """The runner class of a BACKENDS name (imports its module, not its runtime's package)."""
    module, _, name = BACKENDS[backend].partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Runtime:
    """A backend on a device, computing in one precision (a PRECISIONS name)."""

    device: torch.device
    backend: str
    precision: str

    @property
    def dtype(self) -> torch.dtype:
        return torch_dtype(self.precision)

    @property
    def export_precision(self) -> str | None:
        """The precision of the exported graphs the backend runs (None: it runs the modules)."""
        return runner_class(self.backend).precisions[self.precision].export

    def runner(self, weights: Weights | None, models: dict[int, nn.Module], compile: bool = False) -> NetworkRunner:
        """The runner of `models` (stages 1 .. max(models)), or of the exported graphs of
        `weights` up to the same stage."""
        return runner_class(self.backend).for_runtime(self, weights, models, compile)


def installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a module that failed to import, or blocked
        return False


def resolve_runtime(settings: EngineSettings) -> Runtime:
    """The runtime of the device, backend, precision and compile settings."""
    runtime = runtime_on(resolve_device(settings.device), settings.backend, settings.precision)
    if settings.compile and runtime.backend != "torch":
        raise UsageError(f"compile applies to backend torch; {runtime.backend} optimises its graphs itself")
    return runtime


def runtime_on(device: torch.device, backend: str, precision: str) -> Runtime:
    """The runtime of a `backend` and `precision` option (either may be "auto") on a device."""
    if backend == "auto":
        candidates = AUTO_BACKENDS.get(device.type, ("torch",))
        backend = next((name for name in candidates if installed(runner_class(name).module)), "torch")
    runner = runner_class(backend)
    if device.type not in runner.devices:
        where = "the CPU; use device cpu" if runner.devices == ("cpu",) else "an NVIDIA GPU; use device cuda"
        raise UsageError(f"backend {backend!r} runs on {where}, or backend torch on {device}")
    if precision == "auto":
        preferred = auto_precision(device)[0]
        precision = preferred if preferred in runner.precisions else "fp32"
    if precision not in runner.precisions:
        place = "a CPU" if device.type == "cpu" else "a GPU"
        raise UnsupportedPrecision(f"backend {backend!r} computes in {' or '.join(runner.precisions)} on {place}, not {precision}")
    return Runtime(device, backend, precision)


def describe_backends() -> list[str]:
    """For `vsdeblur info`: each graph runtime's installed distribution and version (read
    from the package metadata: importing openvino would start its telemetry), and what
    `backend="auto"` takes on the CPU."""
    distributions = metadata.packages_distributions()
    rows = []
    for name in (n for n in BACKENDS if n != "torch"):
        module = runner_class(name).module
        found = sorted({f"{d} {metadata.version(d)}" for d in distributions.get(module, [])})
        rows.append(f"{name}: {', '.join(found) if found else 'not installed'}")
    rows.append(f"auto on cpu: {runtime_on(torch.device('cpu'), 'auto', 'auto').backend}")
    return rows
