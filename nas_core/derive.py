"""Deriving a genotype from architecture parameters (PyTorch): PC-DARTS with a family-fair ranking.

The genotype itself, its JSON form and its validation are `nas_core.genotype` (no PyTorch).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from nas_core.genotype import EDGES_PER_NODE, Entry, Genotype, InvalidGenotype
from nas_core.space import op_names
from nas_core.topology import CellType, cell_edges


def edge_weights(alpha: torch.Tensor, beta: torch.Tensor, cell_type: CellType,
                 nodes: int) -> list[dict[str, float]]:
    """W[e, op] = softmax(alpha)[e, op] * softmax_node(beta)[e], per edge as {op: weight}."""
    edges = cell_edges(cell_type, nodes)
    weights: list[dict[str, float]] = []
    for node in range(nodes):
        incoming = [e for e in edges if e.node == node]
        beta_n = F.softmax(beta[[e.index for e in incoming]].float(), dim=-1)
        for e, b in zip(incoming, beta_n, strict=True):
            names = op_names(e.family)
            probs = F.softmax(alpha[e.index, : len(names)].float(), dim=-1) * b
            weights.append(dict(zip(names, probs.tolist(), strict=True)))
    return weights


def edge_score(weights: dict[str, float]) -> tuple[float, str]:
    """(score, strongest non-`none` op) of one edge, fair across op families of any size.

    The score is the strongest op's weight over the mean weight of the family's non-`none`
    ops (the edge's beta factor kept). Ranking by the raw weight, as PC-DARTS does, lets a
    small family win by default: UP edges (5 ops) start at 1/5 against 1/7 for node edges,
    so with uniform alphas and betas every UP node kept `in_1`. Here every edge of uniform
    alphas scores its beta weight alone, and any lead on any edge wins.
    """
    candidates = {n: w for n, w in weights.items() if n != "none"}
    best_op = max(candidates, key=lambda n: candidates[n])
    mean = sum(candidates.values()) / len(candidates)
    return (candidates[best_op] / mean if mean > 0 else 0.0) * sum(weights.values()), best_op


def derive_cell(alpha: torch.Tensor, beta: torch.Tensor, cell_type: CellType, nodes: int) -> list[Entry]:
    """PC-DARTS rule with a family-fair ranking: per node keep the top-2 incoming edges by
    ``edge_score``, and on each the argmax non-`none` op; entries sorted by source."""
    edges = cell_edges(cell_type, nodes)
    weights = edge_weights(alpha, beta, cell_type, nodes)
    entries: list[Entry] = []
    for node in range(nodes):
        scored = []
        for e in (e for e in edges if e.node == node):
            score, best_op = edge_score(weights[e.index])
            scored.append((score, e.src, best_op))
        kept = sorted(scored, key=lambda s: (-s[0], s[1]))[:EDGES_PER_NODE]
        entries.extend((op, src) for _, src, op in sorted(kept, key=lambda s: s[1]))
    return entries


def fit_params(genotype: Genotype, alphas: dict[CellType, torch.Tensor], betas: dict[CellType, torch.Tensor],
               max_params: int, count: Callable[[Genotype], int]) -> Genotype:
    """The genotype with ops swapped for cheaper ones until ``count(genotype) <= max_params``.

    Greedy: each round, over every kept edge, try each op of the edge's family that has
    fewer parameters than the kept one; take the swap that loses the least architecture
    weight per parameter saved. Raises ``InvalidGenotype`` when even parameter-free ops on
    every edge do not fit (the stem, the fuse convs and the heads have parameters too).
    """
    cells = {t: list(genotype.cell(t)) for t in CellType}
    weights = {t: edge_weights(alphas[t], betas[t], t, genotype.nodes) for t in CellType}
    edges = {t: {(e.node, e.src): e for e in cell_edges(t, genotype.nodes)} for t in CellType}

    def build() -> Genotype:
        return Genotype(C=genotype.C, depth=genotype.depth, nodes=genotype.nodes,
                        dn=tuple(cells[CellType.DN]), up=tuple(cells[CellType.UP]))

    current = count(build())
    while current > max_params:
        best: tuple[float, CellType, int, str, int] | None = None
        for t in CellType:
            for i, (op, src) in enumerate(cells[t]):
                e = edges[t][(i // EDGES_PER_NODE, src)]
                for other in op_names(e.family):
                    if other in ("none", op):
                        continue
                    cells[t][i] = (other, src)
                    params = count(build())
                    cells[t][i] = (op, src)
                    if params < current:
                        loss = (weights[t][e.index][op] - weights[t][e.index][other]) / (current - params)
                        if best is None or loss < best[0]:
                            best = (loss, t, i, other, params)
        if best is None:
            raise InvalidGenotype(f"no genotype of this space fits max_params={max_params}: the smallest has "
                                  f"{current} parameters; raise max_params or lower channels")
        _, t, i, other, current = best
        cells[t][i] = (other, cells[t][i][1])
    return build()


def derive(alphas: dict[CellType, torch.Tensor], betas: dict[CellType, torch.Tensor], *,
           channels: int, depth: int, nodes: int) -> Genotype:
    """Derive the genotype of both cell types from architecture parameters."""
    cells = {t: tuple(derive_cell(alphas[t], betas[t], t, nodes)) for t in CellType}
    return Genotype(C=channels, depth=depth, nodes=nodes, dn=cells[CellType.DN], up=cells[CellType.UP])
