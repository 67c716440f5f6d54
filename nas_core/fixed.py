"""Derived (fixed) networks: the grid with each cell's kept edges from a genotype."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nas_core.genotype import EDGES_PER_NODE, Genotype
from nas_core.grid import Fuse, GridNetwork, preprocess_in0
from nas_core.ops import ReLUConvBN, Upsample, build_op
from nas_core.topology import CellType, edge_family


def _peel(op: nn.Module) -> tuple[str, ...]:
    """An op's parameter-free leading steps: ``Upsample`` then ``ReLU``, as the UP family's
    ``_up_then(ReLUConvBN)`` and the ReLU-first conv units begin."""
    steps: list[str] = []
    if isinstance(op, nn.Sequential) and len(op) == 2 and isinstance(op[0], Upsample):
        steps.append("up")
        op = op[1]
    if isinstance(op, nn.Sequential) and len(op) > 1 and isinstance(op[0], nn.ReLU):
        steps.append("relu")
    return tuple(steps)


def _run_after(op: nn.Module, steps: tuple[str, ...], x: torch.Tensor) -> torch.Tensor:
    """``op(x)`` for an ``x`` that has already gone through ``steps`` (see :func:`_peel`)."""
    if "up" in steps:
        op = op[1]  # type: ignore[index]
    if "relu" not in steps:
        return op(x)
    for module in list(op.children())[1:]:
        x = module(x)
    return x


STEPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "up": Upsample().forward,
    "relu": F.relu,
}


class FixedCell(nn.Module):
    """A cell whose node i sums its two kept edges; nodes fused by a 1x1 conv.

    Edges that read the same source share their parameter-free first steps (the upsampling
    of ``in_1`` and the ReLU): computed once per source, the same numbers as each edge
    computing them itself.

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
        self._peeled = [_peel(op) for op in self.ops]

    def forward(self, in0: torch.Tensor, in1: torch.Tensor) -> torch.Tensor:
        states = [self.pre0(in0), self.pre1(in1)]
        shared: dict[tuple[int, tuple[str, ...]], torch.Tensor] = {}

        def prepared(src: int, steps: tuple[str, ...]) -> torch.Tensor:
            if not steps:
                return states[src]
            if (src, steps) not in shared:
                shared[(src, steps)] = STEPS[steps[-1]](prepared(src, steps[:-1]))
            return shared[(src, steps)]

        for node in range(self.nodes):
            total = None
            for i in range(EDGES_PER_NODE * node, EDGES_PER_NODE * (node + 1)):
                steps = self._peeled[i]
                out = _run_after(self.ops[i], steps, prepared(self.sources[i], steps))
                total = out if total is None else total + out
            states.append(total)
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
