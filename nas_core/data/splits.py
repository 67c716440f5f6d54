"""Case-level splits: slices of one patient never sit on both sides of a split.

Torch-free on purpose: the API plans the same split as the worker to refuse a retrain
whose validation or test cases helped a search choose its architecture.

nnU-Net's ``splits_final.json`` (a list of folds ``{"train": [...], "val": [...]}``) is honoured
when the dataset folder holds one (or ``$nnUNet_preprocessed/<dataset folder name>`` does, where
nnU-Net writes it): unless a config names its ``val_cases`` (or sets ``val_fraction`` to 0),
fold 0's validation cases are the validation cases, so results compare with nnU-Net's fold 0.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas_core.data.errors import DatasetError
from nas_core.data.spec import DatasetSpec

log = logging.getLogger(__name__)

SPLITS_FILE = "splits_final.json"
PREPROCESSED_ENV = "nnUNet_preprocessed"


def split_cases(
    case_ids: Sequence[str], val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Seeded (train_ids, val_ids), each non-empty; independent of the input order."""
    ids = sorted(set(case_ids))
    if len(ids) != len(case_ids):
        raise DatasetError(f"case ids must be unique; got duplicates in {list(case_ids)}")
    if len(ids) < 2:
        raise DatasetError(
            f"need at least 2 cases to split into train and validation, got {len(ids)}; "
            "add cases or validate on a separate dataset"
        )
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    random.Random(seed).shuffle(ids)
    n_val = min(max(1, round(len(ids) * val_fraction)), len(ids) - 1)
    return sorted(ids[n_val:]), sorted(ids[:n_val])


def halve(case_ids: Sequence[str], seed: int = 0) -> tuple[list[str], list[str]]:
    """Two disjoint halves (weights, architecture) for the search, by case."""
    return split_cases(case_ids, 0.5, seed)


@dataclass(frozen=True)
class Split:
    """Which cases train, which choose the best epoch (val) and which are only reported (test)."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    @property
    def held_out(self) -> tuple[str, ...]:
        """Cases a model must never have learnt from: validation and test."""
        return tuple(sorted({*self.val, *self.test}))


def _unknown(names: Iterable[str], known: set[str], what: str) -> None:
    missing = sorted(set(names) - known)
    if missing:
        raise DatasetError(f"{what} names case(s) {missing} that the dataset does not have; "
                           f"known cases start {sorted(known)[:5]}")


def plan_split(case_ids: Sequence[str], dataset_test_ids: Sequence[str] = (), *, val_fraction: float = 0.2,
               seed: int = 0, val_cases: Sequence[str] | None = None,
               test_cases: Sequence[str] | None = None) -> Split:
    """The split of a job, from the dataset's cases and the job's config.

    Test cases are the dataset's own test set (nnU-Net's ``imagesTs``/``labelsTs``) plus the
    config's ``test_cases``; they are never trained on nor used for selection. Validation cases
    are the config's ``val_cases`` when given, else a seeded ``val_fraction`` of the rest
    (``val_fraction=0``: none, every remaining case trains).
    """
    everything = set(case_ids) | set(dataset_test_ids)
    _unknown(test_cases or (), everything, "test_cases")
    test = sorted(set(dataset_test_ids) | set(test_cases or ()))
    pool = sorted(set(case_ids) - set(test))
    if val_cases is not None:
        _unknown(val_cases, everything, "val_cases")
        overlap = sorted(set(val_cases) & set(test))
        if overlap:
            raise DatasetError(f"case(s) {overlap} are both validation and test cases; a case has one role")
        val = sorted(set(val_cases))
        train = sorted(set(pool) - set(val))
    elif val_fraction > 0:
        train, val = split_cases(pool, val_fraction, seed)
    else:
        train, val = pool, []
    if not train:
        raise DatasetError("no case is left to train on after taking validation and test cases out")
    return Split(tuple(train), tuple(val), tuple(test))


def splits_file(root: Path | str) -> Path | None:
    """The ``splits_final.json`` that belongs to the dataset at ``root``, if any: in the folder
    itself, else in ``$nnUNet_preprocessed/<folder name>``."""
    root = Path(root)
    candidates = [root / SPLITS_FILE]
    if os.environ.get(PREPROCESSED_ENV):
        candidates.append(Path(os.environ[PREPROCESSED_ENV]).expanduser() / root.name / SPLITS_FILE)
    return next((p for p in candidates if p.is_file()), None)


def fold_val_cases(root: Path | str, fold: int = 0) -> list[str] | None:
    """The validation cases of ``fold`` in the dataset's ``splits_final.json``; None without one."""
    path = splits_file(root)
    if path is None:
        return None
    try:
        folds = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}; fix or remove it", path) from None
    if not isinstance(folds, list) or not all(isinstance(f, dict) and isinstance(f.get("val"), list)
                                              for f in folds):
        raise DatasetError(f'{path} must be nnU-Net\'s list of folds [{{"train": [...], "val": [...]}}, ...]',
                           path)
    if not 0 <= fold < len(folds):
        raise DatasetError(f"{path} has {len(folds)} fold(s) (0 to {len(folds) - 1}); "
                           f"there is no fold {fold}", path)
    return [str(c) for c in folds[fold]["val"]]


def _default_val_cases(spec: DatasetSpec, config: Any) -> list[str] | None:
    """The config's val_cases, else fold 0's of a splits_final.json (val_fraction 0: none wanted)."""
    if config.val_cases is not None:
        return list(config.val_cases)
    val = fold_val_cases(spec.root) if config.val_fraction > 0 else None
    if val is None:
        return None
    known = {c.case_id for c in spec.cases}
    unknown = sorted(set(val) - known)
    if unknown:
        raise DatasetError(f"{splits_file(spec.root)} names validation case(s) {unknown[:5]} that the "
                           "dataset does not have; regenerate it for this dataset or pass val_cases",
                           spec.root)
    # a test case stays a test case
    taken = set(config.test_cases or ()) | {c.case_id for c in spec.test_cases}
    log.info("validation cases: fold 0 of %s", splits_file(spec.root))
    return [c for c in val if c not in taken]


def split_for(spec: DatasetSpec, config: Any) -> Split:
    """The split a job's config (seed, val_fraction, val_cases, test_cases) asks for on a dataset;
    without val_cases, fold 0 of the dataset's ``splits_final.json`` when it has one."""
    return plan_split([c.case_id for c in spec.cases], [c.case_id for c in spec.test_cases],
                      val_fraction=config.val_fraction, seed=config.seed,
                      val_cases=_default_val_cases(spec, config), test_cases=config.test_cases)


def leaked_cases(search_cases: Iterable[str], split: Split) -> list[str]:
    """Validation or test cases of ``split`` that a search saw while choosing its architecture."""
    return sorted(set(search_cases) & set(split.held_out))


def leak_message(leaked: Sequence[str], who: str = "the search") -> str:
    shown = ", ".join(leaked[:10]) + (f" and {len(leaked) - 10} more" if len(leaked) > 10 else "")
    return (f"{len(leaked)} validation/test case(s) of this retrain helped {who} choose the architecture "
            f"({shown}); scores on them would be optimistic. Retrain with the search's seed and "
            f"val_fraction, or set val_cases/test_cases to cases the search did not use")
