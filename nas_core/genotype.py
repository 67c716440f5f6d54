"""Genotypes: the searched architecture as plain, versioned JSON, and the PC-DARTS derivation.

``{"version": 1, "C": 16, "depth": 4, "nodes": 2, "dn": [[op, src], ...], "up": [...]}``:
two ``[op, src]`` entries per node in node order; ``src`` 0 = in_0, 1 = in_1, 2.. = earlier
nodes. Ops are keys of the edge's family in `nas_core.ops.OPS`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from nas_core.ops import OPS, op_names
from nas_core.topology import CellType, cell_edges, edge_family

GENOTYPE_VERSION = 1
EDGES_PER_NODE = 2

Entry = tuple[str, int]


class InvalidGenotype(ValueError):
    """A genotype that cannot build a network; the message names the problem."""


@dataclass(frozen=True)
class Genotype:
    """A derived architecture: the kept edges of the DN and UP cell types."""

    C: int
    depth: int
    nodes: int
    dn: tuple[Entry, ...]
    up: tuple[Entry, ...]
    version: int = GENOTYPE_VERSION

    def __post_init__(self) -> None:
        validate(self)

    def cell(self, cell_type: CellType) -> tuple[Entry, ...]:
        return self.dn if cell_type is CellType.DN else self.up

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "C": self.C, "depth": self.depth, "nodes": self.nodes,
                "dn": [list(e) for e in self.dn], "up": [list(e) for e in self.up]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any) -> Genotype:
        if not isinstance(data, dict):
            raise InvalidGenotype(f"a genotype must be a JSON object, got {type(data).__name__}")
        missing = {"version", "C", "depth", "nodes", "dn", "up"} - set(data)
        if missing:
            raise InvalidGenotype(f"genotype is missing field(s) {sorted(missing)}")
        if data["version"] != GENOTYPE_VERSION:
            raise InvalidGenotype(f"genotype version {data['version']!r} is not supported; "
                                  f"this build reads version {GENOTYPE_VERSION}")
        return cls(C=data["C"], depth=data["depth"], nodes=data["nodes"],
                   dn=_entries(data["dn"], "dn"), up=_entries(data["up"], "up"),
                   version=data["version"])

    @classmethod
    def from_json(cls, text: str) -> Genotype:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise InvalidGenotype(f"genotype is not valid JSON: {exc}") from None

    @classmethod
    def load(cls, path: str | Path) -> Genotype:
        return cls.from_json(Path(path).read_text())


def _entries(raw: Any, name: str) -> tuple[Entry, ...]:
    if not isinstance(raw, list | tuple):
        raise InvalidGenotype(f"genotype field {name!r} must be a list of [op, src] pairs")
    out = []
    for i, item in enumerate(raw):
        if not (isinstance(item, list | tuple) and len(item) == 2 and isinstance(item[0], str)
                and isinstance(item[1], int) and not isinstance(item[1], bool)):
            raise InvalidGenotype(f"{name}[{i}] = {item!r} must be [op_name, source_index]")
        out.append((item[0], item[1]))
    return tuple(out)


def validate(g: Genotype) -> None:
    """Raise InvalidGenotype naming the first problem found."""
    if g.version != GENOTYPE_VERSION:
        raise InvalidGenotype(f"genotype version {g.version!r} is not supported; expected {GENOTYPE_VERSION}")
    for field, value, low in (("C", g.C, 1), ("depth", g.depth, 1), ("nodes", g.nodes, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise InvalidGenotype(f"genotype {field} must be an integer >= {low}, got {value!r}")
    for cell_type in CellType:
        entries = g.cell(cell_type)
        want = EDGES_PER_NODE * g.nodes
        if len(entries) != want:
            raise InvalidGenotype(f"{cell_type.value} has {len(entries)} entries; "
                                  f"{g.nodes} nodes need exactly {want} ({EDGES_PER_NODE} per node)")
        for i, (op, src) in enumerate(entries):
            node = i // EDGES_PER_NODE
            if not 0 <= src < node + 2:
                raise InvalidGenotype(f"{cell_type.value}[{i}]: source {src} is out of range for node {node}; "
                                      f"valid sources are 0..{node + 1}")
            family = edge_family(cell_type, src)
            if op == "none" or op not in OPS[family]:
                known = sorted(n for n in OPS[family] if n != "none")
                raise InvalidGenotype(f"{cell_type.value}[{i}]: op {op!r} is not in the "
                                      f"{family.value.upper()} family used by source {src}; known: {known}")
        for node in range(g.nodes):
            srcs = [src for _, src in entries[EDGES_PER_NODE * node : EDGES_PER_NODE * (node + 1)]]
            if len(set(srcs)) != len(srcs):
                raise InvalidGenotype(f"{cell_type.value} node {node} uses source {srcs[0]} twice; "
                                      "each node keeps distinct incoming edges")


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
