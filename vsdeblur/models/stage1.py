"""Stage 1: single-image deblurring with atrous residual blocks at a high internal resolution.

One stride-2 downsampling, a stack of atrous residual blocks whose parallel dilations 1..4
cover an 11x11 neighbourhood without holes, one x2 upsampling, and a global residual: the
network predicts what to add to the blurred input.
"""

from __future__ import annotations

import torch
from torch import nn

from vsdeblur.models.layers import ScaledConv, upsample2x
from vsdeblur.models.presets import Stage1Config

# The starting gain of each block's branch. A block adds its branch to its shortcut, so at unit
# gain the signal's variance doubles per block: an untrained `paper` stage 1 (20 blocks) came out
# about 250 away from its input on the [-1, 1] scale, `small` (6 blocks) about 0.5. At 0.1 the
# stack starts near the identity at any depth, as the output layer already does.
BRANCH_GAIN = 0.1


class AtrousBlock(nn.Module):
    """Parallel dilated 3x3 convs -> concat -> fusing 3x3 conv -> + shortcut."""

    def __init__(self, in_channels: int, width: int, rates: tuple[int, ...]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(ScaledConv(in_channels, width // 2, 3, dilation=r) for r in rates)
        self.fuse = ScaledConv(len(rates) * (width // 2), width, 3)
        self.fuse.scale.data.fill_(BRANCH_GAIN)
        # Only the first block changes the width; the authors' projection has an activation.
        self.shortcut = ScaledConv(in_channels, width, 1) if in_channels != width else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.fuse(torch.cat([branch(x) for branch in self.branches], dim=1))


class AtrousNet(nn.Module):
    def __init__(self, cfg: Stage1Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.head = ScaledConv(3, cfg.head_width, cfg.head_kernel)
        self.down = ScaledConv(cfg.head_width, cfg.down_width, 3, stride=2 if cfg.downsample else 1)
        widths = [cfg.down_width] + [cfg.block_width] * cfg.blocks
        self.blocks = nn.Sequential(*(AtrousBlock(w_in, cfg.block_width, cfg.rates) for w_in in widths[:-1]))
        self.up = ScaledConv(cfg.block_width + cfg.down_width, cfg.up_width, 3)
        self.tail = ScaledConv(cfg.up_width, cfg.tail_width, 3)
        self.out = ScaledConv(cfg.tail_width, 3, 3, activation=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: N x 3 x H x W in [-1, 1], H and W even. Returns the deblurred frame (unclipped)."""
        skip = self.down(self.head(x))
        features = torch.cat([self.blocks(skip), skip], dim=1)
        if self.cfg.downsample:
            features = upsample2x(features)
        return x + self.out(self.tail(self.up(features)))
