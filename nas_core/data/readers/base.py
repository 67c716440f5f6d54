"""What every format reader offers, and the loading steps they share."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from nas_core.data.checks import check_case
from nas_core.data.errors import DatasetError
from nas_core.data.imageio import Volume, read_any
from nas_core.data.spec import Case, DatasetSpec, LoadedCase

_CT_TOKENS = {"CT", "CTA", "HU"}
_MR_TOKENS = {
    "MR",
    "MRI",
    "T1",
    "T2",
    "T1W",
    "T2W",
    "T1C",
    "T1CE",
    "T1GD",
    "FLAIR",
    "ADC",
    "DWI",
    "PD",
    "SWI",
    "DCE",
    "NONCONTRAST",
    "HBV",
    "CINE",
    "PDW",
}


def modality_from_names(names: list[str] | tuple[str, ...]) -> str:
    """CT, MR or other, from channel names such as "CT", "FLAIR", "T2", "MRI"."""
    tokens = {t for name in names for t in re.split(r"[^A-Z0-9]+", str(name).upper()) if t}
    if tokens & _CT_TOKENS:
        return "CT"
    if tokens & _MR_TOKENS:
        return "MR"
    return "other"


def apply_label_map(label: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """Recode stored mask values (e.g. 255 -> 1) as the case's meta declares."""
    pairs = meta.get("label_map")
    if not pairs:
        return label
    out = label.copy()
    for stored, class_id in pairs:
        out[label == stored] = class_id
    return out


class Reader(ABC):
    """A dataset format: recognise a folder, list its cases, decode a case.

    Subclasses implement ``detect`` and ``scan``; ``read_image``/``read_label``
    default to single-file reading and ``load`` stitches channels and label.
    """

    name: ClassVar[str]
    expects: ClassVar[str]  # the layout, for error messages
    options: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def detect(self, root: Path) -> bool:
        """Whether ``root`` looks like this format (cheap: names only, no decoding)."""

    @abstractmethod
    def scan(self, root: Path, **options: Any) -> DatasetSpec:
        """List the cases, classes and channels without decoding pixels."""

    def read_image(self, spec: DatasetSpec, case: Case, index: int) -> Volume:
        """Decode ``case.image_paths[index]`` into [C, D, H, W]."""
        return read_any(case.image_paths[index])

    def read_label(self, spec: DatasetSpec, case: Case) -> Volume:
        """Decode the label into [D, H, W] class ids (stored values recoded)."""
        if case.label_path is None:
            raise DatasetError(f"case {case.case_id!r} has no label file")
        vol = read_any(case.label_path, as_mask=True)
        return Volume(apply_label_map(vol.array, case.meta), vol.geometry, vol.path)

    def load(self, spec: DatasetSpec, case: Case) -> LoadedCase:
        """Decode a case, refusing it when channels and label do not agree."""
        images = [self.read_image(spec, case, i) for i in range(len(case.image_paths))]
        label = self.read_label(spec, case) if case.label_path is not None else None
        issues = check_case(spec, case, images, label)
        if issues:
            text = "; ".join(f"{i.path}: {i.problem}" for i in issues)
            raise DatasetError(f"case {case.case_id!r} is inconsistent: {text}", issues[0].path)
        image = np.concatenate([v.array for v in images]).astype(np.float32, copy=False)
        geometry = dict(images[0].geometry)
        geometry["shape"] = [int(s) for s in image.shape[1:]]
        label_arr = None if label is None else label.array.astype(np.int64, copy=False)
        return LoadedCase(case.case_id, image, label_arr, geometry)
