"""The exported graphs on OpenVINO's CPU plugin.

OpenVINO's CPU plugin computes in bf16 by default on CPUs that have it (AVX512-BF16, AMX), so
left to itself its fp32 output would not be fp32's. This runner always states the precision
(INFERENCE_PRECISION_HINT): f32 for fp32, bf16 for bf16, both from the fp32 export.

Importing openvino starts OpenVINO's usage telemetry (a client id under ~/intel and an event
sent to Google Analytics) unless the user opted out with its `opt_in_out --opt_out`. vsdeblur
sends nothing anywhere: it imports openvino under CI=true, the opt-out that this telemetry
honours without a file."""

from __future__ import annotations

import os
from functools import cached_property
from types import ModuleType

from vsdeblur.backends.graphs import GraphRunner, Pool, Run
from vsdeblur.runtimes import Computes


class OpenVinoBackend(GraphRunner):
    name = "openvino"
    module = "openvino"
    extra = "openvino"
    precisions = {"fp32": Computes(native="f32", export="fp32"), "bf16": Computes(native="bf16", export="fp32")}

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
        config = {"INFERENCE_PRECISION_HINT": self.precisions[self.precision].native}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        compiled = self.core.compile_model(str(self.folder / spec["file"]), "CPU", config)
        requests = Pool(compiled.create_infer_request)  # a request runs one inference at a time

        def run(feed: dict) -> list:
            with requests.borrowed() as request:
                results = request.infer(feed, share_inputs=True, share_outputs=False)
                return [results[output] for output in compiled.outputs]

        return run
