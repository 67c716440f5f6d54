"""Random flips, small affine warps and optional elastic deformation of 2D slices.

All randomness comes from the torch.Generator passed in, so a given generator
state always gives the same result. One sampling grid moves image and label
together: bilinear for the image, nearest for the label (no new class ids).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=g))


@dataclass(frozen=True)
class Augment:
    """Augmentation settings; call it on (image [C,S,S], label [S,S], generator).

    flip: mirror left-right and up-down, each with probability 0.5.
    affine: rotate within +-rotate_deg and scale within ``scale``.
    elastic: smooth random displacement of up to about ``elastic_alpha`` of the
        image side, on a ``elastic_grid`` x ``elastic_grid`` control grid.
    """

    flip: bool = True
    affine: bool = True
    elastic: bool = False
    rotate_deg: float = 15.0
    scale: tuple[float, float] = (0.9, 1.1)
    elastic_alpha: float = 0.03
    elastic_grid: int = 4

    def _draw(self, g: torch.Generator) -> tuple[list[int], float, float]:
        """Flip dims, rotation (radians) and zoom, drawn in a fixed order from g."""
        flips = []
        if self.flip:
            flips = [d for d in (-1, -2) if float(torch.rand((), generator=g)) < 0.5]
        angle, zoom = 0.0, 1.0
        if self.affine:
            angle = math.radians(_uniform(g, -self.rotate_deg, self.rotate_deg))
            zoom = _uniform(g, *self.scale)
        return flips, angle, zoom

    def __call__(
        self, image: torch.Tensor, label: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        flips, angle, zoom = self._draw(generator)
        if flips:  # exact, no resampling
            image, label = image.flip(flips), label.flip(flips)
        if not (self.affine or self.elastic):
            return image.clone() if not flips else image, label.clone() if not flips else label
        size = image.shape[-2:]
        c, s = math.cos(angle) / zoom, math.sin(angle) / zoom
        theta = torch.tensor([[[c, -s, 0.0], [s, c, 0.0]]], dtype=torch.float32)
        grid = F.affine_grid(theta, [1, 1, *size], align_corners=False)
        if self.elastic:
            coarse = torch.randn((1, 2, self.elastic_grid, self.elastic_grid), generator=generator)
            shift = F.interpolate(coarse, size=tuple(size), mode="bicubic", align_corners=True)
            grid = grid + 2.0 * self.elastic_alpha * shift.permute(0, 2, 3, 1)
        out = F.grid_sample(
            image[None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        lab = F.grid_sample(
            label[None, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False
        )
        return out[0], lab[0, 0].round().to(label.dtype)
