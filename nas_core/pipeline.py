"""From a dataset folder to the slice datasets an engine trains on.

Search: all cases halved (by case) into a weight half and an architecture half.
Retrain: cases split (by case) into training and validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas_core.data import (
    Augment,
    DatasetError,
    DatasetSpec,
    Normalisation,
    SliceDataset,
    halve,
    normalisation_for,
    open_dataset,
    split_cases,
)


@dataclass
class PreparedData:
    """A dataset cut into two slice sets (train, held_out) with its normalisation."""

    spec: DatasetSpec
    train: SliceDataset
    held_out: SliceDataset
    normalisation: Normalisation
    image_size: int

    @property
    def arch(self) -> SliceDataset:
        return self.held_out

    @property
    def val(self) -> SliceDataset:
        return self.held_out

    @property
    def in_channels(self) -> int:
        return len(self.spec.channel_names)

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def class_names(self) -> list[str]:
        return [self.spec.labels[k] for k in sorted(self.spec.labels)]

    def describe(self) -> dict[str, Any]:
        """What a checkpoint must carry to use the model later."""
        return {
            "in_channels": self.in_channels, "num_classes": self.num_classes, "class_names": self.class_names,
            "image_size": self.image_size, "normalisation": self.normalisation.to_dict(),
            "channel_names": list(self.spec.channel_names),
            "dataset": {"name": self.spec.name, "format": self.spec.format, "modality": self.spec.modality,
                        "synthetic": self.spec.synthetic, "is_3d": self.spec.is_3d,
                        "train_cases": self.train.case_ids, "held_out_cases": self.held_out.case_ids},
        }


def _prepare(root: Path, image_size: int, sides: tuple[list[str], list[str]], spec: DatasetSpec,
             cache_dir: Path | None) -> PreparedData:
    norm = normalisation_for(spec.modality)
    train = SliceDataset(spec, sides[0], image_size, norm, cache_dir=cache_dir)
    held_out = SliceDataset(spec, sides[1], image_size, norm, cache_dir=cache_dir)
    return PreparedData(spec, train, held_out, norm, image_size)


def prepare_search_data(root: Path, image_size: int, seed: int, val_fraction: float = 0.2,
                        cache_dir: Path | None = None, data_format: str | None = None) -> PreparedData:
    """Halve the *training* split: with the same seed and val_fraction as the retrain, the
    validation cases never help choose the architecture (val_fraction=0: every case)."""
    spec = open_dataset(root, format=data_format)
    ids = [c.case_id for c in spec.cases]
    train_ids = split_cases(ids, val_fraction, seed)[0] if val_fraction > 0 else ids
    if len(train_ids) < 2:
        raise DatasetError(f"the search needs at least 2 training cases to halve, got {len(train_ids)} of "
                           f"{len(ids)} after holding out val_fraction={val_fraction}; add cases or set val_fraction=0")
    return _prepare(root, image_size, halve(train_ids, seed), spec, cache_dir)


def prepare_retrain_data(root: Path, image_size: int, seed: int, val_fraction: float,
                         cache_dir: Path | None = None, data_format: str | None = None) -> PreparedData:
    spec = open_dataset(root, format=data_format)
    sides = split_cases([c.case_id for c in spec.cases], val_fraction, seed)
    return _prepare(root, image_size, sides, spec, cache_dir)


def make_augmenter(config: Any) -> Augment | None:
    """The retrain config's augmentation, or None when every transform is off."""
    if not (config.flip or config.affine or config.elastic):
        return None
    return Augment(flip=config.flip, affine=config.affine, elastic=config.elastic)
