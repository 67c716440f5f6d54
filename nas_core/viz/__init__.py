"""Pictures of a search, from plain data (lists and dicts as stored in the database or served as JSON).

Every renderer returns PNG or SVG bytes of a fixed, documented pixel size:

* `render_alpha_heatmap(history, nodes, fmt)`: architecture weights per epoch (`heatmap_size(nodes)`),
* `render_curves(metrics, fmt)`: losses and DSC per epoch (`CURVES_SIZE`),
* `render_cell_diagram(genotype, fmt)`: the DN and UP cells of a genotype (`CELL_SIZE`),
* `render_macro_grid(depth, fmt)`: the UNet++-like grid of cells (`GRID_SIZE`).

``synthetic=True`` puts a SYNTHETIC data tag in the title. matplotlib draws on its Agg
canvas without pyplot; nothing here touches a database, a web framework or a queue.
The names load on first use (PEP 562): `nas_core.viz.formats` (image formats, the grid's
depth limit) imports without matplotlib.
"""

from __future__ import annotations

from nas_core.lazy import lazy_exports

# Every exported name and the submodule that defines it.
_EXPORTS = {
    "CELL_SIZE": "cell", "render_cell_diagram": "cell",
    "CURVES_SIZE": "curves", "curve_names": "curves", "render_curves": "curves",
    "DPI": "figure",
    "MEDIA_TYPES": "formats", "ImageFormat": "formats", "MAX_DEPTH": "formats",
    "GRID_SIZE": "grid", "grid_cells": "grid", "grid_links": "grid", "render_macro_grid": "grid",
    "HeatmapRow": "heatmap", "heatmap_rows": "heatmap", "heatmap_size": "heatmap", "render_alpha_heatmap": "heatmap",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
