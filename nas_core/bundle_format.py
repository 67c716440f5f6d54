"""A model bundle's zip layout: its member names and how a bundle is recognised.

Kept apart from ``nas_core.bundle`` (which writes bundles, so needs ``nas_core.checkpoint`` and
``nas_core.export``) because ``nas_core.checkpoint`` must recognise a bundle to read the
checkpoint inside it: both import this module and neither imports the other's way round.
Only the standard library: nothing to load for a reader.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

CHECKPOINT_MEMBER = "model.pt"
GENOTYPE_MEMBER = "genotype.json"
PREPROCESSING_MEMBER = "preprocessing.json"
ONNX_MEMBER = "model.onnx"
CARD_MEMBER = "MODEL_CARD.md"
MEMBERS = (CHECKPOINT_MEMBER, GENOTYPE_MEMBER, PREPROCESSING_MEMBER, ONNX_MEMBER, CARD_MEMBER)
REQUIRED = frozenset({CHECKPOINT_MEMBER, PREPROCESSING_MEMBER})


def is_bundle(path: str | Path) -> bool:
    """Whether ``path`` is a model bundle (checked by content; a torch checkpoint is a zip too)."""
    path = Path(path)
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            return REQUIRED <= set(zf.namelist())
    except zipfile.BadZipFile:
        return False


def bundled_checkpoint(path: str | Path) -> io.BytesIO | None:
    """The checkpoint member of a bundle, in memory; None when ``path`` is not a bundle."""
    if not is_bundle(path):
        return None
    with zipfile.ZipFile(path) as zf:
        return io.BytesIO(zf.read(CHECKPOINT_MEMBER))
