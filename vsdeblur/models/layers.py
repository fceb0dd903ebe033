"""Building blocks shared by both stages.

Every convolution follows the paper's conventions: no feature normalisation but a learned
per-channel scale next to the bias, y = s * (conv(x) + b), reflect padding (or the
convolution's own zeros, presets.PADDINGS), and leaky ReLU (slope 0.2) everywhere except the
output layer. Stage 2 additionally normalises each filter to
unit length (weight normalisation), so that the scale is the filter's gain.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.2


class ScaledConv(nn.Module):
    """Conv with per-channel scale and bias, `padding_mode` padding (presets.PADDINGS) and an
    optional leaky ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        dilation: int = 1,
        activation: bool = True,
        weight_norm: bool = False,
        padding_mode: str = "reflect",
    ) -> None:
        super().__init__()
        self.stride = stride
        self.dilation = dilation
        self.padding = dilation * (kernel_size - 1) // 2
        self.padding_mode = padding_mode
        self.activation = activation
        self.weight_norm = weight_norm
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.scale = nn.Parameter(torch.ones(out_channels))
        if not self.weight.is_meta:  # a network only described (shapes, no values: vsdeblur.weights
            # checks a file's tensors that way) has nothing to draw, and meta's normal_ takes seconds
            nn.init.kaiming_normal_(self.weight, a=LEAKY_SLOPE if activation else 1.0)
        if not activation:
            # The linear output layers predict residuals: start them near zero so that an
            # untrained network is close to the identity. Weight normalisation would undo a
            # smaller weight, so there the gain starts small instead.
            if weight_norm:
                self.scale.data.fill_(0.1)
            else:
                self.weight.data.mul_(0.1)

    def effective_weight(self) -> torch.Tensor:
        """The conv weight with scale (and weight normalisation) applied: what a fold uses."""
        weight = self.weight
        if self.weight_norm:
            weight = weight / weight.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None, None]
        return weight * self.scale[:, None, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _convolve(self, x, self.effective_weight(), self.bias * self.scale)


class FoldedConv(nn.Module):
    """Inference form of ScaledConv: scale, bias and weight norm folded into one conv."""

    def __init__(self, conv: ScaledConv) -> None:
        super().__init__()
        self.stride, self.dilation = conv.stride, conv.dilation
        self.padding, self.padding_mode, self.activation = conv.padding, conv.padding_mode, conv.activation
        with torch.no_grad():
            self.weight = nn.Parameter(conv.effective_weight().detach().clone(), requires_grad=False)
            self.bias = nn.Parameter((conv.bias * conv.scale).detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Computes in its weights' precision, whatever it is given: the engine keeps images in
        # fp32 (a network's input, the stage-1 output stage 2 reads) so that the global
        # residual additions, fp32 image + fp16/bf16 residual, promote to fp32.
        return _convolve(self, x.to(self.weight.dtype), self.weight, self.bias)


def _convolve(conv: ScaledConv | FoldedConv, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The convolution of either form, padded as it says, and its activation."""
    if conv.padding_mode == "zeros":
        y = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation)
    else:
        if conv.padding:
            x = F.pad(x, (conv.padding,) * 4, mode="reflect")
        y = F.conv2d(x, weight, bias, conv.stride, 0, conv.dilation)
    return F.leaky_relu(y, LEAKY_SLOPE) if conv.activation else y


def reflects(module: nn.Module) -> bool:
    """Whether any convolution in `module` pads by mirroring (a padding kernel of its own)."""
    return any(isinstance(m, ScaledConv | FoldedConv) and m.padding and m.padding_mode == "reflect" for m in module.modules())


def fold_scales(module: nn.Module) -> nn.Module:
    """Replace every ScaledConv in `module` (in place) by its FoldedConv; returns `module`."""
    for name, child in module.named_children():
        if isinstance(child, ScaledConv):
            setattr(module, name, FoldedConv(child))
        else:
            fold_scales(child)
    return module


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour x2. Followed by a 3x3 conv it equals the authors' 4x4 stride-2
    transposed conv built from a 3x3 kernel, without its checkerboard artefacts."""
    return F.interpolate(x, scale_factor=2.0, mode="nearest")
