"""The exported graphs on OpenVINO's CPU plugin.

OpenVINO's CPU plugin computes in bf16 by default on CPUs that have it (AVX512-BF16, AMX; its
INFERENCE_PRECISION_HINT reads bfloat16 on this project's EPYC), so its output would differ from
PyTorch's fp32 (up to 0.16 of an 8-bit code on the shipped stage 1 at 640x360). This runner asks
for f32; `inference_precision="bf16"` gives the faster bf16 back.

Importing openvino starts OpenVINO's usage telemetry (a client id under ~/intel and an event
sent to Google Analytics) unless the user opted out with its `opt_in_out --opt_out`. vsdeblur
sends nothing anywhere: it imports openvino under CI=true, the opt-out that this telemetry
honours without a file."""

from __future__ import annotations

import os
from functools import cached_property
from types import ModuleType

from vsdeblur.backends.graphs import GraphRunner, Pool, Run
from vsdeblur.errors import UsageError
from vsdeblur.weights import Weights

INFERENCE_PRECISIONS = ("f32", "bf16")


class OpenVinoBackend(GraphRunner):
    name = "openvino"
    module = "openvino"
    extra = "openvino"

    def __init__(self, source: str | os.PathLike | Weights | None = None, *, precision: str = "fp32",
                 cache: str | os.PathLike | None = None, threads: int = 0, stage: int | None = None,
                 inference_precision: str = "f32") -> None:
        """inference_precision: OpenVINO's INFERENCE_PRECISION_HINT, f32 or bf16 (see the module)."""
        if inference_precision not in INFERENCE_PRECISIONS:
            raise UsageError(f"inference precision must be one of {', '.join(INFERENCE_PRECISIONS)}, not {inference_precision!r}")
        self.inference_precision = inference_precision
        super().__init__(source, precision=precision, cache=cache, threads=threads, stage=stage)

    def import_runtime(self) -> ModuleType:
        previous = os.environ.get("CI")
        os.environ["CI"] = "true"
        try:
            return super().import_runtime()
        finally:
            if previous is None:
                del os.environ["CI"]
            else:
                os.environ["CI"] = previous

    @cached_property
    def core(self):
        return self.runtime.Core()

    def load(self, spec: dict, threads: int) -> Run:
        config = {"INFERENCE_PRECISION_HINT": self.inference_precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        compiled = self.core.compile_model(str(self.folder / spec["file"]), "CPU", config)
        requests = Pool(compiled.create_infer_request)  # a request runs one inference at a time

        def run(feed: dict) -> list:
            with requests.borrowed() as request:
                results = request.infer(feed, share_inputs=True, share_outputs=False)
                return [results[output] for output in compiled.outputs]

        return run
