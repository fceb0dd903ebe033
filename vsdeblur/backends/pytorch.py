"""The networks as PyTorch modules: scales folded, on the device, in the compute precision and
the memory layout its kernels prefer, compiled on request."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
from torch import nn

from vsdeblur.models import fold_scales
from vsdeblur.models.layers import reflects
from vsdeblur.models.stage1 import check_prior
from vsdeblur.runtimes import PRECISIONS, Computes
from vsdeblur.weights import Weights

if TYPE_CHECKING:
    from vsdeblur.backends.runtime import Runtime


class TorchBackend:
    name = "torch"
    module = "torch"
    devices = ("cpu", "cuda")
    precisions = {name: Computes(native=p.dtype) for name, p in PRECISIONS.items()}

    def __init__(self, models: dict[int, nn.Module], device: torch.device, dtype: torch.dtype, compile: bool = False) -> None:
        self.memory_format = memory_format(models, device, compile)
        self.models = {s: self._prepared(m, device, dtype) for s, m in models.items()}
        self.compiled = compile
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # a clip's frames share one size: pick the fastest kernels once
        maybe_compiled = torch.compile if compile else lambda fn: fn
        self._stage1 = maybe_compiled(self.models[1])
        stage2 = self.models.get(2)
        self.encode = maybe_compiled(stage2.encode) if stage2 is not None else None
        self.aggregate = maybe_compiled(stage2.aggregate) if stage2 is not None else None

    def stage1(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        """Stage 1 of x, reading `prior` where the network does: checked here, before the
        network (compiled or not) runs, as every runner checks it."""
        check_prior(self.models[1].cfg.prior, prior)
        return self._stage1(x, prior)

    def _prepared(self, model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
        model = fold_scales(copy.deepcopy(model)).eval().requires_grad_(False)
        return model.to(device, dtype, memory_format=self.memory_format)

    @classmethod
    def for_runtime(cls, runtime: Runtime, weights: Weights | None, models: dict[int, nn.Module], compile: bool) -> TorchBackend:
        return cls(models, runtime.device, runtime.dtype, compile)


def memory_format(models: dict[int, nn.Module], device: torch.device, compile: bool) -> torch.memory_format:
    """The layout the networks run in. Eager CUDA convolutions behind a separate reflect-padding
    kernel run faster in NCHW; compiled graphs, the CPU's oneDNN kernels and convolutions that
    pad themselves prefer channels_last (docs/performance.md)."""
    nchw = device.type == "cuda" and not compile and any(reflects(m) for m in models.values())
    return torch.contiguous_format if nchw else torch.channels_last
