"""Runners of the graphs that `vsdeblur export` writes, on other runtimes than PyTorch.

Each runner offers what the engine's network runner calls, on CPU torch tensors in and out:
`stage1(x)`, `encode(x)` (stage 2's feature pyramid of one frame) and
`aggregate(pyramids, centre)` (stage 2 over a window); the engine's padding, tiling, ensemble,
window and cache stay its own. One module per runtime, imported only when asked for:
`vsdeblur.backends.onnxruntime.OnnxRuntimeBackend`, `vsdeblur.backends.openvino.OpenVinoBackend`.
"""
