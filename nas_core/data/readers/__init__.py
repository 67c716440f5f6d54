"""Dataset formats by name, auto-detection and the one entry point ``open_dataset``.

Detection tries the formats in REGISTRY order, most specific first, so a folder
that is both (say) an nnU-Net dataset and has image/ + label/ folders is nnU-Net.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from nas_core.data.errors import DatasetError
from nas_core.data.nnunet_ids import resolve_dataset_path
from nas_core.data.readers.base import Reader, modality_from_names
from nas_core.data.readers.chaos_ct import ChaosCTReader
from nas_core.data.readers.folder2d import Folder2DReader
from nas_core.data.readers.nnunet import NnUNetReader
from nas_core.data.readers.promise12 import Promise12Reader
from nas_core.data.spec import DatasetSpec

log = logging.getLogger(__name__)

REGISTRY: dict[str, Reader] = {
    r.name: r for r in (NnUNetReader(), Promise12Reader(), ChaosCTReader(), Folder2DReader())
}


def get_reader(format: str) -> Reader:
    """The reader registered under ``format``."""
    try:
        return REGISTRY[format]
    except KeyError:
        raise DatasetError(f"unknown dataset format {format!r}; known formats: {sorted(REGISTRY)}") from None


def _existing_dir(root: Path | str) -> Path:
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"dataset folder {root} does not exist; check the path", root)
    if not root.is_dir():
        raise DatasetError(f"{root} is a file; pass the dataset's folder", root)
    return root


def detect_format(root: Path | str) -> str:
    """The name of the first format whose layout ``root`` matches."""
    root = _existing_dir(root)
    for name, reader in REGISTRY.items():
        if reader.detect(root):
            return name
    layouts = ", ".join(r.expects for r in REGISTRY.values())
    raise DatasetError(
        f"no dataset format recognised in {root}: expected {layouts}; "
        f"pass format=... to choose one; known formats: {sorted(REGISTRY)}",
        root,
    )


def open_dataset(root: Path | str, format: str | None = None, **options: Any) -> DatasetSpec:
    """Scan a dataset folder (auto-detected unless ``format`` is given) without decoding pixels."""
    root = _existing_dir(root)
    name = format or detect_format(root)
    reader = get_reader(name)
    unknown = sorted(set(options) - set(reader.options))
    if unknown:
        raise DatasetError(
            f"format {name!r} takes no option(s) {unknown}; its options: {list(reader.options)}"
        )
    spec = reader.scan(root, **options)
    log.info(
        "opened %s dataset %r at %s: %d cases, %d classes",
        name,
        spec.name,
        root,
        len(spec.cases),
        spec.num_classes,
    )
    return spec


__all__ = ["REGISTRY", "Reader", "detect_format", "get_reader", "modality_from_names", "open_dataset",
           "resolve_dataset_path"]
