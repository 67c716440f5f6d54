"""Learning curves: losses per epoch for each split (left), Dice (DSC) per epoch (right).

Losses are every metric named ``loss`` or ``*_loss`` of every split (a search's
``train loss`` and ``train arch_loss``, a retrain's ``train loss``); DSC is the ``dsc``
of each split (``arch`` for a search, ``val`` for a retrain). Null values (a diverged
or not yet evaluated epoch) are gaps. Size: `CURVES_SIZE` pixels (1200 x 500).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator

from nas_core.viz.figure import new_figure, serialised, title, to_bytes
from nas_core.viz.history import metric_epochs, series

CURVES_SIZE = (1200, 500)
SPLIT_ORDER = ("train", "arch", "val")
SPLIT_COLOURS = {"train": "tab:blue", "arch": "tab:orange", "val": "tab:green"}
MARKERS_BELOW = 40  # draw point markers when there are fewer epochs than this


def _splits(epochs: Mapping[int, Mapping[str, Any]]) -> list[str]:
    seen = {split for splits in epochs.values() for split in splits}
    return [s for s in SPLIT_ORDER if s in seen] + sorted(seen - set(SPLIT_ORDER))


def curve_names(metrics: Any) -> dict[str, list[str]]:
    """{"loss": ["train loss", ...], "dsc": ["arch dsc", ...]}: the lines `render_curves` draws."""
    epochs = metric_epochs(metrics)
    names: dict[str, list[str]] = {"loss": [], "dsc": []}
    for split in _splits(epochs):
        keys = sorted({k for splits in epochs.values() for k in splits.get(split, {})}, key=lambda k: (k != "loss", k))
        for key in keys:
            if not series(epochs, split, key)[0]:
                continue
            if key == "loss" or key.endswith("_loss"):
                names["loss"].append(f"{split} {key}")
            elif key == "dsc":
                names["dsc"].append(f"{split} {key}")
    return names


def _draw(ax: Axes, epochs: Mapping[int, Mapping[str, Any]], lines: list[str], empty: str) -> None:
    for line in lines:
        split, key = line.split(" ", 1)
        xs, ys = series(epochs, split, key)
        style = "--" if key != "loss" and key != "dsc" else "-"
        ax.plot(xs, ys, style, color=SPLIT_COLOURS.get(split), label=line,
                marker="o" if len(xs) < MARKERS_BELOW else None, markersize=4, linewidth=1.8)
    if lines:
        ax.legend(fontsize=9, loc="best")
    else:
        ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes, fontsize=12, color="#666666")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)


@serialised
def render_curves(metrics: Any, fmt: str = "png", *, synthetic: bool = False) -> bytes:
    """PNG/SVG bytes of the learning curves (`CURVES_SIZE` pixels).

    Args:
        metrics: the API's metrics body, its ``epochs`` list, or flat ``{"epoch", "split", "metrics"}`` rows.
        fmt: ``"png"`` or ``"svg"``.
        synthetic: say SYNTHETIC data in the title.
    """
    epochs = metric_epochs(metrics)
    names = curve_names(metrics)
    fig = new_figure(*CURVES_SIZE)
    loss_ax, dsc_ax = fig.subplots(1, 2)
    fig.subplots_adjust(left=0.07, right=0.98, top=0.86, bottom=0.12, wspace=0.22)
    _draw(loss_ax, epochs, names["loss"], "no losses recorded yet")
    loss_ax.set_title("Loss per epoch", fontsize=11)
    loss_ax.set_ylabel("loss")
    _draw(dsc_ax, epochs, names["dsc"], "no DSC recorded yet")
    dsc_ax.set_title("Dice (hard DSC, foreground classes, mean over cases)", fontsize=11)
    dsc_ax.set_ylabel("DSC")
    dsc_ax.set_ylim(0.0, 1.0)
    fig.suptitle(title("Learning curves", synthetic), fontsize=13)
    return to_bytes(fig, fmt)
