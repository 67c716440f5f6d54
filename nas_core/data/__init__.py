"""Medical image datasets for Thrifty NAS: read, verify, slice, cache, augment and write back.

A plain numpy/PyTorch library (no service imports). ``open_dataset`` recognises
nnU-Net v2 / MSD, PROMISE12, CHAOS CT and 2D image/mask folders;
``verify_dataset`` reports every bad file; ``SliceDataset`` serves normalised 2D
slices for training; ``write_prediction`` writes masks in the input's format.

The names below load on first use (PEP 562), so ``nas_core.data.errors``, ``.spec``,
``.splits`` and ``.formats`` import without PyTorch or an image library.
"""

from __future__ import annotations

from nas_core.lazy import lazy_exports

# Every exported name and the submodule that defines it.
_EXPORTS = {
    "ABDOMEN_WINDOW": "preprocess",
    "REGISTRY": "readers",
    "Augment": "augment",
    "Case": "spec",
    "DatasetError": "errors",
    "DatasetSpec": "spec",
    "Frame": "frame",
    "Issue": "checks",
    "LoadedCase": "spec",
    "Normalisation": "preprocess",
    "Placement": "frame",
    "SliceDataset": "dataset",
    "VerificationReport": "verify",
    "detect_format": "readers",
    "get_reader": "readers",
    "halve": "splits",
    "load_image_for_inference": "write",
    "make_phantom_dataset": "phantom",
    "normalisation_for": "preprocess",
    "normalise": "preprocess",
    "open_dataset": "readers",
    "prepare_case": "preprocess",
    "require_valid": "verify",
    "resize_labels": "preprocess",
    "split_cases": "splits",
    "verify_dataset": "verify",
    "write_prediction": "write",
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
