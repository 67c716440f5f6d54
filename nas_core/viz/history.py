"""Plain alpha-history and metrics data, as stored or served, normalised for the renderers.

Alpha history: a list of snapshots, either flat rows (``store.history`` as dicts)
``{"epoch", "cell_type", "alphas", "betas", "genotype"}`` or the API's epochs
``{"epoch", "cells": [{"cell_type", "alphas", "betas", "genotype"}, ...]}`` (both may mix).

Metrics: the API's ``GET /v1/jobs/{id}/metrics`` body (``{"epochs": [...]}``), a list of its
``{"epoch", "splits": {split: {name: value}}}`` items, or flat rows ``{"epoch", "split", "metrics"}``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nas_core.derive import derive_cell, edge_weights
from nas_core.genotype import EDGES_PER_NODE
from nas_core.ops import op_names
from nas_core.topology import CellType, Edge, cell_edges


@dataclass(frozen=True)
class Snapshot:
    epoch: int
    cell_type: CellType
    alphas: list[list[float]]
    betas: list[float] | None
    genotype: dict[str, Any] | None


def snapshots(history: Iterable[Mapping[str, Any]]) -> list[Snapshot]:
    """Every (epoch, cell type) snapshot of `history`, sorted; a later duplicate replaces an earlier one."""
    found: dict[tuple[int, CellType], Snapshot] = {}
    for item in history:
        cells = item["cells"] if "cells" in item else [item]
        for cell in cells:
            try:
                cell_type = CellType(cell["cell_type"])
            except ValueError:
                raise ValueError(f"cell_type {cell['cell_type']!r} is not one of "
                                 f"{[t.value for t in CellType]}") from None
            snap = Snapshot(int(item["epoch"]), cell_type, cell["alphas"], cell.get("betas"), cell.get("genotype"))
            found[(snap.epoch, cell_type)] = snap
    return [found[key] for key in sorted(found)]


def source_name(src: int) -> str:
    """``0 -> in_0``, ``1 -> in_1``, ``2.. -> n0..`` (earlier nodes)."""
    return f"in_{src}" if src < 2 else f"n{src - 2}"


def _tensor(values: Sequence[Any], what: str) -> torch.Tensor:
    def num(v: Any) -> float:
        return math.nan if v is None else float(v)

    try:
        return torch.tensor([[num(v) for v in row] if isinstance(row, list | tuple) else num(row)
                             for row in values], dtype=torch.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must hold numbers (or null): {exc}") from None


def arch_tensors(snap: Snapshot, nodes: int) -> tuple[torch.Tensor, torch.Tensor, list[Edge]]:
    """(alpha [E, n_cols], beta [E], edges) of a snapshot; missing betas are zeros (uniform edge weights)."""
    edges = cell_edges(snap.cell_type, nodes)
    where = f"{snap.cell_type.value} cell, epoch {snap.epoch}"
    alpha = _tensor(snap.alphas, f"alphas of the {where}")
    if alpha.dim() != 2 or alpha.shape[0] != len(edges):
        raise ValueError(f"alphas of the {where} have shape {list(alpha.shape)}; a cell of {nodes} nodes has "
                         f"{len(edges)} edges: pass the job's `nodes`")
    widest = max(len(op_names(e.family)) for e in edges)
    if alpha.shape[1] < widest:
        raise ValueError(f"alphas of the {where} have {alpha.shape[1]} columns; its ops need {widest}")
    beta = torch.zeros(len(edges), dtype=torch.float64) if snap.betas is None else _tensor(snap.betas, f"betas of the {where}")
    if beta.shape != (len(edges),):
        raise ValueError(f"betas of the {where} have shape {list(beta.shape)}; expected [{len(edges)}]")
    return alpha, beta, edges


def cell_values(snap: Snapshot, nodes: int, value: str = "weight") -> list[dict[str, float]]:
    """Per edge, {op: number}: ``weight`` = W[e, op] (softmax(alpha) x node-normalised beta),
    ``softmax`` = softmax(alpha) over the edge's ops."""
    alpha, beta, edges = arch_tensors(snap, nodes)
    if value == "weight":
        return edge_weights(alpha, beta, snap.cell_type, nodes)
    if value == "softmax":
        out = []
        for e in edges:
            names = op_names(e.family)
            out.append(dict(zip(names, torch.softmax(alpha[e.index, : len(names)], -1).tolist(), strict=True)))
        return out
    raise ValueError(f"value {value!r} is not supported; use 'weight' or 'softmax'")


def final_cells(history: Sequence[Snapshot], nodes: int,
                genotype: Mapping[str, Any] | None = None) -> tuple[dict[CellType, list[tuple[str, int]]], str]:
    """The kept (op, src) entries per cell type to mark, and where they came from.

    ``genotype`` when given; else the genotype stored with the last epoch's snapshots; else the
    PC-DARTS derivation from the last snapshot of each cell type.
    """
    if genotype is not None:
        return _entries(genotype), "the given genotype"
    if not history:
        return {}, "no snapshots"
    last = history[-1].epoch
    for snap in reversed(history):
        if snap.epoch == last and snap.genotype is not None:
            return _entries(snap.genotype), f"genotype of epoch {last}"
    cells: dict[CellType, list[tuple[str, int]]] = {}
    for cell_type in CellType:
        latest = next((s for s in reversed(history) if s.cell_type is cell_type), None)
        if latest is not None:
            alpha, beta, _ = arch_tensors(latest, nodes)
            cells[cell_type] = derive_cell(alpha, beta, cell_type, nodes)
    return cells, f"derived from epoch {last}"


def _entries(genotype: Mapping[str, Any]) -> dict[CellType, list[tuple[str, int]]]:
    return {t: [(str(op), int(src)) for op, src in genotype.get(t.value, [])] for t in CellType}


def chosen_set(entries: Sequence[tuple[str, int]]) -> set[tuple[int, int, str]]:
    """{(node, src, op)} of a cell's genotype entries (two per node, in node order)."""
    return {(i // EDGES_PER_NODE, src, op) for i, (op, src) in enumerate(entries)}


# --- metrics ------------------------------------------------------------------------------------


def metric_epochs(metrics: Any) -> dict[int, dict[str, dict[str, Any]]]:
    """{epoch: {split: {name: value}}} from any of the accepted metrics shapes."""
    items = metrics.get("epochs", []) if isinstance(metrics, Mapping) else metrics
    out: dict[int, dict[str, dict[str, Any]]] = {}
    for item in items or []:
        epoch = int(item["epoch"])
        if "splits" in item:
            for split, values in (item["splits"] or {}).items():
                out.setdefault(epoch, {})[str(split)] = dict(values or {})
        else:
            out.setdefault(epoch, {})[str(item["split"])] = dict(item.get("metrics") or {})
    return dict(sorted(out.items()))


def series(epochs: Mapping[int, Mapping[str, Mapping[str, Any]]], split: str, name: str) -> tuple[list[int], list[float]]:
    """(epochs, values) of one metric of one split; null, missing and non-finite values are left out."""
    xs, ys = [], []
    for epoch, splits in epochs.items():
        value = splits.get(split, {}).get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            xs.append(epoch)
            ys.append(float(value))
    return xs, ys
