"""From a dataset folder to the slice datasets an engine trains on.

Both engines plan the same split (``nas_core.data.splits.split_for``, which the API uses too): test cases (the
dataset's labelled imagesTs, or the config's ``test_cases``) are set apart first, then
validation cases (``val_cases``, or a seeded ``val_fraction``).
Search: the training cases halved (by case) into a weight half and an architecture half.
Retrain: training cases train, validation cases choose the best epoch, test cases are
scored once at the end. Validation and test sets are scored at each case's own size.
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
)
from nas_core.data.batch_augment import BatchAugment
from nas_core.data.splits import Split, split_for


@dataclass
class PreparedData:
    """A dataset cut into two slice sets (train, held_out) with its normalisation."""

    spec: DatasetSpec
    train: SliceDataset
    held_out: SliceDataset
    normalisation: Normalisation
    image_size: int
    test: SliceDataset | None = None
    split: Split | None = None

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
                        "train_cases": self.train.case_ids, "held_out_cases": self.held_out.case_ids,
                        "test_cases": self.test.case_ids if self.test is not None else []},
        }


def prepare_search_data(root: Path, config: Any, cache_dir: Path | None = None,
                        data_format: str | None = None) -> PreparedData:
    """Halve the *training* cases: validation and test cases never help choose the architecture
    (a retrain with the same split can be scored honestly; ``val_fraction=0``: every case)."""
    spec = open_dataset(root, format=data_format)
    split = split_for(spec, config)
    if len(split.train) < 2:
        raise DatasetError(f"the search needs at least 2 training cases to halve, got {len(split.train)} of "
                           f"{len(spec.cases)} after holding out validation and test cases; add cases or "
                           f"set val_fraction=0")
    weights, arch = halve(split.train, config.seed)
    norm = normalisation_for(spec.modality)
    size = config.image_size
    return PreparedData(spec, SliceDataset(spec, weights, size, norm, cache_dir=cache_dir),
                        SliceDataset(spec, arch, size, norm, cache_dir=cache_dir, native=True), norm, size,
                        split=split)


def prepare_retrain_data(root: Path, config: Any, cache_dir: Path | None = None,
                         data_format: str | None = None) -> PreparedData:
    spec = open_dataset(root, format=data_format)
    split = split_for(spec, config)
    if not split.val:
        raise DatasetError("a retrain needs validation cases to choose its best epoch; set val_fraction > 0 "
                           "or val_cases")
    norm = normalisation_for(spec.modality)
    size = config.image_size
    test = SliceDataset(spec, split.test, size, norm, cache_dir=cache_dir, native=True) if split.test else None
    return PreparedData(spec, SliceDataset(spec, split.train, size, norm, cache_dir=cache_dir),
                        SliceDataset(spec, split.val, size, norm, cache_dir=cache_dir, native=True), norm, size,
                        test=test, split=split)


def make_augmenter(config: Any) -> Augment | BatchAugment | None:
    """A config's augmentation: ``"nnunet"`` (nnU-Net's 2D pipeline, batched), ``"basic"``
    (flips and small affine warps per sample, by the flip/affine/elastic flags) or ``"none"``."""
    if config.augmentation == "nnunet":
        return BatchAugment()
    if config.augmentation == "none" or not (getattr(config, "flip", False) or getattr(config, "affine", False)
                                             or getattr(config, "elastic", False)):
        return None
    return Augment(flip=config.flip, affine=config.affine, elastic=config.elastic)
