"""nas_core.viz: valid PNG/SVG of the documented sizes, heatmap rows and marks, cell labels, grid cells."""

from __future__ import annotations

import io
import random
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest
import torch
from PIL import Image

from nas_core.derive import derive_cell
from nas_core.genotype import InvalidGenotype
from nas_core.models import default_genotype
from nas_core.ops import op_names
from nas_core.topology import CellType, cell_edges, num_alpha_columns
from nas_core.viz import (
    CELL_SIZE,
    CURVES_SIZE,
    DPI,
    GRID_SIZE,
    curve_names,
    grid_cells,
    grid_links,
    heatmap_rows,
    heatmap_size,
    render_alpha_heatmap,
    render_cell_diagram,
    render_curves,
    render_macro_grid,
)
from nas_core.viz.history import cell_values, snapshots

NODES = 2
EPOCHS = 4
GENOTYPE = default_genotype().to_dict()
SVG = "{http://www.w3.org/2000/svg}"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_history(epochs: int = EPOCHS, nodes: int = NODES, genotype: dict | None = GENOTYPE,
                 seed: int = 0) -> list[dict]:
    """API-shaped alpha history: {"epoch", "cells": [...]}, genotype stored with the last epoch."""
    rng = random.Random(seed)
    items = []
    for epoch in range(epochs):
        cells = []
        for t in CellType:
            n_edges = len(cell_edges(t, nodes))
            cells.append({
                "cell_type": t.value,
                "alphas": [[rng.gauss(0, 0.5) for _ in range(num_alpha_columns(t))] for _ in range(n_edges)],
                "betas": [rng.gauss(0, 0.5) for _ in range(n_edges)],
                "genotype": genotype if epoch == epochs - 1 else None,
            })
        items.append({"epoch": epoch, "cells": cells})
    return items


METRICS = {"epochs": [
    {"epoch": e, "splits": {"train": {"loss": 1.0 / (e + 1), "arch_loss": None if e < 2 else 1.1 / (e + 1),
                                      "lr": 0.025},
                            "arch": {"dsc": 0.2 + 0.1 * e}}}
    for e in range(EPOCHS)
]}

RENDERERS: dict[str, tuple[Callable[[str], bytes], tuple[int, int]]] = {
    "alphas": (lambda fmt: render_alpha_heatmap(make_history(), NODES, fmt, synthetic=True), heatmap_size(NODES)),
    "curves": (lambda fmt: render_curves(METRICS, fmt, synthetic=True), CURVES_SIZE),
    "cell": (lambda fmt: render_cell_diagram(GENOTYPE, fmt, synthetic=True), CELL_SIZE),
    "grid": (lambda fmt: render_macro_grid(4, fmt, synthetic=True), GRID_SIZE),
}


@pytest.fixture(scope="module")
def rendered() -> dict[tuple[str, str], bytes]:
    """Every picture in both formats, rendered once for the module."""
    return {(name, fmt): render(fmt) for name, (render, _) in RENDERERS.items() for fmt in ("png", "svg")}


def svg_texts(data: bytes) -> list[str]:
    root = ET.fromstring(data)
    return [t.text or "" for t in root.iter(f"{SVG}text")]


@pytest.mark.parametrize("name", list(RENDERERS))
def test_png_decodes_at_the_documented_size(rendered, name) -> None:
    data = rendered[(name, "png")]
    assert data.startswith(PNG_MAGIC)
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert image.size == RENDERERS[name][1]


@pytest.mark.parametrize("name", list(RENDERERS))
def test_svg_parses_at_the_documented_size_and_says_synthetic(rendered, name) -> None:
    root = ET.fromstring(rendered[(name, "svg")])
    width, height = RENDERERS[name][1]
    assert root.tag == f"{SVG}svg"
    assert float(root.get("width", "").removesuffix("pt")) == pytest.approx(width * 72 / DPI)
    assert float(root.get("height", "").removesuffix("pt")) == pytest.approx(height * 72 / DPI)
    assert any("SYNTHETIC" in t for t in svg_texts(rendered[(name, "svg")]))


def test_svg_is_deterministic() -> None:
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(render_cell_diagram(GENOTYPE, "svg")))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0] == results[1]
    assert b"SYNTHETIC" not in results[0]


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="image format 'jpg' is not supported"):
        render_macro_grid(2, "jpg")


# --- the alpha heatmap ---------------------------------------------------------------------------


def test_heatmap_has_one_row_per_edge_and_op() -> None:
    rows = heatmap_rows(make_history(), NODES)
    for t in CellType:
        want = [(e.index, op) for e in cell_edges(t, NODES) for op in op_names(e.family)]
        assert [(r.edge, r.op) for r in rows[t]] == want
    assert rows[CellType.DN][0].label == "n0<-in_0: none"
    assert rows[CellType.UP][-1].label == "n1<-n0: dil_conv_3x3"
    assert heatmap_size(NODES)[1] > heatmap_size(1)[1]


def test_the_final_genotypes_rows_are_the_marked_ones(rendered) -> None:
    rows = heatmap_rows(make_history(), NODES)
    for t in CellType:
        marked = {(r.node, r.src, r.op) for r in rows[t] if r.chosen}
        assert marked == {(i // 2, src, op) for i, (op, src) in enumerate(GENOTYPE[t.value])}
    labels = [t for t in svg_texts(rendered[("alphas", "svg")]) if "<-" in t]
    assert len(labels) == sum(len(r) for r in rows.values())
    starred = sorted(t.removeprefix("\u2605 ") for t in labels if t.startswith("\u2605"))
    assert starred == sorted(r.label for rs in rows.values() for r in rs if r.chosen)


def test_without_a_stored_genotype_the_last_epoch_is_derived() -> None:
    history = make_history(genotype=None)
    rows = heatmap_rows(history, NODES)
    last = [s for s in snapshots(history) if s.epoch == EPOCHS - 1]
    for snap in last:
        derived = derive_cell(torch.tensor(snap.alphas), torch.tensor(snap.betas), snap.cell_type, NODES)
        marked = {(r.node, r.src, r.op) for r in rows[snap.cell_type] if r.chosen}
        assert marked == {(i // 2, src, op) for i, (op, src) in enumerate(derived)}


def test_weights_are_node_normalised_and_softmax_sums_per_edge() -> None:
    snap = snapshots(make_history())[0]
    weights = cell_values(snap, NODES, "weight")
    edges = cell_edges(snap.cell_type, NODES)
    for node in range(NODES):
        total = sum(sum(weights[e.index].values()) for e in edges if e.node == node)
        assert total == pytest.approx(1.0)
    for per_edge in cell_values(snap, NODES, "softmax"):
        assert sum(per_edge.values()) == pytest.approx(1.0)


def test_flat_rows_missing_betas_and_gaps_render() -> None:
    flat = [{"epoch": item["epoch"], **cell, "betas": None}
            for item in make_history() for cell in item["cells"] if item["epoch"] != 1 or cell["cell_type"] == "dn"]
    data = render_alpha_heatmap(flat, NODES, "png")
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == heatmap_size(NODES)


def test_wrong_nodes_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="a cell of 3 nodes has 9 edges: pass the job's `nodes`"):
        render_alpha_heatmap(make_history(), 3, "png")


# --- curves, cells, grid ---------------------------------------------------------------------------


def test_curves_draw_losses_and_dsc_per_split(rendered) -> None:
    assert curve_names(METRICS) == {"loss": ["train loss", "train arch_loss"], "dsc": ["arch dsc"]}
    flat = [{"epoch": 0, "split": "train", "metrics": {"loss": 1.0}}, {"epoch": 0, "split": "val", "metrics": {"dsc": None}}]
    assert curve_names(flat) == {"loss": ["train loss"], "dsc": []}
    texts = svg_texts(rendered[("curves", "svg")])
    assert {"train loss", "train arch_loss", "arch dsc"} <= set(texts)


def test_cell_diagram_labels_every_op_of_the_genotype(rendered) -> None:
    texts = svg_texts(rendered[("cell", "svg")])
    for t in CellType:
        for op, _ in GENOTYPE[t.value]:
            assert op in texts
    labels = [t for t in texts if t in {op for c in CellType for op, _ in GENOTYPE[c.value]}]
    assert len(labels) == len(GENOTYPE["dn"]) + len(GENOTYPE["up"])
    assert {"in_0", "in_1", "node 0", "node 1", "fuse 1x1 conv", "out"} <= set(texts)


def test_cell_diagram_refuses_an_invalid_genotype() -> None:
    bad = {**GENOTYPE, "dn": [["warp_drive", 0], *GENOTYPE["dn"][1:]]}
    with pytest.raises(InvalidGenotype, match="warp_drive"):
        render_cell_diagram(bad, "svg")


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_grid_has_depth_dn_and_triangular_up_cells(depth) -> None:
    cells = grid_cells(depth)
    assert len(cells) == depth + depth * (depth + 1) // 2
    assert sum(kind == "dn" for kind, _, _ in cells) == depth
    links = grid_links(depth)
    for kind, k, j in cells:
        into = [link for link in links if link[1] == (k, j)]
        if kind == "up":  # in_1 from (k-1, j+1), in_0 from every (m, j), m < k
            assert sorted(into) == sorted([((k - 1, j + 1), (k, j), "up")] +
                                          [((m, j), (k, j), "concat") for m in range(k)])
        else:
            assert ((0, j - 1), (0, j), "down") in into


def test_grid_svg_labels_every_cell(rendered) -> None:
    texts = svg_texts(rendered[("grid", "svg")])
    labels = sorted(t for t in texts if t.startswith(("DN (", "UP (")))
    assert labels == sorted(f"{kind.upper()} ({k},{j})" for kind, k, j in grid_cells(4))
    with pytest.raises(ValueError, match="depth must be an integer in 1..8"):
        render_macro_grid(0, "png")
