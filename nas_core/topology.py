"""Where every edge and cell of the Thrifty NAS grid sits; shared by supernet and derived nets.

Grid (UNet++-like, constant width C). Node ``(k, j)``: column ``k``, resolution level
``j`` (level ``j`` is ``H / 2**j``). Level 0 of column 0 is the stem, at full
resolution; ``(0, j)`` for ``j = 1..L`` are the DN cells (DESIGN.md's ``X^{0,j-1}``);
``(k, j)`` with ``k >= 1`` and ``j + k <= L`` are the UP cells. The decoder therefore
ends at ``(L, 0)``, a full-resolution cell, as UNet++'s ``X^{0,4}`` does.

Cell inputs:

* DN ``(0, j)``: ``in_0 = (0, j-2)``, ``in_1 = (0, j-1)``; the stem stands in below level 0.
* UP ``(k, j)``: ``in_0 = concat((m, j) for m < k)`` at the output resolution,
  ``in_1 = (k-1, j+1)`` at half resolution.

Inside a cell with N nodes, node ``i`` has edges from sources ``0 .. i+1``
(0 = in_0, 1 = in_1, 2.. = earlier nodes). Edge families: DN cells use DN ops on both
inputs; UP cells use UP ops on ``in_1`` and stride-1 node ops on ``in_0`` (already at
the output resolution); node-to-node edges always use node ops.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from nas_core.space import Family, op_names


class CellType(StrEnum):
    DN = "dn"
    UP = "up"


@dataclass(frozen=True)
class Edge:
    """One edge of a cell: into node `node` from source `src`."""

    index: int
    node: int
    src: int
    family: Family


def edge_family(cell_type: CellType, src: int) -> Family:
    """Which op family an edge from `src` uses in a cell of `cell_type`."""
    if src >= 2:
        return Family.NODE
    if cell_type is CellType.DN:
        return Family.DN
    return Family.UP if src == 1 else Family.NODE


def cell_edges(cell_type: CellType, nodes: int) -> list[Edge]:
    """All edges of a cell, node by node, sources in ascending order (the alpha rows)."""
    edges: list[Edge] = []
    for node in range(nodes):
        for src in range(node + 2):
            edges.append(Edge(len(edges), node, src, edge_family(cell_type, src)))
    return edges


def num_alpha_columns(cell_type: CellType) -> int:
    """Width of a cell type's alpha tensor: the largest op family it uses."""
    families = {edge_family(cell_type, src) for src in range(3)}
    return max(len(op_names(f)) for f in families)


def dn_levels(depth: int) -> list[int]:
    return list(range(1, depth + 1))


def up_positions(depth: int) -> list[tuple[int, int]]:
    """UP cells ``(k, j)`` in an order where every input is computed first."""
    return [(k, j) for k in range(1, depth + 1) for j in range(0, depth - k + 1)]


def dn_input_levels(level: int) -> tuple[int, int]:
    """Levels of (in_0, in_1) for the DN cell at `level` (the stem, level 0, fills in)."""
    return max(level - 2, 0), level - 1
