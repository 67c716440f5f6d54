"""Figures of a fixed pixel size, saved to PNG or SVG bytes with matplotlib's Agg canvas.

No pyplot: every figure is a `matplotlib.figure.Figure` on its own `FigureCanvasAgg`, so
nothing depends on a global backend or a display. Sizes are exact: ``figsize * DPI``
pixels, saved without ``bbox_inches="tight"``. SVG output is deterministic (fixed hash
salt, no date) and keeps text as ``<text>`` elements (``svg.fonttype = none``), so the
labels are searchable and selectable. One figure renders at a time per process
(`RENDER_LOCK`): rcParams are global and matplotlib is not thread-safe, and the API
renders in a threadpool.
"""

from __future__ import annotations

import functools
import io
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nas_core.viz.formats import ImageFormat, image_format

#: Pixels per inch of every figure; a figure of ``(w, h)`` pixels has figsize ``(w / DPI, h / DPI)``.
DPI = 100
RENDER_LOCK = threading.RLock()
SYNTHETIC_TAG = "SYNTHETIC data"

P = ParamSpec("P")
R = TypeVar("R")


def new_figure(width_px: int, height_px: int) -> Figure:
    """A figure of exactly ``width_px`` x ``height_px`` pixels (at `DPI`)."""
    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def title(text: str, synthetic: bool) -> str:
    """A plot title; ``synthetic`` appends a visible SYNTHETIC data tag."""
    return f"{text}  [{SYNTHETIC_TAG}]" if synthetic else text


def to_bytes(fig: Figure, fmt: str) -> bytes:
    """The figure as PNG or SVG bytes, at its exact size."""
    kind = image_format(fmt)
    buf = io.BytesIO()
    rc = {"svg.fonttype": "none", "svg.hashsalt": "thrifty-nas"}
    metadata = {"Date": None} if kind is ImageFormat.SVG else {"Software": None}
    with matplotlib.rc_context(rc):  # type: ignore[arg-type]  # the stubs want literal keys
        fig.savefig(buf, format=kind.value, dpi=DPI, metadata=metadata)
    return buf.getvalue()


def serialised(func: Callable[P, R]) -> Callable[P, R]:
    """Run a renderer under `RENDER_LOCK` (one figure at a time per process)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with RENDER_LOCK:
            return func(*args, **kwargs)

    return wrapper
