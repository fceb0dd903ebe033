"""Stage 1: single-image deblurring with atrous residual blocks at a high internal resolution.

One stride-2 downsampling, a stack of atrous residual blocks whose parallel dilations 1..4
cover an 11x11 neighbourhood without holes, one x2 upsampling, and a global residual: the
network predicts what to add to the blurred input.

A stage 1 whose preset says `prior` also reads, beside the blurred frame, what the video tells
of its blur (PRIOR_CHANNELS): a deconvolution of the frame by the blur its neighbours' motion
predicts, that blur as a vector field and the field's confidence. They enter at the head, and
at full resolution through a gate: a per-pixel weight, read from the frame and the prior, of
how far to move the frame towards the deconvolution. The stack below the head works at half
resolution and can only redraw detail from there; the gate passes the deconvolution's detail
on as it is, so the network's job becomes correcting it. Both start at zero weight.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from vsdeblur.models.layers import ScaledConv, upsample2x
from vsdeblur.models.presets import Stage1Config

# The starting gain of each block's branch. A block adds its branch to its shortcut, so at unit
# gain the signal's variance doubles per block: an untrained `paper` stage 1 (20 blocks) came out
# about 250 away from its input on the [-1, 1] scale, `small` (6 blocks) about 0.5. At 0.1 the
# stack starts near the identity at any depth, as the output layer already does.
BRANCH_GAIN = 0.1

# the prior's channels, in this order: the deconvolved frame (RGB in [-1, 1]), the blur vector
# (dx, dy: the exposure's chord, in BLUR_UNITs) and its confidence (0..1)
PRIOR_CHANNELS = ("prior_r", "prior_g", "prior_b", "blur_dx", "blur_dy", "confidence")
BLUR_UNIT = 8.0  # pixels: the blurs that matter (2-20 px) reach the head at about the scale of the frame


class AtrousBlock(nn.Module):
    """Parallel dilated 3x3 convs -> concat -> fusing 3x3 conv -> + shortcut."""

    def __init__(self, in_channels: int, width: int, rates: tuple[int, ...], padding: str = "reflect") -> None:
        super().__init__()
        self.branches = nn.ModuleList(ScaledConv(in_channels, width // 2, 3, dilation=r, padding_mode=padding) for r in rates)
        self.fuse = ScaledConv(len(rates) * (width // 2), width, 3, padding_mode=padding)
        self.fuse.scale.data.fill_(BRANCH_GAIN)
        # Only the first block changes the width; the authors' projection has an activation.
        self.shortcut = ScaledConv(in_channels, width, 1) if in_channels != width else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.fuse(torch.cat([branch(x) for branch in self.branches], dim=1))


class AtrousNet(nn.Module):
    def __init__(self, cfg: Stage1Config) -> None:
        super().__init__()
        self.cfg = cfg
        pad = cfg.padding
        self.head = ScaledConv(3 + len(PRIOR_CHANNELS) * cfg.prior, cfg.head_width, cfg.head_kernel, padding_mode=pad)
        self.down = ScaledConv(cfg.head_width, cfg.down_width, 3, stride=2 if cfg.downsample else 1, padding_mode=pad)
        widths = [cfg.down_width] + [cfg.block_width] * cfg.blocks
        self.blocks = nn.Sequential(*(AtrousBlock(w_in, cfg.block_width, cfg.rates, pad) for w_in in widths[:-1]))
        self.up = ScaledConv(cfg.block_width + cfg.down_width, cfg.up_width, 3, padding_mode=pad)
        self.tail = ScaledConv(cfg.up_width, cfg.tail_width, 3, padding_mode=pad)
        self.out = ScaledConv(cfg.tail_width, 3, 3, activation=False, padding_mode=pad)
        if cfg.prior:
            self.gate = ScaledConv(3 + len(PRIOR_CHANNELS), 1, 3, activation=False, padding_mode=pad)
            with torch.no_grad():
                self.gate.weight.zero_()  # no say at first: the network computes what it did blind

    def widened(self, cfg: Stage1Config) -> AtrousNet:
        """A network of `cfg` (each width and the depth at least this one's) that computes exactly
        what this one does, so that a larger stage 1 trains on from a trained small one: every
        old channel reads only old channels, the added channels start from a fresh network's
        weights, and the added blocks (after the old ones) start with no branch gain, as identities."""
        old = self.cfg
        grown = dataclasses.replace(old, head_width=cfg.head_width, down_width=cfg.down_width, block_width=cfg.block_width,
                                    blocks=cfg.blocks, up_width=cfg.up_width, tail_width=cfg.tail_width)
        narrower = [f.name for f in dataclasses.fields(cfg) if isinstance(getattr(cfg, f.name), int) and getattr(cfg, f.name) < getattr(old, f.name)]
        if grown != cfg or narrower or (old.down_width == old.block_width) != (cfg.down_width == cfg.block_width):
            raise ValueError(f"a stage 1 of {old} cannot grow into {cfg}")
        wide = AtrousNet(cfg)
        half, new_half = old.block_width // 2, cfg.block_width // 2
        branches = [j * new_half + c for j in range(len(old.rates)) for c in range(half)]
        _embed(wide.head, self.head, range(self.head.weight.shape[1]), range(old.head_width))
        _embed(wide.down, self.down, range(old.head_width), range(old.down_width))
        for index, (block, small) in enumerate(zip(wide.blocks, self.blocks)):
            inputs = range(old.down_width if index == 0 else old.block_width)
            for branch, narrow in zip(block.branches, small.branches):
                _embed(branch, narrow, inputs, range(half))
            _embed(block.fuse, small.fuse, branches, range(old.block_width))
            if isinstance(small.shortcut, ScaledConv):
                _embed(block.shortcut, small.shortcut, inputs, range(old.block_width))
        for block in list(wide.blocks)[old.blocks :]:
            block.fuse.scale.data.zero_()
        _embed(wide.up, self.up, [*range(old.block_width), *(cfg.block_width + c for c in range(old.down_width))], range(old.up_width))
        _embed(wide.tail, self.tail, range(old.up_width), range(old.tail_width))
        _embed(wide.out, self.out, range(old.tail_width), range(3))
        if old.prior:
            wide.gate.load_state_dict(self.gate.state_dict())
        return wide

    def with_prior(self) -> AtrousNet:
        """This network reading the prior too, computing what it computes now whatever the
        prior holds: the head's added input channels start at zero weight, so training on the
        prior starts from this network's output."""
        if self.cfg.prior:
            raise ValueError("this stage 1 reads the prior already")
        taking = AtrousNet(dataclasses.replace(self.cfg, prior=True))
        taking.load_state_dict({k: v for k, v in self.state_dict().items() if not k.startswith("head.")}, strict=False)
        _embed(taking.head, self.head, range(3), range(self.cfg.head_width))
        return taking

    def padded(self, padding: str) -> AtrousNet:
        """This network's weights padding the other way: the same inside the frame, different
        within its receptive field of the edges (what training with that padding then fixes)."""
        other = AtrousNet(dataclasses.replace(self.cfg, padding=padding))
        other.load_state_dict(self.state_dict())
        return other

    def forward(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        """x: N x 3 x H x W in [-1, 1], H and W even; prior: N x len(PRIOR_CHANNELS) x H x W,
        for a network whose preset says `prior` (and only for one). Returns the deblurred frame
        (unclipped)."""
        check_prior(self.cfg.prior, prior)
        seen = x if prior is None else torch.cat([x, prior.to(x.dtype)], dim=1)
        skip = self.down(self.head(seen))
        features = torch.cat([self.blocks(skip), skip], dim=1)
        if self.cfg.downsample:
            features = upsample2x(features)
        restored = x + self.out(self.tail(self.up(features)))
        if prior is None:
            return restored
        deconvolved = prior[:, : 3].to(restored.dtype)
        return restored + self.gate(seen).to(restored.dtype) * (deconvolved - x)


def check_prior(reads_prior: bool, prior: torch.Tensor | None) -> None:
    """Refuse a prior given to a blind stage 1, or withheld from one that reads it. Every
    runner of stage 1 (vsdeblur.backends) checks here first, so that the mistake reads the
    same on each, not in its runtime's words."""
    if (prior is not None) != reads_prior:
        this = "reads the prior: pass one" if reads_prior else "is blind: pass no prior"
        raise ValueError(f"a stage 1 whose preset says prior takes the prior, and no other does; this one {this}")


def _embed(wide: ScaledConv, narrow: ScaledConv, inputs, outputs) -> None:
    """Put a trained conv into a wider one: its output channels `outputs` become the trained
    filters, reading input channels `inputs` and nothing else."""
    rows, columns = torch.tensor(list(outputs)), torch.tensor(list(inputs))
    with torch.no_grad():
        wide.weight[rows] = 0
        wide.weight[rows[:, None], columns[None, :]] = narrow.weight
        wide.bias[rows] = narrow.bias
        wide.scale[rows] = narrow.scale
