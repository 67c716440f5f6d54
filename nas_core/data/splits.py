"""Case-level splits: slices of one patient never sit on both sides of a split."""

from __future__ import annotations

import random
from collections.abc import Sequence

from nas_core.data.errors import DatasetError


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
