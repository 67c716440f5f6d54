"""Pictures of a search, from plain data (lists and dicts as stored in the database or served as JSON).

Every renderer returns PNG or SVG bytes of a fixed, documented pixel size:

* `render_alpha_heatmap(history, nodes, fmt)`: architecture weights per epoch (`heatmap_size(nodes)`),
* `render_curves(metrics, fmt)`: losses and DSC per epoch (`CURVES_SIZE`),
* `render_cell_diagram(genotype, fmt)`: the DN and UP cells of a genotype (`CELL_SIZE`),
* `render_macro_grid(depth, fmt)`: the UNet++-like grid of cells (`GRID_SIZE`).

``synthetic=True`` puts a SYNTHETIC data tag in the title. matplotlib draws on its Agg
canvas without pyplot; nothing here touches a database, a web framework or a queue.
"""

from nas_core.viz.cell import CELL_SIZE, render_cell_diagram
from nas_core.viz.curves import CURVES_SIZE, curve_names, render_curves
from nas_core.viz.figure import DPI, MEDIA_TYPES, ImageFormat
from nas_core.viz.grid import GRID_SIZE, MAX_DEPTH, grid_cells, grid_links, render_macro_grid
from nas_core.viz.heatmap import HeatmapRow, heatmap_rows, heatmap_size, render_alpha_heatmap

__all__ = [
    "CELL_SIZE", "CURVES_SIZE", "DPI", "GRID_SIZE", "MAX_DEPTH", "MEDIA_TYPES", "HeatmapRow", "ImageFormat",
    "curve_names", "grid_cells", "grid_links", "heatmap_rows", "heatmap_size", "render_alpha_heatmap",
    "render_cell_diagram", "render_curves", "render_macro_grid",
]
