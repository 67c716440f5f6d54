"""The macro grid (UNet++-like) of DN and UP cells and their connections, as `nas_core.topology` wires it.

Column ``k`` left to right, level ``j`` top (full size) to bottom (``H / 2**j``). The stem
is ``(0, 0)``; DN cells ``(0, j)``, ``j = 1..L``; UP cells ``(k, j)``, ``k >= 1``,
``j + k <= L``; the head follows ``(L, 0)``. Links: a DN cell's in_1 from the cell above
and in_0 from two above (an arc on the left); an UP cell's in_1 from ``(k-1, j+1)``
(upsampled, diagonal) and in_0 from every ``(m, j)``, ``m < k`` (concatenated; arcs over
the row). Size: `GRID_SIZE` pixels (1000 x 800) for every depth.
"""

from __future__ import annotations

from typing import Literal

from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from nas_core.topology import dn_input_levels, dn_levels, up_positions
from nas_core.viz.figure import new_figure, serialised, title, to_bytes
from nas_core.viz.formats import MAX_DEPTH

GRID_SIZE = (1000, 800)
DX, DY = 2.4, 1.8  # data units between columns / levels
BOX_W, BOX_H = 1.6, 0.8
LINK_STYLE = {  # kind -> (colour, linestyle, legend)
    "down": ("#1f77b4", "-", "DN in_1 (the cell above)"),
    "skip2": ("#7fb3d5", "--", "DN in_0 (two above)"),
    "up": ("#ff7f0e", "-", "UP in_1 (upsampled from (k-1, j+1))"),
    "concat": ("#2ca02c", "-", "UP in_0 (concat of (m, j), m < k)"),
}

Pos = tuple[int, int]
LinkKind = Literal["down", "skip2", "up", "concat"]


def grid_cells(depth: int) -> list[tuple[str, int, int]]:
    """The searched cells: ``("dn", 0, j)`` for j = 1..L, then ``("up", k, j)``; L + L(L+1)/2 of them."""
    _check(depth)
    return [("dn", 0, j) for j in dn_levels(depth)] + [("up", k, j) for k, j in up_positions(depth)]


def grid_links(depth: int) -> list[tuple[Pos, Pos, LinkKind]]:
    """Every (source, target, kind) link of the grid; (0, 0) is the stem."""
    links: list[tuple[Pos, Pos, LinkKind]] = []
    for j in dn_levels(depth):
        in0, in1 = dn_input_levels(j)
        links.append(((0, in1), (0, j), "down"))
        if in0 != in1:
            links.append(((0, in0), (0, j), "skip2"))
    for k, j in up_positions(depth):
        links.append(((k - 1, j + 1), (k, j), "up"))
        links.extend(((m, j), (k, j), "concat") for m in range(k))
    return links


def _check(depth: int) -> None:
    if not isinstance(depth, int) or isinstance(depth, bool) or not 1 <= depth <= MAX_DEPTH:
        raise ValueError(f"depth must be an integer in 1..{MAX_DEPTH}, got {depth!r}")


def _xy(pos: Pos) -> tuple[float, float]:
    return pos[0] * DX, -pos[1] * DY


def _rad(kind: LinkKind, src: Pos, dst: Pos) -> float:
    if kind == "skip2":
        return 0.6  # bulges left of column 0
    if kind == "concat" and dst[0] - src[0] > 1:
        return -0.22  # bulges above the row
    return 0.0


def _draw(ax: Axes, depth: int, fontsize: float) -> None:
    boxes: dict[Pos, FancyBboxPatch] = {}

    def box(pos: Pos, text: str, face: str) -> None:
        x, y = _xy(pos)
        patch = FancyBboxPatch((x - BOX_W / 2, y - BOX_H / 2), BOX_W, BOX_H, boxstyle="round,pad=0.04,rounding_size=0.15",
                               facecolor=face, edgecolor="#333333", linewidth=1.0, zorder=3)
        ax.add_patch(patch)
        ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, zorder=4)
        boxes[pos] = patch

    box((0, 0), "stem", "#eeeeee")
    for kind, k, j in grid_cells(depth):
        box((k, j), f"{kind.upper()} ({k},{j})", "#dbe8f6" if kind == "dn" else "#fde6cf")
    head = (depth + 1, 0)
    box(head, "head", "#e3f1e3")
    for src, dst, kind in grid_links(depth) + [((depth, 0), head, "concat")]:
        colour, style, _ = LINK_STYLE[kind] if dst != head else ("#333333", "-", "")
        ax.add_patch(FancyArrowPatch(_xy(src), _xy(dst), patchA=boxes[src], patchB=boxes[dst],
                                     connectionstyle=f"arc3,rad={_rad(kind, src, dst)}", arrowstyle="-|>",
                                     mutation_scale=10, color=colour, linestyle=style, linewidth=1.3, zorder=2))
    for j in range(depth + 1):
        ax.text(-DX * 0.75, -j * DY, "H" if j == 0 else f"H/{2 ** j}", ha="right", va="center",
                fontsize=fontsize, color="#555555")
    ax.set_xlim(-DX * 1.2, (depth + 1) * DX + DX * 0.6)
    ax.set_ylim(-depth * DY - DY * 0.6, DY * 1.0)
    ax.set_aspect("equal")
    ax.axis("off")


@serialised
def render_macro_grid(depth: int = 4, fmt: str = "png", *, synthetic: bool = False) -> bytes:
    """PNG/SVG bytes of the macro grid of `depth` (1..8) DN levels (`GRID_SIZE` pixels)."""
    _check(depth)
    fig = new_figure(*GRID_SIZE)
    ax = fig.add_axes((0.02, 0.1, 0.96, 0.8))
    _draw(ax, depth, fontsize=max(5.0, 11.0 - depth / 2))
    handles = [Line2D([], [], color=c, linestyle=s, linewidth=1.5)  # type: ignore[arg-type]  # literal styles
               for c, s, _ in LINK_STYLE.values()]
    fig.legend(handles, [name for _, _, name in LINK_STYLE.values()], loc="lower center", ncol=2, fontsize=9,
               frameon=False)
    n_up = depth * (depth + 1) // 2
    fig.suptitle(title(f"Macro grid, depth {depth}: {depth} DN + {n_up} UP cells, every cell C channels",
                       synthetic), fontsize=13)
    return to_bytes(fig, fmt)
