"""The runners of the engine's three network calls: `stage1(x, prior)` (the prior only for a
stage 1 that reads it), `encode(x)` (stage 2's feature pyramid of one frame) and
`aggregate(pyramids, centre)` (stage 2 over a window), on tensors in and out.
`pytorch.TorchBackend` runs the modules themselves; the others run the graphs that `vsdeblur
export` writes (`graphs.GraphRunner`): `onnxruntime`, `openvino` (CPU) and `tensorrt` (NVIDIA
GPUs). vsdeblur.runtimes lists them; each module is imported only when its backend is chosen,
and its runtime's package only when a runner is made.
"""
