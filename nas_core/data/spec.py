"""Plain records describing a dataset and a decoded case, shared by readers and training."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nas_core.data.errors import DatasetError

MODALITIES = ("CT", "MR", "other")


@dataclass(frozen=True)
class Case:
    """One training case: its image file(s) and label file, not yet decoded.

    ``image_paths`` holds one path per channel, or a single path holding several
    channels (a 4D MSD NIfTI, an RGB TIFF) or a folder (a DICOM series).
    ``meta`` holds reader-specific hints such as a mask value map.
    """

    case_id: str
    image_paths: tuple[Path, ...]
    label_path: Path | None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "image_paths": [str(p) for p in self.image_paths],
            "label_path": None if self.label_path is None else str(self.label_path),
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Case:
        label = data.get("label_path")
        return cls(
            case_id=data["case_id"],
            image_paths=tuple(Path(p) for p in data["image_paths"]),
            label_path=None if label is None else Path(label),
            meta=dict(data.get("meta", {})),
        )


@dataclass(frozen=True)
class DatasetSpec:
    """What a reader found in a dataset folder: format, classes, channels and cases."""

    root: Path
    format: str
    name: str
    modality: str
    channel_names: tuple[str, ...]
    labels: dict[int, str]
    cases: tuple[Case, ...]
    synthetic: bool = False
    is_3d: bool = False
    # A labelled test set kept apart by the dataset itself (nnU-Net's imagesTs + labelsTs):
    # never trained on, never used for selection, scored once at the end.
    test_cases: tuple[Case, ...] = ()

    @property
    def num_classes(self) -> int:
        """Number of classes, background included."""
        return len(self.labels)

    def case(self, case_id: str) -> Case:
        for case in (*self.cases, *self.test_cases):
            if case.case_id == case_id:
                return case
        known = [c.case_id for c in (*self.cases, *self.test_cases)]
        raise DatasetError(f"case {case_id!r} is not in dataset {self.name!r}; known cases: {known}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description (label ids become string keys, as JSON requires)."""
        return {
            "root": str(self.root),
            "format": self.format,
            "name": self.name,
            "modality": self.modality,
            "channel_names": list(self.channel_names),
            "labels": {str(k): v for k, v in sorted(self.labels.items())},
            "num_classes": self.num_classes,
            "num_cases": len(self.cases),
            "synthetic": self.synthetic,
            "is_3d": self.is_3d,
            "cases": [c.to_dict() for c in self.cases],
            "test_cases": [c.to_dict() for c in self.test_cases],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetSpec:
        return cls(
            root=Path(data["root"]),
            format=data["format"],
            name=data["name"],
            modality=data["modality"],
            channel_names=tuple(data["channel_names"]),
            labels={int(k): v for k, v in data["labels"].items()},
            cases=tuple(Case.from_dict(c) for c in data["cases"]),
            synthetic=bool(data.get("synthetic", False)),
            is_3d=bool(data.get("is_3d", False)),
            test_cases=tuple(Case.from_dict(c) for c in data.get("test_cases", [])),
        )


@dataclass(frozen=True)
class LoadedCase:
    """A decoded case.

    image: float32 [C, D, H, W] (D = 1 for 2D); label: int64 [D, H, W] or None.
    geometry: what ``write_prediction`` needs to write a mask back in the input's
    format and geometry (``kind``, ``suffix``, ``shape`` and, for volumes,
    ``spacing``/``origin``/``direction``).
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    geometry: dict[str, Any]
