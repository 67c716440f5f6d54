"""Genotypes: the searched architecture as plain, versioned JSON, and its validation (no PyTorch).

``{"version": 1, "C": 16, "depth": 4, "nodes": 2, "dn": [[op, src], ...], "up": [...]}``:
two ``[op, src]`` entries per node in node order; ``src`` 0 = in_0, 1 = in_1, 2.. = earlier
nodes. Ops are names of the edge's family in `nas_core.space.OP_NAMES`. Deriving a genotype
from architecture weights (PyTorch) is `nas_core.derive`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas_core.space import OP_NAMES
from nas_core.topology import CellType, edge_family

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
            if op == "none" or op not in OP_NAMES[family]:
                known = sorted(n for n in OP_NAMES[family] if n != "none")
                raise InvalidGenotype(f"{cell_type.value}[{i}]: op {op!r} is not in the "
                                      f"{family.value.upper()} family used by source {src}; known: {known}")
        for node in range(g.nodes):
            srcs = [src for _, src in entries[EDGES_PER_NODE * node : EDGES_PER_NODE * (node + 1)]]
            if len(set(srcs)) != len(srcs):
                raise InvalidGenotype(f"{cell_type.value} node {node} uses source {srcs[0]} twice; "
                                      "each node keeps distinct incoming edges")
