"""Stage 2: multi-level feature aggregation (MLFA) over a window of stage-1 outputs.

1. A shared encoder turns each frame of the window into a feature pyramid (full resolution,
   then 1/2 ... 1/16). It runs once per frame; the engine caches its output.
2. Intra-resolution aggregation: at every downsampled level each frame's features are weighted
   per pixel by their cosine similarity with the centre frame's, concatenated and fused.
3. Inter-resolution aggregation: a decoder goes coarse to fine, adding each level's fused
   features to the upsampled coarser state, so that information gathered far away at low
   resolution meets the details kept at high resolution.
4. The centre frame's full-resolution features and its stage-1 image close the residual.

No optical flow and no warping: the similarity weights decide what a neighbour contributes.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from vsdeblur.models.layers import LEAKY_SLOPE, ScaledConv, upsample2x
from vsdeblur.models.presets import Stage2Config

Pyramid = list[torch.Tensor]  # [full resolution, 1/2, 1/4, 1/8, 1/16]


def _conv(cin: int, cout: int, k: int = 3, activation: bool = True) -> ScaledConv:
    return ScaledConv(cin, cout, k, activation=activation, weight_norm=True)


class Encoder(nn.Module):
    """Per-frame feature pyramid: a large-kernel conv, then conv + 2x2 average pooling per level."""

    def __init__(self, cfg: Stage2Config) -> None:
        super().__init__()
        self.head = _conv(3, cfg.head_width, cfg.head_kernel)
        widths = (cfg.head_width, *cfg.encoder_widths)
        self.levels = nn.ModuleList(_conv(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, frame: torch.Tensor) -> Pyramid:
        pyramid = [self.head(frame)]
        for level in self.levels:
            pyramid.append(F.avg_pool2d(level(pyramid[-1]), 2))
        return pyramid


class PreActBlock(nn.Module):
    """Pre-activation residual block: act -> conv -> act -> conv, plus the (projected) input."""

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        self.conv1 = _conv(in_channels, width, activation=False)
        self.conv2 = _conv(width, width, activation=False)
        self.shortcut = _conv(in_channels, width, 1, activation=False) if in_channels != width else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.leaky_relu(x, LEAKY_SLOPE))
        return self.shortcut(x) + self.conv2(F.leaky_relu(h, LEAKY_SLOPE))


def similarity_weighted(features: list[torch.Tensor], centre: int) -> torch.Tensor:
    """Weight each frame's features by their per-pixel cosine similarity with the centre frame's
    (clamped at 0: dissimilar content contributes nothing) and concatenate them."""
    # F.normalize's default eps, 1e-12, rounds to 0 in fp16, where an all-zero feature then
    # gave 0/0 = NaN; the smallest normal number of the features' type keeps it at 0
    eps = max(1e-12, torch.finfo(features[centre].dtype).tiny)
    unit = [F.normalize(f, dim=1, eps=eps) for f in features]
    weights = [(u * unit[centre]).sum(dim=1, keepdim=True).clamp_min(0) for u in unit]
    return torch.cat([w * f for w, f in zip(weights, features)], dim=1)


class DecoderLevel(nn.Module):
    """Fuse the window's features at one resolution, refine, and upsample to the next level."""

    def __init__(self, frames: int, features: int, width: int, up_width: int, blocks: int) -> None:
        super().__init__()
        self.fuse = _conv(frames * features, 2 * width)
        self.blocks = nn.Sequential(*(PreActBlock(2 * width if i == 0 else width, width) for i in range(blocks)))
        self.up = _conv(width, up_width)

    def forward(self, window: list[torch.Tensor], centre: int, coarser: torch.Tensor | None) -> torch.Tensor:
        fused = self.fuse(similarity_weighted(window, centre))
        if coarser is not None:
            fused = fused + coarser
        return self.up(upsample2x(self.blocks(fused)))


class MLFA(nn.Module):
    def __init__(self, cfg: Stage2Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.frames = 2 * cfg.radius + 1
        self.encoder = Encoder(cfg)
        fine_to_coarse = cfg.encoder_widths
        widths = cfg.decoder_widths  # coarse to fine
        # Each level upsamples to the channel count the next finer level adds it to: twice that
        # level's decoder width, or the encoder's head width at full resolution.
        up_widths = [2 * w for w in widths[1:]] + [cfg.head_width]
        self.decoder = nn.ModuleList(
            DecoderLevel(self.frames, feat, width, up, cfg.res_blocks)
            for feat, width, up in zip(reversed(fine_to_coarse), widths, up_widths)
        )
        self.out = _conv(cfg.head_width, 3, 3, activation=False)

    def widened(self, radius: int) -> MLFA:
        """This network over a window of 2 * radius + 1 frames, computing exactly what it did:
        the fusion weights of the added outer frames start at zero (they have no say until
        training gives them one), so a longer window can be trained from a shorter one."""
        if radius < self.cfg.radius:
            raise ValueError(f"cannot narrow a stage 2 of radius {self.cfg.radius} to {radius}")
        wide = MLFA(dataclasses.replace(self.cfg, radius=radius))
        state = self.state_dict()
        added = radius - self.cfg.radius  # frames added on each side
        for i, level in enumerate(wide.decoder):
            key = f"decoder.{i}.fuse.weight"  # input channels: the window's features, frame by frame
            features = state[key].shape[1] // self.frames
            weight = torch.zeros_like(level.fuse.weight)
            weight[:, added * features : (added + self.frames) * features] = state[key]
            state[key] = weight
        wide.load_state_dict(state)
        return wide

    def encode(self, frame: torch.Tensor) -> Pyramid:
        return self.encoder(frame)

    def aggregate(self, window: list[Pyramid], centre_image: torch.Tensor) -> torch.Tensor:
        """window: the pyramids of the 2r+1 frames, the centre one in the middle."""
        centre = len(window) // 2
        state = None
        for depth, level in enumerate(self.decoder):
            scale = len(self.decoder) - depth  # pyramid index: 4 (1/16) down to 1 (1/2)
            state = level([pyramid[scale] for pyramid in window], centre, state)
        return centre_image + self.out(state + window[centre][0])

    def forward(self, frames: list[torch.Tensor]) -> torch.Tensor:
        """frames: the stage-1 outputs of the window (each N x 3 x H x W, H, W multiples of 16)."""
        return self.aggregate([self.encode(f) for f in frames], frames[len(frames) // 2])
