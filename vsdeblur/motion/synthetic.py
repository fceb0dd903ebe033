"""Known camera motions of a picture, for tests and measurements of the estimator.

A `Warp` moves a picture's content by a translation, a roll about the centre and a zoom about
the centre: content at p goes to centre + zoom * R(roll) (p - centre) + (dx, dy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Warp:
    dx: float = 0.0  # pixels of the output picture
    dy: float = 0.0
    roll: float = 0.0  # degrees, clockwise on screen (y points down)
    zoom: float = 1.0

    def _matrix(self) -> torch.Tensor:
        angle = math.radians(self.roll)
        c, s = math.cos(angle) * self.zoom, math.sin(angle) * self.zoom
        return torch.tensor([[c, -s], [s, c]], dtype=torch.float64)

    def field(self, points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Where content at `points` (... x 2, x and y in pixels of a picture of `size` (h, w))
        moves, minus where it was: its displacement, ... x 2."""
        h, w = size
        centre = torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=torch.float64)
        p = points.double() - centre
        moved = p @ self._matrix().T + torch.tensor([self.dx, self.dy], dtype=torch.float64)
        return (moved - p).to(points.dtype)

    def apply(self, picture: torch.Tensor, supersample: int = 2) -> torch.Tensor:
        """The picture (H x W) warped, at 1/supersample of its size: it is resampled (bicubic)
        at full size and box-averaged, so interpolation error is averaged away. Outside the
        picture reflects. Translations are in pixels of the smaller output."""
        H, W = picture.shape
        s = supersample
        inverse = torch.linalg.inv(self._matrix())
        ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
        centre = torch.tensor([(W - 1) / 2, (H - 1) / 2], dtype=torch.float64)
        q = torch.stack([xs, ys], dim=-1) - centre - torch.tensor([self.dx, self.dy], dtype=torch.float64) * s
        source = q @ inverse.T + centre
        grid = torch.stack([source[..., 0] / (W - 1) * 2 - 1, source[..., 1] / (H - 1) * 2 - 1], dim=-1)
        warped = F.grid_sample(picture[None, None].double(), grid[None], mode="bicubic", padding_mode="reflection", align_corners=True)
        return F.avg_pool2d(warped, s)[0, 0].to(picture.dtype)
