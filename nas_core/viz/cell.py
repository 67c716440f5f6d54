"""A genotype drawn as its two cells (DN left, UP right), with matplotlib patches only.

Each panel: the inputs in_0 (top left) and in_1 (bottom left), nodes 0..N-1 in a column,
every kept edge as an arrow labelled with its op (colour by op), node-to-node edges as
arcs on the right of the column, then all nodes into the fuse (concat N*C, 1x1 conv + BN
to C) and the cell output. Size: `CELL_SIZE` pixels (1500 x 640).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from matplotlib.axes import Axes
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from nas_core.genotype import EDGES_PER_NODE, Genotype
from nas_core.topology import CellType
from nas_core.viz.figure import new_figure, serialised, title, to_bytes
from nas_core.viz.history import source_name

CELL_SIZE = (1500, 640)
X_MAX, Y_MAX = 13.0, 10.0  # data units of a panel (equal aspect)
IN_X, NODE_X, FUSE_X, OUT_X = 1.2, 6.0, 10.0, 12.1
BOX_W, BOX_H = 1.8, 0.9
LABEL_DISTANCE = (2.2, 3.2)  # labels of edges from in_0 / in_1 sit this far from the target node's centre

OP_COLOURS = {
    "conv_3x3": "#1f77b4", "sep_conv_3x3": "#9467bd", "dil_conv_3x3": "#2ca02c", "skip": "#444444",
    "max_pool": "#ff7f0e", "max_pool_3x3": "#ff7f0e", "avg_pool": "#8c564b", "avg_pool_3x3": "#8c564b",
    "up_conv": "#d62728",
}
INPUT_NOTES = {
    CellType.DN: ("X(0, j-2), 4x the output size", "X(0, j-1), 2x the output size"),
    CellType.UP: ("concat X(m, j), m < k, output size", "X(k-1, j+1), half the output size"),
}
PANEL_TITLES = {
    CellType.DN: "DN cell: edges from in_0/in_1 halve H and W",
    CellType.UP: "UP cell: edges from in_1 upsample x2",
}


def node_positions(nodes: int) -> dict[str, tuple[float, float]]:
    """Centre of every box of a cell panel: in_0, in_1, n0.., fuse, out."""
    pos = {"in_0": (IN_X, 8.5), "in_1": (IN_X, 1.5), "fuse": (FUSE_X, 5.0), "out": (OUT_X, 5.0)}
    for i in range(nodes):
        pos[f"n{i}"] = (NODE_X, 5.0 if nodes == 1 else 8.0 - 6.0 * i / (nodes - 1))
    return pos


def _box(ax: Axes, centre: tuple[float, float], text: str, *, width: float = BOX_W, face: str = "#e8eef7",
         bold: bool = False) -> FancyBboxPatch:
    x, y = centre
    box = FancyBboxPatch((x - width / 2, y - BOX_H / 2), width, BOX_H, boxstyle="round,pad=0.05,rounding_size=0.2",
                         facecolor=face, edgecolor="#333333", linewidth=1.2, zorder=3)
    ax.add_patch(box)
    ax.text(x, y, text, ha="center", va="center", fontsize=10, zorder=4, fontweight="bold" if bold else "normal")
    return box


def _arrow(ax: Axes, a: FancyBboxPatch, b: FancyBboxPatch, pa: tuple[float, float], pb: tuple[float, float], *,
           colour: str, rad: float = 0.0, width: float = 1.6, style: str = "-") -> None:
    ax.add_patch(FancyArrowPatch(pa, pb, patchA=a, patchB=b, connectionstyle=f"arc3,rad={rad}",
                                 arrowstyle="-|>", mutation_scale=14, color=colour, linewidth=width,
                                 linestyle=style, zorder=2))


def _label(ax: Axes, at: tuple[float, float], text: str, colour: str) -> None:
    ax.text(at[0], at[1], text, ha="center", va="center", fontsize=9, color=colour, zorder=5,
            bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.9})


def _panel(ax: Axes, cell_type: CellType, entries: tuple[tuple[str, int], ...], nodes: int) -> None:
    pos = node_positions(nodes)
    boxes = {"in_0": _box(ax, pos["in_0"], "in_0", face="#fdf1d8"),
             "in_1": _box(ax, pos["in_1"], "in_1", face="#fdf1d8")}
    for name, note in zip(("in_0", "in_1"), INPUT_NOTES[cell_type], strict=True):
        x, y = pos[name]
        ax.text(x - BOX_W / 2, y + (0.75 if name == "in_0" else -0.75), note, ha="left", va="center",
                fontsize=8, color="#555555")
    for i in range(nodes):
        boxes[f"n{i}"] = _box(ax, pos[f"n{i}"], f"node {i}")
    boxes["fuse"] = _box(ax, pos["fuse"], "fuse 1x1 conv", width=2.3, face="#e3f1e3")
    boxes["out"] = _box(ax, pos["out"], "out", width=1.2, face="#e3f1e3", bold=True)
    for i in range(nodes):
        _arrow(ax, boxes[f"n{i}"], boxes["fuse"], pos[f"n{i}"], pos["fuse"], colour="#aaaaaa", width=1.0,
               style="--")
    _arrow(ax, boxes["fuse"], boxes["out"], pos["fuse"], pos["out"], colour="#333333")
    for k, (op, src) in enumerate(entries):
        node = f"n{k // EDGES_PER_NODE}"
        source = source_name(src)
        colour = OP_COLOURS.get(op, "#333333")
        (x0, y0), (x1, y1) = pos[source], pos[node]
        if src < 2:  # straight from an input; label near the target, on the line
            _arrow(ax, boxes[source], boxes[node], pos[source], pos[node], colour=colour)
            dist = math.hypot(x1 - x0, y1 - y0)
            back = min(LABEL_DISTANCE[src], 0.55 * dist) / dist  # short edges: near their middle
            at = (x1 - (x1 - x0) * back, y1 - (y1 - y0) * back)
        else:  # node to a later node in the same column: an arc bulging right, labelled at its apex
            span = k // EDGES_PER_NODE - (src - 2)
            bulge = 0.6 + 1.2 * (span - 1)
            dist = abs(y1 - y0)
            rad = -2 * bulge / dist  # arc3 bends a downward edge to its right for rad < 0
            _arrow(ax, boxes[source], boxes[node], pos[source], pos[node], colour=colour, rad=rad)
            at = ((x0 + x1) / 2 + bulge, (y0 + y1) / 2)
        _label(ax, at, op, colour)
    ax.set_xlim(0, X_MAX)
    ax.set_ylim(0, Y_MAX)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(PANEL_TITLES[cell_type], fontsize=11)


@serialised
def render_cell_diagram(genotype: Mapping[str, Any], fmt: str = "png", *, synthetic: bool = False) -> bytes:
    """PNG/SVG bytes of a genotype's DN and UP cells (`CELL_SIZE` pixels).

    Args:
        genotype: a genotype dict (`nas_core.genotype`); an invalid one raises `InvalidGenotype`.
        fmt: ``"png"`` or ``"svg"``.
        synthetic: say SYNTHETIC data in the title (a genotype searched on synthetic data).
    """
    g = Genotype.from_dict(dict(genotype))
    fig = new_figure(*CELL_SIZE)
    axes = fig.subplots(1, 2)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.86, bottom=0.02, wspace=0.04)
    for ax, cell_type in zip(axes, CellType, strict=True):
        _panel(ax, cell_type, g.cell(cell_type), g.nodes)
    fig.suptitle(title(f"Genotype: C={g.C}, depth={g.depth}, {g.nodes} nodes per cell", synthetic), fontsize=13)
    return to_bytes(fig, fmt)
