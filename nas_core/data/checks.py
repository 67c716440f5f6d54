"""Consistency checks of one decoded case, shared by loading (raise) and verification (report)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nas_core.data.imageio import Volume
from nas_core.data.spec import Case, DatasetSpec

GEOMETRY_RTOL = 1e-4
GEOMETRY_ATOL = 1e-3


@dataclass(frozen=True)
class Issue:
    """One problem with one file (or the dataset as a whole when case_id is None)."""

    path: str
    case_id: str | None
    problem: str

    def to_dict(self) -> dict[str, str | None]:
        return {"path": self.path, "case_id": self.case_id, "problem": self.problem}


def label_values(label: np.ndarray) -> tuple[np.ndarray, bool]:
    """Distinct values of a label array and whether they are all integers.

    Uses bincount on small integer ranges (much faster than np.unique on volumes).
    """
    if label.size == 0:
        return np.zeros(0, dtype=np.int64), True
    if label.dtype.kind == "f":
        if not np.all(np.isfinite(label)) or not np.array_equal(label, np.round(label)):
            return np.unique(label), False
        label = label.astype(np.int64)
    if label.dtype.kind == "u" and label.dtype.itemsize <= 2:  # the usual uint8/uint16 masks: no copy
        return np.nonzero(np.bincount(label.ravel()))[0], True
    lo, hi = int(label.min()), int(label.max())
    if hi - lo > 1_000_000:
        return np.unique(label), True
    counts = np.bincount(label.ravel().astype(np.int64) - lo)
    return np.nonzero(counts)[0] + lo, True


def _close(a: list[float] | None, b: list[float] | None) -> bool:
    if a is None or b is None:
        return True
    return len(a) == len(b) and bool(np.allclose(a, b, rtol=GEOMETRY_RTOL, atol=GEOMETRY_ATOL))


def _geometry_problems(ref: Volume, other: Volume, what: str) -> list[str]:
    problems = []
    for key in ("spacing", "origin"):
        a, b = ref.geometry.get(key), other.geometry.get(key)
        if not _close(a, b):
            problems.append(f"{what} {key} {_fmt(b)} differs from {_fmt(a)} of {ref.path.name}")
    return problems


def check_case(
    spec: DatasetSpec, case: Case, images: list[Volume], label: Volume | None, count_channels: bool = True
) -> list[Issue]:
    """Every inconsistency between a case's decoded channels and label, file by file.

    ``count_channels=False`` skips the channel-count check when some channel files
    could not be read (they are reported on their own).
    """
    issues: list[Issue] = []

    def add(volume: Volume, problem: str) -> None:
        issues.append(Issue(str(volume.path), case.case_id, problem))

    ref = images[0]
    spatial = ref.array.shape[1:]
    for vol in images[1:]:
        if vol.array.shape[1:] != spatial:
            add(
                vol,
                f"channel shape {_shape(vol.array.shape[1:])} differs from {_shape(spatial)} of {ref.path.name}",
            )
        for problem in _geometry_problems(ref, vol, "channel"):
            add(vol, problem)
    num_channels = sum(v.array.shape[0] for v in images)
    if count_channels and num_channels != len(spec.channel_names):
        add(
            ref,
            f"has {num_channels} channel(s) but the dataset declares {len(spec.channel_names)} "
            f"{list(spec.channel_names)}",
        )
    if label is None:
        return issues
    if label.array.shape != spatial:
        add(label, f"label shape {_shape(label.array.shape)} differs from image shape {_shape(spatial)}")
    for problem in _geometry_problems(ref, label, "label"):
        add(label, problem)
    values, integral = label_values(label.array)
    if not integral:
        bad = [float(v) for v in values if v != round(v)][:5]
        add(label, f"label values must be integers; found {bad}")
        return issues
    undeclared = sorted(set(int(v) for v in values) - set(spec.labels))
    if undeclared:
        add(label, f"label value(s) {undeclared} not declared in the dataset's labels {spec.labels}")
    return issues


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


def _fmt(values: list[float] | None) -> str:
    return "None" if values is None else "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
