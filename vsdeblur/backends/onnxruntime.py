"""The exported graphs on ONNX Runtime's CPU execution provider."""

from __future__ import annotations

from vsdeblur.backends.graphs import GraphRunner, Run


class OnnxRuntimeBackend(GraphRunner):
    name = "onnxruntime"
    module = "onnxruntime"
    extra = "onnx"

    def load(self, spec: dict, threads: int) -> Run:
        options = self.runtime.SessionOptions()
        options.intra_op_num_threads = threads
        session = self.runtime.InferenceSession(str(self.folder / spec["file"]), options, providers=["CPUExecutionProvider"])
        # InferenceSession.run may be called from several threads at once (VapourSynth's)
        return lambda feed: session.run(None, feed)
