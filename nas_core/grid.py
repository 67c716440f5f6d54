"""The macro network shared by the supernet and derived nets: stem, DN/UP cell grid, head.

Subclasses only say how to build a cell (`make_cell`) and how to call it (`run_cell`);
the wiring of `topology.py` lives here once.
"""

from __future__ import annotations

import torch
from torch import nn

from nas_core.ops import FactorizedReduce, ReLUConvBN
from nas_core.topology import CellType, dn_input_levels, dn_levels, up_positions


def preprocess_in0(cell_type: CellType, level: int, k: int, channels: int) -> nn.Module:
    """Bring a cell's in_0 to the resolution its edges expect, at C channels.

    DN cells' in_0 is two levels up (4x the output resolution; FactorizedReduce to 2x)
    except for the first DN cell, whose in_0 is the stem at 2x (1x1 conv). UP cells'
    in_0 is the concatenation of k same-resolution cells (k*C -> C by a 1x1 conv).
    """
    if cell_type is CellType.UP:
        return ReLUConvBN(k * channels, channels, 1, 1, 0)
    src_level, _ = dn_input_levels(level)
    if level - src_level == 2:
        return FactorizedReduce(channels, channels)
    return ReLUConvBN(channels, channels, 1, 1, 0)


class Fuse(nn.Sequential):
    """The cell output: node outputs concatenated (N*C) and fused by a 1x1 conv + BN to C."""

    def __init__(self, nodes: int, channels: int) -> None:
        super().__init__(nn.Conv2d(nodes * channels, channels, 1, bias=False), nn.BatchNorm2d(channels))


class GridNetwork(nn.Module):
    """UNet++-like grid of constant width C.

    Args:
        in_channels: image channels.
        num_classes: output logits channels (background included).
        channels: C, the width of every cell.
        depth: L, number of DN cells (downsamplings).
        deep_supervision: heads on every top-row UP cell: in training, the list of their
            logits (shallow to deep) for a weighted loss on each; in eval, their mean.

    forward(x [B, in_channels, H, W]) -> logits [B, num_classes, H, W]; H and W must be
    multiples of 2**depth (wrap in `PadToMultiple` for arbitrary sizes).
    """

    def __init__(self, in_channels: int, num_classes: int, channels: int, depth: int,
                 deep_supervision: bool = False) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.in_channels, self.num_classes = in_channels, num_classes
        self.channels, self.depth = channels, depth
        self.deep_supervision = deep_supervision
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels))

    def build_grid(self) -> None:
        """Create cells and heads; call at the end of the subclass __init__."""
        self.dn_cells = nn.ModuleList(self.make_cell(CellType.DN, level, 0) for level in dn_levels(self.depth))
        self.up_cells = nn.ModuleDict(
            {f"{k}_{j}": self.make_cell(CellType.UP, j, k) for k, j in up_positions(self.depth)}
        )
        n_heads = self.depth if self.deep_supervision else 1
        self.heads = nn.ModuleList(nn.Conv2d(self.channels, self.num_classes, 1) for _ in range(n_heads))

    def make_cell(self, cell_type: CellType, level: int, k: int) -> nn.Module:
        raise NotImplementedError

    def run_cell(self, cell: nn.Module, cell_type: CellType, in0: torch.Tensor,
                 in1: torch.Tensor) -> torch.Tensor:
        return cell(in0, in1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        depth = self.depth
        if x.shape[2] % 2**depth or x.shape[3] % 2**depth:
            raise ValueError(f"input {tuple(x.shape[2:])} must be a multiple of {2**depth}; "
                             "wrap the network in PadToMultiple for other sizes")
        grid: dict[tuple[int, int], torch.Tensor] = {(0, 0): self.stem(x)}
        for level, cell in zip(dn_levels(depth), self.dn_cells, strict=True):
            l0, l1 = dn_input_levels(level)
            grid[(0, level)] = self.run_cell(cell, CellType.DN, grid[(0, l0)], grid[(0, l1)])
        for k, j in up_positions(depth):
            in0 = torch.cat([grid[(m, j)] for m in range(k)], dim=1)
            grid[(k, j)] = self.run_cell(self.up_cells[f"{k}_{j}"], CellType.UP, in0, grid[(k - 1, j + 1)])
        if not self.deep_supervision:
            return self.heads[0](grid[(depth, 0)])
        logits = [head(grid[(k, 0)]) for k, head in zip(range(1, depth + 1), self.heads, strict=True)]
        return logits if self.training else torch.stack(logits).mean(0)  # type: ignore[return-value]
