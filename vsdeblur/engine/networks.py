"""The networks over whole padded frames: stage 1, stage 2's per-frame encoder and its
aggregation over a window, each tiled and (optionally) ensembled over the eight flips and
rotations. Knows nothing of frames' order or scenes.

Precision: the networks compute in the compute precision (their folded convolutions cast what
they are given to their weights' type), but what carries the picture stays fp32: the input,
the global residual additions (an fp32 image plus an fp16/bf16 residual promotes to fp32),
the stage-1 output that stage 2 reads, and the tile blend. In bf16, values in [0.5, 1) are
about half an 8-bit code apart: an image held in it would lose 10- and 16-bit sources'
precision between the stages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from vsdeblur.backends.runtime import NetworkRunner
from vsdeblur.engine.tiling import DIHEDRAL, Tile, auto_tile, blend, plan_tiles, tile_geometry, transform, untransform
from vsdeblur.models import Preset
from vsdeblur.models.stage1 import PRIOR_CHANNELS
from vsdeblur.models.stage2 import Pyramid

_DX, _DY = PRIOR_CHANNELS.index("blur_dx"), PRIOR_CHANNELS.index("blur_dy")


@dataclass
class EngineStats:
    """How often each part of the network ran (frames, not tiles or ensemble members)."""

    stage1: int = 0
    encoder: int = 0
    stage2: int = 0


class FrameState:
    """The once-per-frame work that a window reuses: the padded stage-1 output and, for stage
    2, its encoder pyramids (one per tile and ensemble transform)."""

    __slots__ = ("stage1", "pyramids", "ready")

    def __init__(self, stage1: torch.Tensor, pyramids: list[list[Pyramid]] | None) -> None:
        self.stage1, self.pyramids = stage1, pyramids
        self.ready: torch.cuda.Event | None = None  # set when other CUDA streams may read it

    def tensors(self) -> Iterator[torch.Tensor]:
        yield self.stage1
        for per_tile in self.pyramids or []:
            for pyramid in per_tile:
                yield from pyramid


def transform_prior(prior: torch.Tensor, k: int, mirrored: bool) -> torch.Tensor:
    """tiling.transform of the prior's planes, its blur vectors turned with the picture: a
    mirror negates dx, each quarter turn takes (dx, dy) to (dy, -dx)."""
    out = transform(prior, k, mirrored)
    dx, dy = out[:, _DX], out[:, _DY]
    if mirrored:
        dx = -dx
    for _ in range(k % 4):
        dx, dy = dy, -dx
    return torch.cat([out[:, :_DX], dx[:, None], dy[:, None], out[:, _DY + 1 :]], dim=1)


class Networks:
    """The stages of one model on one device, in one precision, tiled and ensembled; a runner
    (vsdeblur.backends) makes the three network calls."""

    def __init__(
        self,
        preset: Preset,
        runner: NetworkRunner,
        stage: int,
        device: torch.device,
        dtype: torch.dtype,
        tile: int | None,
        overlap: int | None,
        ensemble: bool,
    ) -> None:
        self.preset, self.device, self.dtype, self.stage = preset, device, dtype, stage
        self.multiple = preset.multiple(stage)
        self.tile, self.overlap = tile, preset.overlap if overlap is None else overlap
        if tile:
            tile_geometry(tile, self.overlap, self.multiple)
        self.transforms = DIHEDRAL if ensemble else [(0, False)]
        self.stats = EngineStats()
        self._plans: dict[tuple[int, int], list[Tile]] = {}
        self.memory_format, self.models, self._compiled = runner.memory_format, runner.models, runner.compiled
        self._stage1, self._encode, self._aggregate = runner.stage1, runner.encode, runner.aggregate

    def tiles(self, x: torch.Tensor) -> list[Tile]:
        """The tiles that cover a padded frame of x's size (one when it fits whole)."""
        key = tuple(x.shape[-2:])
        if key not in self._plans:
            h, w = key
            tile = self.tile if self.tile is not None else auto_tile(self.device, self.preset, self.stage, self.dtype, h, w)
            self._plans[key] = plan_tiles(h, w, tile, self.overlap, self.multiple, self.device)
        return self._plans[key]

    def _ensembled(self, run: Callable[[int, bool], torch.Tensor]) -> torch.Tensor:
        """The mean of run(k, mirrored) brought back from each transform of the ensemble."""
        outputs = [untransform(run(k, m), k, m) for k, m in self.transforms]
        return outputs[0] if len(outputs) == 1 else torch.stack(outputs).mean(0)

    @torch.inference_mode()
    def stage1(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        """Stage 1 of a padded frame, clamped to [-1, 1]; `prior`: its prior's planes
        (engine.prior_inputs), for a stage 1 that reads them."""
        self.stats.stage1 += 1

        def member(t: Tile, k: int, m: bool) -> torch.Tensor:
            tile = transform(x[..., t.ys, t.xs], k, m)
            if prior is None:
                return self._stage1(tile)
            return self._stage1(tile, transform_prior(prior[..., t.ys, t.xs], k, m))

        def run(_: int, t: Tile) -> torch.Tensor:
            return self._ensembled(lambda k, m: member(t, k, m))

        return blend(self.tiles(x), run, like=x).clamp_(-1, 1)

    @torch.inference_mode()
    def frame_state(self, s1: torch.Tensor) -> FrameState:
        """A stage-1 output with, for stage 2, its encoder pyramids."""
        if self.stage == 1:
            return FrameState(s1, None)
        self.stats.encoder += 1
        pyramids = [[self._encode(transform(s1[..., t.ys, t.xs], k, m)) for k, m in self.transforms] for t in self.tiles(s1)]
        return FrameState(s1, pyramids)

    @torch.inference_mode()
    def stage2(self, window: list[FrameState]) -> torch.Tensor:
        """Aggregate a window of frame states (centre in the middle) into the centre's output."""
        self.stats.stage2 += 1
        centre = window[len(window) // 2].stage1
        members = {transform_: j for j, transform_ in enumerate(self.transforms)}

        def run(i: int, t: Tile) -> torch.Tensor:
            def member(k: int, m: bool) -> torch.Tensor:
                pyramids = self._distinct([s.pyramids[i][members[(k, m)]] for s in window])
                return self._aggregate(pyramids, transform(centre[..., t.ys, t.xs], k, m))

            return self._ensembled(member)

        return blend(self.tiles(centre), run, like=centre).clamp_(-1, 1)

    def _distinct(self, pyramids: list[Pyramid]) -> list[Pyramid]:
        """The window's pyramids with repeats copied, when the networks are compiled. At clip
        ends and scene cuts a window repeats its edge frame; Dynamo guards on which inputs
        are the same object, so each repeat pattern would compile another graph."""
        if not self._compiled:
            return pyramids
        seen: set[int] = set()
        distinct = []
        for pyramid in pyramids:
            distinct.append([t.clone() for t in pyramid] if id(pyramid) in seen else list(pyramid))
            seen.add(id(pyramid))
        return distinct
