"""The exported graphs on TensorRT (NVIDIA GPUs); tensors stay on the device, and each graph
runs on the caller's current CUDA stream.

Engines are built from the ONNX graphs on first use and kept in a cache folder (`engines`,
default ~/.cache/vsdeblur/tensorrt), keyed by the graph file, the TensorRT version, the GPU
and the shapes, so a machine pays each build (minutes for the larger graphs) once.
Precision comes from the export: fp16 builds from the fp16 graphs (`vsdeblur export --precision
fp16`: fp16 weights and activations, float32 images) as a strongly typed network, which
TensorRT 11 requires (it dropped the fp16 builder flag) and TensorRT 10 accepts.
Shapes: "static" builds an engine for each input size met, with the fastest kernels for that
size; the engine pads a clip's frames (or its tiles) to one size, so a clip needs one per graph
(two with the ensemble's rotations). "dynamic" builds one engine per graph for every size from
the model's multiple up to `max_size`, tuned for `opt_size`.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vsdeblur.backends.graphs import GraphRunner, Pool, Run
from vsdeblur.errors import UsageError
from vsdeblur.backends.export import cache_root, writable_folder
from vsdeblur.runtimes import Computes
from vsdeblur.weights import Weights

if TYPE_CHECKING:
    from vsdeblur.backends.runtime import Runtime

SHAPES = ("static", "dynamic")
Shape = tuple[int, ...]
Profile = dict[str, tuple[Shape, Shape, Shape]]  # input name -> (min, opt, max) shapes


def port_shape(port: dict, height: int, width: int, batch: int = 1) -> Shape:
    """A manifest port's shape (entries such as "N", 3, "H/4") for images of height x width."""
    sizes = {"N": batch, "H": height, "W": width}

    def dim(entry: int | str) -> int:
        if isinstance(entry, int):
            return entry
        name, _, divisor = entry.partition("/")
        return sizes[name] // int(divisor or 1)

    return tuple(dim(entry) for entry in port["shape"])


def static_profile(shapes: dict[str, Shape]) -> Profile:
    """An optimisation profile for exactly these input shapes."""
    return {name: (shape, shape, shape) for name, shape in shapes.items()}


def dynamic_profile(spec: dict, opt_size: tuple[int, int], max_size: tuple[int, int]) -> Profile:
    """An optimisation profile for every size from the graph's multiple up to max_size
    (width, height; rounded up to the multiple), tuned for opt_size: one entry for each input
    the manifest lists (a prior stage 1's `prior` beside its image)."""
    m = spec["multiple"]

    def up(n: int) -> int:
        return -(-n // m) * m

    (opt_w, opt_h), (max_w, max_h) = opt_size, max_size
    return {
        port["name"]: (port_shape(port, m, m), port_shape(port, up(opt_h), up(opt_w)), port_shape(port, up(max_h), up(max_w)))
        for port in spec["inputs"]
    }


def engine_key(onnx_digest: str, profile: Profile, trt_version: str, gpu: str) -> str:
    """The cache name of an engine: everything its build depends on."""
    text = repr((onnx_digest, sorted(profile.items()), trt_version, gpu))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class TensorRtBackend(GraphRunner):
    name = "tensorrt"
    module = "tensorrt"
    extra = "tensorrt"
    devices = ("cuda",)
    precisions = {"fp16": Computes(export="fp16"), "fp32": Computes(export="fp32")}

    def __init__(self, source: str | os.PathLike | Weights | None = None, *, precision: str = "fp16",
                 cache: str | os.PathLike | None = None, stage: int | None = None, device: str | torch.device = "cuda",
                 engines: str | os.PathLike | None = None, shapes: str = "static",
                 opt_size: tuple[int, int] = (1920, 1088), max_size: tuple[int, int] = (3840, 2176)) -> None:
        """precision: fp16 or fp32, each from the export of that precision. engines: the
        engine cache folder. shapes: static or dynamic (see the module); opt_size and max_size
        (width, height) bound the dynamic engines."""
        self.import_runtime()  # a missing package is the first thing to say
        if shapes not in SHAPES:
            raise UsageError(f"shapes must be one of {', '.join(SHAPES)}, not {shapes!r}")
        self.device = torch.device(device)
        if self.device.type != "cuda" or not torch.cuda.is_available():
            raise UsageError(f"backend 'tensorrt' runs on an NVIDIA GPU; device {self.device} is not one here")
        self.shapes, self.opt_size, self.max_size = shapes, opt_size, max_size
        self.engines = Path(engines) if engines is not None else cache_root().parent / "tensorrt"
        super().__init__(source, precision=precision, cache=cache, stage=stage)
        self.logger = self.runtime.Logger(self.runtime.Logger.WARNING)

    @staticmethod
    def placement(runtime: Runtime) -> dict[str, Any]:
        return {"device": runtime.device}

    def feed(self, port: dict, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach().to(self.device, getattr(torch, port["dtype"])).contiguous()

    def load(self, spec: dict, threads: int) -> Run:
        return _Graph(self, spec)

    def build(self, spec: dict, profile: Profile) -> Any:
        """The deserialised engine for a graph and profile: from the cache folder, else built
        and stored there (written whole or not at all)."""
        trt = self.runtime
        path = self.folder / spec["file"]
        capability = torch.cuda.get_device_capability(self.device)
        gpu = f"{torch.cuda.get_device_name(self.device)} sm{capability[0]}{capability[1]}"
        # the graph's checksum as its manifest records it, which the runner has checked
        cached = self.engines / f"{path.stem}-{engine_key(spec['sha256'], profile, trt.__version__, gpu)}.engine"
        runtime = trt.Runtime(self.logger)
        if cached.is_file():
            engine = runtime.deserialize_cuda_engine(cached.read_bytes())
            if engine is not None:
                return engine
        builder = trt.Builder(self.logger)
        strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        network = builder.create_network(0 if strongly_typed is None else 1 << int(strongly_typed))
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise UsageError(f"TensorRT cannot parse {path}: {errors}")
        config = builder.create_builder_config()
        optimisation = builder.create_optimization_profile()
        for name, (smallest, opt, largest) in profile.items():
            optimisation.set_shape(name, smallest, opt, largest)
        config.add_optimization_profile(optimisation)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise UsageError(f"TensorRT could not build an engine for {path} (shapes {profile}); its log above says why")
        writable_folder(self.engines, "the TensorRT engine cache")
        partial = cached.with_name(f".{cached.name}.{os.getpid()}.partial")
        partial.write_bytes(bytes(serialized))
        partial.replace(cached)
        return runtime.deserialize_cuda_engine(bytes(serialized))


class _Graph:
    """One graph's engines (one per profile), each with a pool of execution contexts: a
    context runs one inference at a time, and VapourSynth calls from several threads."""

    def __init__(self, runner: TensorRtBackend, spec: dict) -> None:
        self.runner, self.spec = runner, spec
        self.outputs = [port["name"] for port in spec["outputs"]]
        self.output_dtypes = [getattr(torch, port["dtype"]) for port in spec["outputs"]]
        self.contexts: dict[Any, Pool] = {}  # by profile key
        self._building = threading.Lock()  # one build per engine, however many threads ask

    def _contexts(self, shapes: dict[str, Shape]) -> Pool:
        runner = self.runner
        key = tuple(sorted(shapes.items())) if runner.shapes == "static" else "dynamic"
        with self._building:
            if key not in self.contexts:
                profile = static_profile(shapes) if runner.shapes == "static" else dynamic_profile(self.spec, runner.opt_size, runner.max_size)
                self.contexts[key] = Pool(runner.build(self.spec, profile).create_execution_context)
        return self.contexts[key]

    def __call__(self, feed: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        with self._contexts({name: tuple(t.shape) for name, t in feed.items()}).borrowed() as context:
            for name, tensor in feed.items():
                context.set_input_shape(name, tuple(tensor.shape))
                context.set_tensor_address(name, tensor.data_ptr())
            outputs = []
            for name, dtype in zip(self.outputs, self.output_dtypes, strict=True):
                out = torch.empty(tuple(context.get_tensor_shape(name)), dtype=dtype, device=self.runner.device)
                context.set_tensor_address(name, out.data_ptr())
                outputs.append(out)
            # the inputs and outputs belong to the current stream's allocator, so nothing
            # reuses their memory before the engine has run on that stream
            if not context.execute_async_v3(torch.cuda.current_stream(self.runner.device).cuda_stream):
                raise UsageError(f"TensorRT failed to run {self.spec['file']}")
            return outputs
