"""Which runtime runs the networks: PyTorch itself, or the graphs of `vsdeblur export` on ONNX
Runtime or OpenVINO (CPU), or on TensorRT (NVIDIA GPUs). Only the three network calls change
hands; padding, tiling, ensemble, window and cache stay the engine's.

`auto` takes the fastest runtime installed for the device, as measured in docs/performance.md:
on a CPU OpenVINO, ahead of PyTorch in bf16 and in fp32 alike; on CUDA PyTorch (TensorRT is
not yet measured).
"""

from __future__ import annotations

import importlib.util
from importlib import metadata
from dataclasses import dataclass

import torch

from vsdeblur.engine.device import PRECISIONS, precision_name, resolve_precision
from vsdeblur.engine.networks import NetworkRunner
from vsdeblur.errors import UsageError
from vsdeblur.weights import Weights

BACKENDS = ("auto", "torch", "onnxruntime", "openvino", "tensorrt")
# the device type each graph runtime runs on, and the precisions it computes in there
_GRAPH_DEVICES = {"onnxruntime": "cpu", "openvino": "cpu", "tensorrt": "cuda"}
_GRAPH_PRECISIONS = {"onnxruntime": ("fp32",), "openvino": ("fp32", "bf16"), "tensorrt": ("fp16", "fp32")}


class UnsupportedPrecision(UsageError):
    """A backend asked for a precision that its runtime does not compute in."""


@dataclass(frozen=True)
class Backend:
    """A runtime chosen for a device, with the precision it computes in."""

    name: str
    dtype: torch.dtype
    device: torch.device = torch.device("cpu")

    def runner(self, weights: Weights | None, stage: int) -> NetworkRunner | None:
        """The runner of the exported graphs up to `stage` (None for torch)."""
        if self.name == "torch":
            return None
        if weights is None:
            raise UsageError(f"backend {self.name!r} runs exported graphs of a weights file, not networks in memory; use backend torch")
        if self.name == "onnxruntime":
            from vsdeblur.backends.onnxruntime import OnnxRuntimeBackend

            return OnnxRuntimeBackend(weights, stage=stage)
        if self.name == "tensorrt":
            from vsdeblur.backends.tensorrt import TensorRtBackend

            return TensorRtBackend(weights, precision=precision_name(self.dtype), stage=stage, device=self.device)
        from vsdeblur.backends.openvino import OpenVinoBackend

        return OpenVinoBackend(weights, stage=stage, inference_precision="bf16" if self.dtype == torch.bfloat16 else "f32")


def installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a module that failed to import, or blocked
        return False


def resolve_backend(name: str, precision: str, device: torch.device) -> Backend:
    """The backend and compute precision for the `backend` and `precision` options."""
    if name not in BACKENDS:
        raise UsageError(f"unknown backend {name!r}; use {', '.join(BACKENDS)}")
    if name == "auto":
        name = "openvino" if device.type == "cpu" and installed("openvino") else "torch"
    if name == "torch":
        return Backend(name, resolve_precision(precision, device), device)
    place = _GRAPH_DEVICES[name]
    if device.type != place:
        where = "the CPU; use device cpu" if place == "cpu" else "an NVIDIA GPU; use device cuda"
        raise UsageError(f"backend {name!r} runs on {where}, or backend torch on {device}")
    allowed = _GRAPH_PRECISIONS[name]
    if precision == "auto":
        dtype = resolve_precision("auto", device)
        precision = next((p for p in allowed if PRECISIONS[p] == dtype), "fp32")
    if precision not in allowed:
        raise UnsupportedPrecision(f"backend {name!r} computes in {' or '.join(allowed)} on {'a CPU' if place == 'cpu' else 'a GPU'}, not {precision}")
    return Backend(name, PRECISIONS[precision], device)


def describe_backends() -> list[str]:
    """For `vsdeblur info`: each graph runtime's installed distribution and version (read
    from the package metadata: importing openvino would start its telemetry), and what
    `backend="auto"` takes on the CPU."""
    distributions = metadata.packages_distributions()
    rows = []
    for name in _GRAPH_DEVICES:
        found = sorted({f"{d} {metadata.version(d)}" for d in distributions.get(name, [])})
        rows.append(f"{name}: {', '.join(found) if found else 'not installed'}")
    rows.append(f"auto on cpu: {resolve_backend('auto', 'auto', torch.device('cpu')).name}")
    return rows
