"""The PC-DARTS supernet over the Thrifty NAS space: every edge a MixedOp, betas per edge."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from nas_core.derive import derive
from nas_core.genotype import Genotype
from nas_core.grid import Fuse, GridNetwork, preprocess_in0
from nas_core.mixed import MixedOp
from nas_core.ops import ReLUConvBN, op_names
from nas_core.topology import CellType, cell_edges, num_alpha_columns


class SearchCell(nn.Module):
    """A cell of N nodes whose every edge mixes all candidate ops.

    forward(in0, in1, alpha_weights [E, n_cols], beta_weights [E]) -> [B, C, H', W'].
    """

    def __init__(self, cell_type: CellType, level: int, k_col: int, channels: int, nodes: int,
                 k: int) -> None:
        super().__init__()
        self.nodes = nodes
        self.pre0 = preprocess_in0(cell_type, level, k_col, channels)
        self.pre1 = ReLUConvBN(channels, channels, 1, 1, 0)
        self.edges = cell_edges(cell_type, nodes)
        self.mixed = nn.ModuleList(MixedOp(e.family, channels, k) for e in self.edges)
        self.n_ops = [len(op_names(e.family)) for e in self.edges]
        self.fuse = Fuse(nodes, channels)

    def forward(self, in0: torch.Tensor, in1: torch.Tensor, alpha_weights: list[torch.Tensor],
                beta_weights: torch.Tensor) -> torch.Tensor:
        states = [self.pre0(in0), self.pre1(in1)]
        for node in range(self.nodes):
            total = None
            for edge in self.edges:
                if edge.node != node:
                    continue
                y = self.mixed[edge.index](states[edge.src], alpha_weights[edge.index], beta_weights[edge.index])
                total = y if total is None else total + y
            states.append(total)
        return self.fuse(torch.cat(states[2:], dim=1))


def edge_op_weights(alpha: torch.Tensor, n_ops: list[int]) -> list[torch.Tensor]:
    """Softmax of each alpha row over the ops its edge actually has."""
    return [F.softmax(alpha[e, :n], dim=-1) for e, n in enumerate(n_ops)]


def normalised_betas(beta: torch.Tensor, cell_type: CellType, nodes: int) -> torch.Tensor:
    """Edge normalisation: softmax of the betas over each node's incoming edges."""
    edges = cell_edges(cell_type, nodes)
    out = []
    for node in range(nodes):
        idx = [e.index for e in edges if e.node == node]
        out.append(F.softmax(beta[idx[0] : idx[-1] + 1], dim=-1))
    return torch.cat(out)


class SearchNetwork(GridNetwork):
    """The supernet searched by PC-DARTS.

    Args (beyond GridNetwork's): nodes (N per cell), k (partial-channel factor).
    Architecture parameters, one alpha [E, n_cols] and one beta [E] per cell type, shared
    by all cells of that type, are reached with `arch_parameters()`; everything else with
    `weights()`, so two optimisers can own them.
    """

    def __init__(self, in_channels: int, num_classes: int, channels: int = 16, depth: int = 4,
                 nodes: int = 2, k: int = 4, deep_supervision: bool = False) -> None:
        super().__init__(in_channels, num_classes, channels, depth, deep_supervision)
        self.nodes, self.k = nodes, k
        self.build_grid()
        n_edges = len(cell_edges(CellType.DN, nodes))
        self.alphas = nn.ParameterDict({
            t.value: nn.Parameter(1e-3 * torch.randn(n_edges, num_alpha_columns(t))) for t in CellType
        })
        self.betas = nn.ParameterDict({t.value: nn.Parameter(1e-3 * torch.randn(n_edges)) for t in CellType})
        self._weights_cache: dict[CellType, tuple[list[torch.Tensor], torch.Tensor]] = {}

    def make_cell(self, cell_type: CellType, level: int, k: int) -> nn.Module:
        return SearchCell(cell_type, level, k, self.channels, self.nodes, self.k)

    def run_cell(self, cell: nn.Module, cell_type: CellType, in0: torch.Tensor,
                 in1: torch.Tensor) -> torch.Tensor:
        alpha_w, beta_w = self._weights_cache[cell_type]
        return cell(in0, in1, alpha_w, beta_w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Softmaxes computed once per forward, shared by every cell of a type.
        for t in CellType:
            n_ops = [len(op_names(e.family)) for e in cell_edges(t, self.nodes)]
            self._weights_cache[t] = (edge_op_weights(self.alphas[t.value], n_ops),
                                      normalised_betas(self.betas[t.value], t, self.nodes))
        try:
            return super().forward(x)
        finally:
            self._weights_cache.clear()

    def arch_parameters(self) -> list[nn.Parameter]:
        return [*self.alphas.values(), *self.betas.values()]

    def weights(self) -> Iterator[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return (p for p in self.parameters() if id(p) not in arch)

    def genotype(self) -> Genotype:
        """The genotype the current alphas and betas derive (PC-DARTS rule)."""
        return derive(
            {t: self.alphas[t.value].detach().cpu() for t in CellType},
            {t: self.betas[t.value].detach().cpu() for t in CellType},
            channels=self.channels, depth=self.depth, nodes=self.nodes,
        )

    def arch_state(self) -> dict[str, dict[str, list]]:
        """Plain-data snapshot of the architecture parameters (for the alpha history)."""
        return {
            t.value: {
                "alphas": self.alphas[t.value].detach().cpu().tolist(),
                "betas": self.betas[t.value].detach().cpu().tolist(),
            }
            for t in CellType
        }
