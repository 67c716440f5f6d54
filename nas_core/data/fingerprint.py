"""A dataset's fingerprint and the plan it suggests, in the spirit of nnU-Net's.

The fingerprint is taken while a dataset is verified (every file is decoded then anyway):
per case its shape, in-plane spacing and the intensities of its foreground (label > 0):
0.5/50/99.5 percentiles, mean and std, per channel. The plan derived from it is what a
job's defaults should be: the median in-plane spacing as the target, a working size that
holds the median slice at that spacing with its aspect ratio kept (padded to a multiple of
2**depth, scaled down to fit a pixel budget), CT clipped at the foreground's 0.5/99.5
percentiles then z-scored with its mean and std, other modalities z-scored per case.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from nas_core.data.frame import multiple_of

PERCENTILES = (0.5, 50.0, 99.5)
PLAN_MAX_PIXELS = 256 * 256  # a planned frame's budget: the median slice is scaled down to fit it
SAMPLE = 10_000  # foreground voxels kept per case and channel for the dataset's percentiles


@dataclass
class CaseFingerprint:
    case_id: str
    shape: list[int]  # [D, H, W]
    spacing: list[float] | None  # in-plane [row, column] spacing in mm, when the format has one
    foreground: list[dict[str, float]]  # per channel: p0.5, p50, p99.5, mean, std


def case_fingerprint(case_id: str, image: np.ndarray, label: np.ndarray | None,
                     geometry: dict[str, Any]) -> tuple[CaseFingerprint, list[np.ndarray]]:
    """The fingerprint of one case ([C, D, H, W] image, [D, H, W] label) and a foreground sample
    per channel (for the dataset-wide percentiles)."""
    mask = label > 0 if label is not None and label.shape == image.shape[1:] else np.ones(image.shape[1:], bool)
    if not mask.any():
        mask = np.ones(image.shape[1:], bool)
    stats, samples = [], []
    rng = np.random.default_rng(0)
    for channel in image:
        values = channel[mask].astype(np.float64)
        p = np.percentile(values, PERCENTILES)
        stats.append({"p0.5": float(p[0]), "p50": float(p[1]), "p99.5": float(p[2]),
                      "mean": float(values.mean()), "std": float(values.std())})
        samples.append(rng.choice(values, size=min(SAMPLE, values.size), replace=False))
    spacing = geometry.get("spacing")
    in_plane = None if spacing is None else [float(spacing[1]), float(spacing[0])]  # (x, y, z) -> (row, col)
    return CaseFingerprint(case_id, [int(s) for s in image.shape[1:]], in_plane, stats), samples


@dataclass
class Plan:
    target_spacing: list[float] | None
    working_size: list[int]  # [H, W]
    normalisation: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_plan(cases: list[CaseFingerprint], samples: list[list[np.ndarray]], modality: str, depth: int = 4,
              max_pixels: int = PLAN_MAX_PIXELS) -> Plan:
    """The defaults a job on this dataset should take (see the module docstring)."""
    notes = []
    spacings = [c.spacing for c in cases if c.spacing]
    target = [float(np.median([s[i] for s in spacings])) for i in (0, 1)] if spacings else None
    sizes = []
    for c in cases:
        h, w = float(c.shape[1]), float(c.shape[2])
        if target and c.spacing:
            h, w = h * c.spacing[0] / target[0], w * c.spacing[1] / target[1]
        sizes.append((h, w))
    h, w = (float(np.median([s[i] for s in sizes])) for i in (0, 1))
    scale = min(1.0, math.sqrt(max_pixels / (h * w)))
    if scale < 1.0:
        notes.append(f"the median slice ({h:.0f}x{w:.0f}) is scaled by {scale:.2f} to fit {max_pixels} pixels")
    multiple = 2**depth
    size = [multiple_of(h * scale, multiple), multiple_of(w * scale, multiple)]
    if target and scale < 1.0:  # a pixel of the scaled frame stands for more millimetres
        target = [t / scale for t in target]
    if modality == "CT":
        pooled = [np.concatenate([s[c] for s in samples]) for c in range(len(samples[0]))] if samples else []
        clip = [[float(np.percentile(p, 0.5)), float(np.percentile(p, 99.5))] for p in pooled]
        mean = [float(p.mean()) for p in pooled]
        std = [float(p.std()) for p in pooled]
        norm = {"scheme": "ct_foreground", "clip": clip, "mean": mean, "std": std}
    else:
        norm = {"scheme": "zscore"}
    return Plan(target, size, norm, notes)
