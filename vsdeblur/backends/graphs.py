"""What every runner of exported graphs shares: finding the graphs (an exported folder, or a
weights file exported into the cache on first use), and turning the engine's tensors into a
graph's named inputs and its outputs back into tensors."""

from __future__ import annotations

import contextlib
import importlib
import os
import queue
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vsdeblur.errors import UsageError
from vsdeblur.backends.export import PRIOR_INPUT, cached_export, read_manifest, verified_manifest
from vsdeblur.models.stage1 import check_prior
from vsdeblur.runtimes import Computes
from vsdeblur.weights import Weights, read_weights, resolve_weights

if TYPE_CHECKING:
    from vsdeblur.backends.runtime import Runtime

# a loaded graph: named inputs -> outputs in order (numpy arrays on the CPU runtimes, tensors
# on the device for TensorRT)
Run = Callable[[dict[str, Any]], list[Any]]


class Pool:
    """Objects that serve one call at a time (OpenVINO infer requests, TensorRT execution
    contexts), lent to concurrent callers: an idle one, else a new one. The pool, not the
    calling thread, owns them: a VapourSynth thread's Python state ends with each callback,
    and a runtime object destroyed with it crashes the process."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make, self._idle = make, queue.SimpleQueue()

    @contextlib.contextmanager
    def borrowed(self) -> Iterator[Any]:
        try:
            item = self._idle.get_nowait()
        except queue.Empty:
            item = self._make()
        try:
            yield item
        finally:
            self._idle.put(item)


def require(backend: str, module: str, extra: str) -> ModuleType:
    """The runtime's package, or one line saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f"backend {backend!r} needs the {module} package: pip install 'vsdeblur[{extra}]'") from None


def exported_folder(source: str | os.PathLike | Weights | None, precision: str, cache: str | os.PathLike | None,
                    stage: int | None = None) -> tuple[Path, dict]:
    """`source` when it is an exported folder; otherwise the cached export of a weights file
    (None: the shipped default); and its manifest. Either way the graphs up to `stage` (None:
    all) match the checksums it records: a folder of the user's that does not is an error, a
    cached one is exported again."""
    if source is not None and not isinstance(source, Weights) and Path(source).is_dir():
        return Path(source), verified_manifest(source, stage)
    if not isinstance(source, Weights):
        source = resolve_weights(None) if source is None else read_weights(source)
    folder = cached_export(source, precision, cache, stage)
    return folder, read_manifest(folder)


class GraphRunner:
    """The three graphs of an export, loaded by a runtime (a subclass's `load`). A subclass
    declares its backend's `name`, the `devices` it runs on and the `precisions` it computes
    in (vsdeblur.backends.runtime reads them)."""

    name = ""
    module = ""  # the runtime's Python package
    extra = ""  # the pyproject extra that installs it
    devices: tuple[str, ...] = ("cpu",)
    precisions: dict[str, Computes] = {"fp32": Computes(export="fp32")}
    # graph runtimes take plain NCHW arrays and optimise the graphs themselves
    memory_format, models, compiled = torch.contiguous_format, {}, False

    def __init__(self, source: str | os.PathLike | Weights | None = None, *, precision: str = "fp32",
                 cache: str | os.PathLike | None = None, threads: int = 0, stage: int | None = None) -> None:
        """source: a folder written by `vsdeblur export`, or a weights file (a path or Weights;
        None for the shipped default) exported into `cache` (default ~/.cache/vsdeblur/onnx) on
        first use, in the precision the runner computes `precision` from. threads: the
        runtime's CPU threads, 0 for its default. stage: load the graphs up to this stage only
        (1: stage 1 alone); None: every graph."""
        if precision not in self.precisions:
            raise UsageError(f"backend {self.name!r} computes in {' or '.join(self.precisions)}, not {precision}")
        self.precision = precision
        self.runtime = self.import_runtime()
        self.folder, self.manifest = exported_folder(source, self.precisions[precision].export, cache, stage)
        self.frames = 2 * self.manifest["radius"] + 1 if self.manifest["radius"] is not None else None
        self._specs = {name: spec for name, spec in self.manifest["graphs"].items() if stage is None or spec["stage"] <= stage}
        self._graphs = {name: self.load(spec, threads) for name, spec in self._specs.items()}

    @classmethod
    def for_runtime(cls, runtime: Runtime, weights: Weights | None, models: dict[int, nn.Module], compile: bool) -> GraphRunner:
        """The engine's runner: the graphs of `weights` up to the highest stage of `models`."""
        if weights is None:
            raise UsageError(f"backend {cls.name!r} runs exported graphs of a weights file, not networks in memory; use backend torch")
        return cls(weights, precision=runtime.precision, stage=max(models), **cls.placement(runtime))

    @staticmethod
    def placement(runtime: Runtime) -> dict[str, Any]:
        """Constructor options that place the runner on the runtime's device (none on a CPU)."""
        return {}

    def import_runtime(self) -> ModuleType:
        return require(self.name, self.module, self.extra)

    def load(self, spec: dict, threads: int) -> Run:
        """The graph of a manifest entry (its file lies in self.folder), loaded."""
        raise NotImplementedError

    def stage1(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        """Stage 1 of N x 3 x H x W images in [-1, 1] (H, W multiples of the stage-1 multiple),
        with their N x 6 x H x W prior where the graph takes one (its manifest says so)."""
        takes_prior = any(port["name"] == PRIOR_INPUT for port in self._spec("stage1")["inputs"])
        check_prior(takes_prior, prior)
        return self._run("stage1", {"input": x} if prior is None else {"input": x, PRIOR_INPUT: prior})[0]

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Stage 2's feature pyramid of N x 3 x H x W stage-1 images: full resolution ... 1/16."""
        return self._run("encode", {"input": x})

    def aggregate(self, pyramids: list[list[torch.Tensor]], centre: torch.Tensor) -> torch.Tensor:
        """Stage 2's output for the centre of a window of 2r+1 pyramids (centre in the middle)
        whose centre stage-1 image is `centre`."""
        if self.frames is not None and len(pyramids) != self.frames:
            raise UsageError(f"{self.folder} aggregates windows of {self.frames} frames, not {len(pyramids)}")
        named = {f"frame{i}_level{level}": t for i, pyramid in enumerate(pyramids) for level, t in enumerate(pyramid)}
        return self._run("aggregate", {"centre": centre, **named})[0]

    def feed(self, port: dict, tensor: torch.Tensor) -> Any:
        """A tensor as the runtime takes it for an input port: a CPU numpy array of the port's
        dtype (no copy where the tensor is one already)."""
        return tensor.detach().to("cpu", getattr(torch, port["dtype"])).contiguous().numpy()

    def _spec(self, graph: str) -> dict:
        """The manifest entry of a graph this runner loaded."""
        spec = self._specs.get(graph)
        if spec is None:
            stages = " and ".join(map(str, sorted({s["stage"] for s in self._specs.values()})))
            raise UsageError(f"{self.folder}: this runner has the graphs of stage {stages} only, not {graph}")
        return spec

    def _run(self, graph: str, tensors: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        spec = self._spec(graph)
        feed = {port["name"]: self.feed(port, tensors[port["name"]]) for port in spec["inputs"]}
        return [torch.as_tensor(output) for output in self._graphs[graph](feed)]
