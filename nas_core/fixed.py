"""Derived (fixed) networks: the grid with each cell's kept edges from a genotype."""

from __future__ import annotations

import torch
from torch import nn

from nas_core.genotype import EDGES_PER_NODE, Genotype
from nas_core.grid import Fuse, GridNetwork, preprocess_in0
from nas_core.ops import ReLUConvBN, build_op
from nas_core.topology import CellType, edge_family


class FixedCell(nn.Module):
    """A cell whose node i sums its two kept edges; nodes fused by a 1x1 conv.

    forward(in0, in1) -> [B, C, H', W'].
    """

    def __init__(self, cell_type: CellType, level: int, k_col: int, channels: int, nodes: int,
                 entries: tuple[tuple[str, int], ...]) -> None:
        super().__init__()
        self.nodes = nodes
        self.pre0 = preprocess_in0(cell_type, level, k_col, channels)
        self.pre1 = ReLUConvBN(channels, channels, 1, 1, 0)
        self.sources = [src for _, src in entries]
        self.ops = nn.ModuleList(build_op(edge_family(cell_type, src), op, channels) for op, src in entries)
        self.fuse = Fuse(nodes, channels)

    def forward(self, in0: torch.Tensor, in1: torch.Tensor) -> torch.Tensor:
        states = [self.pre0(in0), self.pre1(in1)]
        for node in range(self.nodes):
            idx = range(EDGES_PER_NODE * node, EDGES_PER_NODE * (node + 1))
            states.append(sum(self.ops[i](states[self.sources[i]]) for i in idx))
        return self.fuse(torch.cat(states[2:], dim=1))


class ThriftyNet(GridNetwork):
    """The network a genotype describes, trained from scratch.

    Args: genotype (C, depth, nodes and the kept ops), in_channels, num_classes,
    deep_supervision. forward(x [B, in_channels, H, W]) -> [B, num_classes, H, W].
    """

    def __init__(self, genotype: Genotype, in_channels: int, num_classes: int,
                 deep_supervision: bool = False) -> None:
        super().__init__(in_channels, num_classes, genotype.C, genotype.depth, deep_supervision)
        self.genotype = genotype
        self.build_grid()

    def make_cell(self, cell_type: CellType, level: int, k: int) -> nn.Module:
        g = self.genotype
        return FixedCell(cell_type, level, k, g.C, g.nodes, g.cell(cell_type))
