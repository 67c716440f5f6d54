"""Shapes of the search history for clients: alpha rows labelled with their edges and ops."""

from __future__ import annotations

import re
from typing import Any

from nas_core.config import SearchConfig
from nas_core.space import op_names
from nas_core.topology import CellType, cell_edges
from store.models import AlphaSnapshot
from store.pagination import InvalidCursor


def edge_labels(config: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per cell type, each alphas row's node, source, op family and op names (the column labels)."""
    nodes = int(config.get("nodes", SearchConfig.nodes))
    return {
        cell_type.value: [
            {"index": e.index, "node": e.node, "src": e.src, "family": e.family.value, "ops": op_names(e.family)}
            for e in cell_edges(cell_type, nodes)
        ]
        for cell_type in CellType
    }


MAX_EPOCH = 2**31 - 1  # epochs are INTEGER columns: a larger number cannot even be compared with them


def epoch_cursor(cursor: str) -> int:
    """The epoch an alpha-history cursor stands for; ``InvalidCursor`` (400) if it is not one."""
    if not re.fullmatch(r"-?[0-9]{1,10}", cursor) or not -1 <= int(cursor) <= MAX_EPOCH:
        raise InvalidCursor(f"invalid cursor {cursor!r}: pass the next_cursor of a previous page")
    return int(cursor)


def group_by_epoch(rows: list[AlphaSnapshot]) -> list[dict[str, Any]]:
    """Rows in (epoch, cell type) order -> [{epoch, cells: [...]}, ...]."""
    epochs: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        epochs.setdefault(row.epoch, []).append(
            {"cell_type": row.cell_type, "alphas": row.alphas, "betas": row.betas, "genotype": row.genotype}
        )
    return [{"epoch": epoch, "cells": cells} for epoch, cells in epochs.items()]
