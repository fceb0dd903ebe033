"""Geometry of one frame: padding to the model's multiple, overlapping tiles with feathered
blending, and the dihedral transforms of the geometric self-ensemble.

Tiles overlap by `overlap` pixels. Within an overlap of width V, each tile's weight is zero for
the V/4 pixels next to its inner edge and ramps linearly to one over the next V/2, so the two
weights sum to one. A tile therefore only contributes pixels at least V/4 away from a cut it
made: when V/4 covers the network's receptive-field radius, tiled and untiled outputs are the
same up to float rounding, and beyond that the ramp hides what differences remain.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vsdeblur.errors import UsageError
from vsdeblur.models import Preset

MIN_SIDE = 32  # smallest frame side: stage 2 needs 2 pixels at 1/16 for its reflect padding


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad the bottom and right edges of N x C x H x W up to a multiple."""
    h, w = x.shape[-2:]
    ph, pw = round_up(h, multiple) - h, round_up(w, multiple) - w
    return F.pad(x, (0, pw, 0, ph), mode="reflect") if ph or pw else x


def _axis_tiles(length: int, tile: int, overlap: int, multiple: int) -> list[tuple[int, int]]:
    """(start, end) of the fewest tiles of at most about `tile` pixels covering [0, length),
    shrunk to share the length evenly; the last one snaps to the end."""
    if tile >= length:
        return [(0, length)]
    count = math.ceil((length - overlap) / (tile - overlap))
    tile = min(round_up(math.ceil((length + (count - 1) * overlap) / count), multiple), length)
    starts = sorted({min(i * (tile - overlap), length - tile) for i in range(count)})
    return [(s, s + tile) for s in starts]


def _axis_weights(spans: list[tuple[int, int]], index: int, device: torch.device | str) -> torch.Tensor:
    start, end = spans[index]
    weight = torch.ones(end - start, device=device)
    pos = torch.arange(end - start, dtype=torch.float32, device=device) + 0.5
    if index > 0:  # ramp in from the previous tile
        v = spans[index - 1][1] - start
        weight = torch.minimum(weight, ((pos - v / 4) / (v / 2)).clamp(0, 1))
    if index < len(spans) - 1:  # ramp out towards the next tile
        v = end - spans[index + 1][0]
        weight = torch.minimum(weight, (((end - start) - pos - v / 4) / (v / 2)).clamp(0, 1))
    return weight


@dataclass(frozen=True)
class Tile:
    ys: slice
    xs: slice
    weight: torch.Tensor | None  # 1 x 1 x h x w fp32 feather weights; None for a single whole-frame tile


def tile_geometry(tile: int, overlap: int, multiple: int) -> tuple[int, int]:
    """The tile side and overlap that `plan_tiles` uses for a requested tile side; the engine
    also calls it when it is built, so that a bad pair fails before any frame is read."""
    given_tile, given_overlap = tile, overlap
    overlap = round_up(overlap, multiple)
    tile = max(round_up(tile, multiple), MIN_SIDE)
    if tile < 2 * overlap:
        raise UsageError(f"tile size {given_tile} must be at least twice the overlap of {given_overlap} px (--tile, --overlap; "
                         f"the default overlap is the preset's): give a tile size of {2 * overlap} or more, a smaller "
                         "overlap, or tile 0 for whole frames")
    return tile, overlap


def plan_tiles(height: int, width: int, tile: int | None, overlap: int, multiple: int,
               device: torch.device | str) -> list[Tile]:
    """Tiles over a padded frame. Starts and sizes are multiples of `multiple`, so that each
    tile sees the same stride and pooling grid as the whole frame does. The weights are built
    on `device`, once per plan: moving them there per tile and frame would synchronise a CUDA
    stream each time."""
    if not tile or (tile >= height and tile >= width):
        return [Tile(slice(0, height), slice(0, width), None)]
    tile, overlap = tile_geometry(tile, overlap, multiple)
    rows = _axis_tiles(height, tile, overlap, multiple)
    cols = _axis_tiles(width, tile, overlap, multiple)
    tiles = []
    for i, (y0, y1) in enumerate(rows):
        for j, (x0, x1) in enumerate(cols):
            weight = _axis_weights(rows, i, device)[:, None] * _axis_weights(cols, j, device)[None, :]
            tiles.append(Tile(slice(y0, y1), slice(x0, x1), weight[None, None]))
    return tiles


# The eight dihedral transforms as (quarter turns, mirrored). Each is undone exactly.
DIHEDRAL = [(k, m) for m in (False, True) for k in range(4)]


def transform(x: torch.Tensor, k: int, mirrored: bool) -> torch.Tensor:
    if mirrored:
        x = x.flip(-1)
    return torch.rot90(x, k, dims=(-2, -1)) if k else x


def untransform(x: torch.Tensor, k: int, mirrored: bool) -> torch.Tensor:
    if k:
        x = torch.rot90(x, -k, dims=(-2, -1))
    return x.flip(-1) if mirrored else x


def blend(tiles: list[Tile], run: Callable[[int, Tile], torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """Run `run(index, tile)` for every tile and feather the results into one frame of
    `like`'s shape. The sums are fp32 whatever the tiles' precision: in fp16 a pixel's
    weighted sum would be rounded once per tile that covers it."""
    if len(tiles) == 1 and tiles[0].weight is None:
        return run(0, tiles[0])
    out = torch.zeros_like(like, dtype=torch.float32)
    total = torch.zeros_like(like[:, :1], dtype=torch.float32)
    for i, t in enumerate(tiles):
        out[..., t.ys, t.xs] += run(i, t) * t.weight
        total[..., t.ys, t.xs] += t.weight
    return out / total


def bytes_per_pixel(preset: Preset, stage: int, dtype: torch.dtype) -> float:
    """A conservative estimate of peak activation memory per input pixel, for auto tiling.

    Stage 1: the upsampling conv's padded input (block + skip width, twice) and its output at
    full resolution dominate; inside a block, seven block-widths at a quarter of the pixels.
    Stage 2: the cached pyramids of the window plus the decoder's full-resolution tail.
    """
    s1, s2 = preset.stage1, preset.stage2
    sub = 4 if s1.downsample else 1
    channels = max(7 * s1.block_width / sub, 2 * (s1.block_width + s1.down_width) + s1.up_width)
    if stage == 2:
        pyramid = s2.head_width + sum(w / 4 ** (i + 1) for i, w in enumerate(s2.encoder_widths))
        channels = max(channels, (2 * s2.radius + 2) * pyramid + 3 * s2.head_width)
    element = torch.finfo(dtype).bits // 8
    return 1.5 * channels * element


def auto_tile(device: torch.device, preset: Preset, stage: int, dtype: torch.dtype, height: int, width: int) -> int | None:
    """The largest tile side that fits in 60 % of the free device memory (None: whole frame).

    On a CPU, memory is rarely the limit: only frames beyond 16 megapixels are tiled.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget_px = 0.6 * free / bytes_per_pixel(preset, stage, dtype)
    else:
        budget_px = 4096 * 4096
    if height * width <= budget_px:
        return None
    return max(int(math.sqrt(budget_px)) // 16 * 16, 2 * round_up(preset.overlap, 16))
