"""A latency-aware search, as FBNet and ProxylessNAS do: a measured cost for every candidate op.

The table holds, for every op family, op and resolution level, the forward time of that op
(batch 1, C channels) measured on the device the search runs on, at the job's working size.
It is measured once per (device kind, C, depth, size, torch version) and cached as JSON.

The supernet's expected latency is then linear in the op probabilities: the alphas of a
cell type are shared by all its cells, so for each cell type a cost matrix ``[E, n_ops]``
sums the op's latency over the levels of every cell of that type, and

    E[latency] = sum over cell types of (softmax(alpha) * cost).sum()

which is differentiable in the alphas. The architecture loss adds
``latency_weight * E[latency] / target`` (target: ``latency_target_ms``, or the expected
latency of uniform alphas), so a weight of 0.1 trades 10% of expected latency against 0.1
of the task loss.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from nas_core.data.frame import as_hw
from nas_core.io import atomic_write_text
from nas_core.ops import Family, build_op, op_names
from nas_core.topology import CellType, cell_edges, dn_levels, num_alpha_columns, up_positions

log = logging.getLogger(__name__)

TABLE_VERSION = 1
Table = dict[str, dict[str, dict[str, float]]]  # family -> op -> output level (str) -> milliseconds


def _input_level(family: Family, level: int) -> int:
    """Resolution level of an op's input for an output at ``level``."""
    return {Family.DN: level - 1, Family.UP: level + 1, Family.NODE: level}[family]


@torch.no_grad()
def _time_op(op: torch.nn.Module, x: torch.Tensor, reps: int) -> float:
    op(x)  # warm-up (allocations, oneDNN primitive creation)
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        op(x)
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000.0


Size = int | tuple[int, int] | list[int]


def measure_table(channels: int, depth: int, size: Size, device: torch.device, reps: int = 5) -> Table:
    """Milliseconds per op, family and output level (0 = full resolution) on ``device``."""
    levels = {Family.DN: range(1, depth + 1), Family.UP: range(0, depth), Family.NODE: range(0, depth + 1)}
    table: Table = {}
    for family in Family:
        table[family.value] = {}
        for name in op_names(family):
            op = build_op(family, name, channels).to(device).eval()
            table[family.value][name] = {}
            for level in levels[family]:
                scale = 2 ** _input_level(family, level)
                x = torch.randn(1, channels, *(max(1, s // scale) for s in as_hw(size)), device=device)
                table[family.value][name][str(level)] = _time_op(op, x, reps)
    return table


def table_key(channels: int, depth: int, size: Size, device: torch.device) -> str:
    kind = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu-{torch.get_num_threads()}t"
    payload = {"v": TABLE_VERSION, "C": channels, "depth": depth, "size": list(as_hw(size)), "device": kind,
               "torch": torch.__version__}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def latency_table(channels: int, depth: int, size: Size, device: torch.device,
                  cache_dir: Path | None = None) -> Table:
    """The table for this configuration and device: read from ``cache_dir`` or measured (and cached)."""
    path = None if cache_dir is None else Path(cache_dir) / f"latency-{table_key(channels, depth, size, device)}.json"
    if path is not None and path.is_file():
        try:
            return json.loads(path.read_text())["table"]
        except (OSError, ValueError, KeyError):
            log.warning("ignoring unreadable latency table %s", path)
    t0 = time.perf_counter()
    table = measure_table(channels, depth, size, device)
    log.info("latency table measured in %.1fs", time.perf_counter() - t0)
    if path is not None:
        atomic_write_text(path, json.dumps({"channels": channels, "depth": depth, "size": list(as_hw(size)),
                                            "device": str(device), "table": table}))
    return table


def cost_matrices(table: Table, depth: int, nodes: int) -> dict[CellType, torch.Tensor]:
    """Per cell type, ``[E, n_cols]``: each edge op's latency summed over the cells of that type."""
    cells = {CellType.DN: list(dn_levels(depth)), CellType.UP: [j for _, j in up_positions(depth)]}
    out = {}
    for cell_type, levels in cells.items():
        edges = cell_edges(cell_type, nodes)
        cost = torch.zeros(len(edges), num_alpha_columns(cell_type))
        for e in edges:
            for col, name in enumerate(op_names(e.family)):
                cost[e.index, col] = sum(table[e.family.value][name][str(level)] for level in levels)
        out[cell_type] = cost
    return out


def expected_latency(alphas: dict[CellType, torch.Tensor], costs: dict[CellType, torch.Tensor],
                     nodes: int) -> torch.Tensor:
    """Softmax-weighted latency of every mixed op, summed (milliseconds; differentiable)."""
    total = None
    for cell_type, cost in costs.items():
        for e in cell_edges(cell_type, nodes):
            n = len(op_names(e.family))
            p = torch.softmax(alphas[cell_type][e.index, :n], dim=-1)
            term = (p * cost[e.index, :n].to(p.device)).sum()
            total = term if total is None else total + term
    assert total is not None
    return total


class LatencyLoss:
    """``weight * E[latency] / target`` for the architecture step."""

    def __init__(self, table: Table, depth: int, nodes: int, weight: float, target_ms: float | None) -> None:
        self.table, self.nodes, self.weight = table, nodes, weight
        self.costs = cost_matrices(table, depth, nodes)
        uniform = {t: torch.zeros_like(c) for t, c in self.costs.items()}
        self.target_ms = target_ms or float(expected_latency(uniform, self.costs, nodes))

    def __call__(self, alphas: dict[CellType, torch.Tensor]) -> torch.Tensor:
        return self.weight * expected_latency(alphas, self.costs, self.nodes) / self.target_ms

    def describe(self) -> dict[str, Any]:
        return {"weight": self.weight, "target_ms": self.target_ms, "table": self.table}


@torch.no_grad()
def measure_network_ms(model: torch.nn.Module, in_channels: int, size: Size, device: torch.device,
                       reps: int = 5) -> float:
    """Median forward time (batch 1, at ``size``: S or [H, W]) of a whole network, in milliseconds."""
    model = model.to(device).eval()
    return _time_op(model, torch.randn(1, in_channels, *as_hw(size), device=device), reps)
