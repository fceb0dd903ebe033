"""The tables of what runs the networks: one row per compute precision, one row per backend.

Adding a precision is a row in PRECISIONS (and an entry in the `precisions` of each runner that
computes in it); adding a backend is a runner class (see vsdeblur.backends.graphs.GraphRunner
and vsdeblur.backends.pytorch.TorchBackend: each declares its devices, its precisions and its own
names for them) and a row in BACKENDS. The option schema (vsdeblur.config) takes its choices
from here, and vsdeblur.backends.runtime resolves the options through here, so no other module
lists either.

Standard library only: the schema, --help and the VapourSynth shim's build read it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Precision:
    name: str  # as options, JSON and export manifests spell it
    dtype: str  # the element type's name in torch and numpy (and in an export's port table)


PRECISIONS: dict[str, Precision] = {
    p.name: p for p in (Precision("fp32", "float32"), Precision("fp16", "float16"), Precision("bf16", "bfloat16"))
}

@dataclass(frozen=True)
class Computes:
    """How a runner computes in one of the PRECISIONS: a runner class's `precisions` maps
    each name it accepts to one of these."""

    native: str | None = None  # the runtime's own name for it, where it takes one (OpenVINO's "f32")
    export: str | None = None  # the EXPORTS precision of the graphs it runs; None: it runs the modules


# the precisions `vsdeblur export` writes graphs in (images stay float32 in each)
EXPORTS: tuple[str, ...] = ("fp32", "fp16")

# the backend option's name -> the runner class ("module:Class"), imported only when chosen
BACKENDS: dict[str, str] = {
    "torch": "vsdeblur.backends.pytorch:TorchBackend",
    "onnxruntime": "vsdeblur.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "vsdeblur.backends.openvino:OpenVinoBackend",
    "tensorrt": "vsdeblur.backends.tensorrt:TensorRtBackend",
}

# what `backend="auto"` takes on each device type: the first installed, fastest first
# (docs/performance.md has the measurements behind the order)
AUTO_BACKENDS: dict[str, tuple[str, ...]] = {"cpu": ("openvino", "torch"), "cuda": ("torch",)}
