"""The architecture-weight history as a heatmap: rows = (edge, op), columns = epochs.

One panel per cell type (DN left, UP right). Rows follow the alpha rows
(`nas_core.topology.cell_edges`) and, within an edge, its family's ops
(`nas_core.space.op_names`), labelled ``n1<-in_1: conv_3x3``. Colour = W[e, op]
(`nas_core.derive.edge_weights`) or, with ``value="softmax"``, softmax(alpha) over the
edge's ops. The rows the final genotype keeps are marked: a star and bold red label, and
a red outline along the row.

Size: `HEATMAP_WIDTH` x (`HEATMAP_TOP` + `HEATMAP_BOTTOM` + `HEATMAP_ROW` x the larger
panel's row count) pixels; `heatmap_size(nodes)` computes it (nodes=2: 1600 x 650).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle

from nas_core.ops import op_names
from nas_core.topology import CellType, cell_edges
from nas_core.viz.figure import new_figure, serialised, title, to_bytes
from nas_core.viz.history import Snapshot, cell_values, chosen_set, final_cells, snapshots, source_name

HEATMAP_WIDTH = 1600
HEATMAP_ROW = 14
HEATMAP_TOP = 100
HEATMAP_BOTTOM = 60
MARK = "\u2605"  # a black star
MARK_COLOUR = "crimson"
MAX_EPOCH_TICKS = 25


@dataclass(frozen=True)
class HeatmapRow:
    """One row of a heatmap panel: op `op` on the edge into node `node` from source `src`."""

    cell_type: CellType
    edge: int
    node: int
    src: int
    op: str
    chosen: bool

    @property
    def label(self) -> str:
        return f"n{self.node}<-{source_name(self.src)}: {self.op}"


def rows_for(cell_type: CellType, nodes: int, chosen: Iterable[tuple[str, int]] = ()) -> list[HeatmapRow]:
    """Every (edge, op) row of a cell type; ``chosen`` = the genotype's (op, src) entries to mark."""
    marked = chosen_set(list(chosen))
    return [HeatmapRow(cell_type, e.index, e.node, e.src, op, (e.node, e.src, op) in marked)
            for e in cell_edges(cell_type, nodes) for op in op_names(e.family)]


def heatmap_rows(history: Iterable[Mapping[str, Any]], nodes: int, *,
                 genotype: Mapping[str, Any] | None = None) -> dict[CellType, list[HeatmapRow]]:
    """The rows `render_alpha_heatmap` draws, per cell type, with the final genotype's rows marked."""
    snaps = snapshots(history)
    cells, _ = final_cells(snaps, nodes, genotype)
    return {t: rows_for(t, nodes, cells.get(t, [])) for t in CellType}


def heatmap_size(nodes: int) -> tuple[int, int]:
    """(width, height) in pixels of the heatmap of a cell with `nodes` nodes."""
    most = max(len(rows_for(t, nodes)) for t in CellType)
    return HEATMAP_WIDTH, HEATMAP_TOP + HEATMAP_BOTTOM + HEATMAP_ROW * most


def _matrix(snaps: list[Snapshot], rows: list[HeatmapRow], epochs: list[int], nodes: int,
            value: str) -> np.ndarray:
    """[rows, epochs]; NaN where an epoch has no snapshot of the cell type."""
    out = np.full((len(rows), len(epochs)), np.nan)
    column = {e: i for i, e in enumerate(epochs)}
    for snap in snaps:
        weights = cell_values(snap, nodes, value)
        for r, row in enumerate(rows):
            out[r, column[snap.epoch]] = weights[row.edge][row.op]
    return out


def _epoch_ticks(ax: Axes, epochs: list[int]) -> None:
    step = max(1, math.ceil(len(epochs) / MAX_EPOCH_TICKS))
    positions = list(range(0, len(epochs), step))
    ax.set_xticks(positions, [str(epochs[i]) for i in positions], fontsize=8)
    ax.set_xlabel("epoch")


def _panel(ax: Axes, cell_type: CellType, rows: list[HeatmapRow], matrix: np.ndarray, epochs: list[int],
           vmax: float) -> Any:
    cmap = colormaps["viridis"].with_extremes(bad="#dddddd")
    image = ax.imshow(np.ma.masked_invalid(matrix), aspect="auto", interpolation="nearest", cmap=cmap,
                      vmin=0.0, vmax=vmax, extent=(-0.5, max(len(epochs), 1) - 0.5, len(rows) - 0.5, -0.5))
    ax.set_yticks(range(len(rows)), [f"{MARK} {r.label}" if r.chosen else r.label for r in rows], fontsize=8)
    for tick, row in zip(ax.get_yticklabels(), rows, strict=True):
        if row.chosen:
            tick.set_color(MARK_COLOUR)
            tick.set_fontweight("bold")
    for r, row in enumerate(rows):
        if r and row.edge != rows[r - 1].edge:
            ax.axhline(r - 0.5, color="white", linewidth=2.0 if row.node != rows[r - 1].node else 1.0)
        if row.chosen:
            ax.add_patch(Rectangle((-0.5, r - 0.5), max(len(epochs), 1), 1, fill=False,
                                   edgecolor=MARK_COLOUR, linewidth=1.5))
    if epochs:
        _epoch_ticks(ax, epochs)
    else:
        ax.set_xticks([])
        ax.text(0, (len(rows) - 1) / 2, "no snapshots yet", ha="center", va="center", fontsize=12)
    ax.set_title(f"{cell_type.value.upper()} cell", fontsize=11)
    return image


@serialised
def render_alpha_heatmap(history: Iterable[Mapping[str, Any]], nodes: int, fmt: str = "png", *,
                         genotype: Mapping[str, Any] | None = None, value: str = "weight",
                         synthetic: bool = False) -> bytes:
    """PNG/SVG bytes of the alpha history (see the module doc for rows, colours and size).

    Args:
        history: snapshots as stored or served (`nas_core.viz.history`), any epochs, both cell types.
        nodes: nodes per cell of the job (its config's ``nodes``).
        fmt: ``"png"`` or ``"svg"``.
        genotype: the genotype to mark; default the last epoch's stored genotype, else derived.
        value: ``"weight"`` (W[e, op]) or ``"softmax"`` (softmax(alpha) per edge).
        synthetic: say SYNTHETIC data in the title.
    """
    snaps = snapshots(history)
    cells, source = final_cells(snaps, nodes, genotype)
    epochs = sorted({s.epoch for s in snaps})
    panels = []
    for cell_type in CellType:
        rows = rows_for(cell_type, nodes, cells.get(cell_type, []))
        mine = [s for s in snaps if s.cell_type is cell_type]
        panels.append((cell_type, rows, _matrix(mine, rows, epochs, nodes, value)))
    finite = [m[np.isfinite(m)] for _, _, m in panels]
    vmax = max((float(f.max()) for f in finite if f.size), default=1.0) or 1.0

    width, height = heatmap_size(nodes)
    fig = new_figure(width, height)
    top, bottom = 1 - HEATMAP_TOP / height, HEATMAP_BOTTOM / height
    axes = fig.subplots(1, 2)
    fig.subplots_adjust(left=0.13, right=0.9, wspace=0.42, top=top, bottom=bottom)
    image = None
    for ax, (cell_type, rows, matrix) in zip(axes, panels, strict=True):
        image = _panel(ax, cell_type, rows, matrix, epochs, vmax)
    what = "W[e, op] = softmax(alpha) x softmax_node(beta)" if value == "weight" else "softmax(alpha) per edge"
    fig.suptitle(title(f"Architecture weights per epoch: {what}", synthetic), fontsize=13, y=1 - 18 / height)
    fig.text(0.5, 1 - 46 / height, f"{MARK} red rows: kept by the final genotype ({source}); "
             "grey: epoch not recorded", ha="center", fontsize=9, color="#444444")
    assert image is not None  # one panel per cell type, and there are two
    cbar_ax = fig.add_axes((0.93, bottom, 0.012, top - bottom))
    fig.colorbar(image, cax=cbar_ax).ax.tick_params(labelsize=8)
    return to_bytes(fig, fmt)
