"""From a dataset folder to the slice datasets an engine trains on.

Both engines plan the same split (``nas_core.data.splits.split_for``, which the API uses too): test cases (the
dataset's labelled imagesTs, or the config's ``test_cases``) are set apart first, then
validation cases (``val_cases``, or a seeded ``val_fraction``).
Search: the training cases halved (by case) into a weight half and an architecture half.
Retrain: training cases train, validation cases choose the best epoch, test cases are
scored once at the end. Validation and test sets are scored at each case's own size.

The working frame and the normalisation come from the plan of the training cases
(``nas_core.data.planning``): nnU-Net's target spacing, aspect ratio and intensity scheme;
a config's ``image_size`` overrides the frame's size only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas_core.data import (
    Augment,
    DatasetError,
    DatasetSpec,
    Frame,
    Normalisation,
    SliceDataset,
    halve,
    open_dataset,
)
from nas_core.data.batch_augment import BatchAugment
from nas_core.data.planning import job_frame, normalisation_of, plan_dataset
from nas_core.data.splits import Split, split_for


@dataclass
class PreparedData:
    """A dataset cut into two slice sets (train, held_out) with its normalisation."""

    spec: DatasetSpec
    train: SliceDataset
    held_out: SliceDataset
    normalisation: Normalisation
    frame: Frame
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
            "image_size": list(self.frame.size), "frame": self.frame.to_dict(),
            "normalisation": self.normalisation.to_dict(),
            "channel_names": list(self.spec.channel_names),
            "dataset": {"name": self.spec.name, "format": self.spec.format, "modality": self.spec.modality,
                        "synthetic": self.spec.synthetic, "is_3d": self.spec.is_3d,
                        "train_cases": self.train.case_ids, "held_out_cases": self.held_out.case_ids,
                        "test_cases": self.test.case_ids if self.test is not None else []},
        }


def _plan(spec: DatasetSpec, train: Sequence[str], config: Any, cache_dir: Path | None) -> tuple[Frame, Normalisation]:
    """The job's frame and normalisation, from the plan of its training cases."""
    # One frame for a search and the retrains of its split: a multiple of 2**4 (networks of
    # other depths pad their input as they need).
    plan = plan_dataset(spec, list(train), 4, cache_dir)
    return job_frame(plan, config.image_size), normalisation_of(plan)


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
    frame, norm = _plan(spec, split.train, config, cache_dir)
    return PreparedData(spec, SliceDataset(spec, weights, frame, norm, cache_dir=cache_dir),
                        SliceDataset(spec, arch, frame, norm, cache_dir=cache_dir, native=True), norm, frame,
                        split=split)


def prepare_retrain_data(root: Path, config: Any, cache_dir: Path | None = None,
                         data_format: str | None = None) -> PreparedData:
    spec = open_dataset(root, format=data_format)
    split = split_for(spec, config)
    if not split.val:
        raise DatasetError("a retrain needs validation cases to choose its best epoch; set val_fraction > 0 "
                           "or val_cases")
    frame, norm = _plan(spec, split.train, config, cache_dir)
    test = SliceDataset(spec, split.test, frame, norm, cache_dir=cache_dir, native=True) if split.test else None
    return PreparedData(spec, SliceDataset(spec, split.train, frame, norm, cache_dir=cache_dir),
                        SliceDataset(spec, split.val, frame, norm, cache_dir=cache_dir, native=True), norm, frame,
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
