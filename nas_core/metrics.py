"""Evaluation metrics: hard Dice (DSC) and IoU on label maps, per case and per class.

Conventions (the ones nnU-Net and MONAI use, so numbers compare with the literature):

- Hard metrics on label maps (argmax of the logits), never a soft Dice.
- Foreground classes 1..K-1 only; background (0) is never scored.
- One case = one whole array: pass a whole 3D volume (or a whole 2D image) at once. The
  scores of a volume are *not* the mean of its slices' scores.
- A class absent from both prediction and reference in a case is **undefined: NaN**
  (there is nothing to overlap). It is skipped when averaging over cases and counted as
  ``empty`` in :func:`summarise`. A class absent from the reference but predicted scores 0.
- :func:`summarise` returns plain JSON-able dicts: an undefined mean is ``None``, never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def _labels(a: ArrayLike, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.integer) and a.dtype != np.bool_:
        raise ValueError(f"{name} must hold integer class labels (argmax of logits), got dtype {a.dtype}")
    return a.astype(np.int64, copy=False).ravel()


def confusion_counts(pred: ArrayLike, target: ArrayLike, num_classes: int) -> np.ndarray:
    """``[K, K]`` counts, ``[t, p]`` = voxels of reference class t predicted as class p."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background + foreground), got {num_classes}")
    p, t = _labels(pred, "pred"), _labels(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred and target differ in size: {np.shape(pred)} vs {np.shape(target)}")
    for name, a in (("pred", p), ("target", t)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} labels must lie in [0, {num_classes}), got [{a.min()}, {a.max()}]")
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def _per_class(pred: ArrayLike, target: ArrayLike, num_classes: int, iou: bool) -> dict[int, float]:
    cm = confusion_counts(pred, target, num_classes)
    scores: dict[int, float] = {}
    for k in range(1, num_classes):
        tp = int(cm[k, k])
        fp = int(cm[:, k].sum()) - tp
        fn = int(cm[k, :].sum()) - tp
        denom = tp + fp + fn if iou else 2 * tp + fp + fn
        scores[k] = math.nan if denom == 0 else (tp if iou else 2 * tp) / denom
    return scores


def dice_per_class(pred: ArrayLike, target: ArrayLike, num_classes: int) -> dict[int, float]:
    """Hard DSC ``2|P∩T| / (|P| + |T|)`` for each foreground class 1..K-1 of one case.

    ``pred`` and ``target`` are label arrays of the same shape (any number of dims, torch or
    numpy). NaN for a class absent from both.
    """
    return _per_class(pred, target, num_classes, iou=False)


def iou_per_class(pred: ArrayLike, target: ArrayLike, num_classes: int) -> dict[int, float]:
    """Hard IoU ``|P∩T| / |P∪T|`` for each foreground class 1..K-1 of one case (NaN if absent from both)."""
    return _per_class(pred, target, num_classes, iou=True)


def hd95_per_class(pred: ArrayLike, target: ArrayLike, num_classes: int,
                   spacing: Sequence[float]) -> dict[int, float]:
    """95th-percentile Hausdorff distance (mm) per foreground class, by MONAI's surface distances.

    ``spacing`` is the voxel size along the array's axes (e.g. [z, y, x] for [D, H, W]). NaN
    when the class is missing from the prediction or the reference (no surface to measure).
    """
    import warnings

    from monai.metrics import compute_hausdorff_distance

    shape = np.shape(pred)
    p = torch.as_tensor(_labels(pred, "pred").reshape(shape))
    t = torch.as_tensor(_labels(target, "target").reshape(shape))
    one_hot = lambda a: torch.nn.functional.one_hot(a, num_classes).movedim(-1, 0)[None]  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns for every empty class; NaN says the same
        hd = compute_hausdorff_distance(one_hot(p), one_hot(t), include_background=False, percentile=95,
                                        spacing=[float(s) for s in spacing])[0]
    return {k: (float(v) if math.isfinite(float(v)) else math.nan) for k, v in zip(range(1, num_classes), hd, strict=True)}


@dataclass(frozen=True)
class CaseScores:
    """Scores of one case (patient volume or image): class label -> score, NaN = undefined."""

    case_id: str
    dsc: dict[int, float] = field(default_factory=dict)
    iou: dict[int, float] = field(default_factory=dict)
    hd95: dict[int, float] = field(default_factory=dict)  # mm; only where the scan's spacing is known

    @classmethod
    def compute(cls, case_id: str, pred: ArrayLike, target: ArrayLike, num_classes: int,
                spacing: Sequence[float] | None = None) -> CaseScores:
        """Score one whole case from its predicted and reference label arrays (HD95 too with ``spacing``)."""
        return cls(
            case_id, dice_per_class(pred, target, num_classes), iou_per_class(pred, target, num_classes),
            {} if spacing is None else hd95_per_class(pred, target, num_classes, spacing),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; NaN (undefined) becomes ``None``, class labels become strings."""

        def clean(d: dict[int, float]) -> dict[str, float | None]:
            return {str(k): (None if math.isnan(v) else v) for k, v in d.items()}

        out = {"case_id": self.case_id, "dsc": clean(self.dsc), "iou": clean(self.iou)}
        if self.hd95:
            out["hd95"] = clean(self.hd95)
        return out


def _stats(values: list[float]) -> dict[str, Any]:
    defined = [v for v in values if not math.isnan(v)]
    if not defined:
        return {"mean": None, "std": None}
    return {"mean": float(np.mean(defined)), "std": float(np.std(defined))}


def summarise(
    case_scores: Sequence[CaseScores], class_names: Sequence[str] | Mapping[int, str]
) -> dict[str, Any]:
    """Per class mean and std over cases, and the mean over foreground classes.

    Args:
        case_scores: one :class:`CaseScores` per case.
        class_names: names indexed by label, background first (``["background", "liver"]``),
            or a mapping ``{label: name}`` of the foreground classes.

    Returns a JSON-able dict::

        {"n_cases": 3,
         "classes": {"liver": {"label": 1, "dsc_mean": .., "dsc_std": .., "iou_mean": ..,
                               "iou_std": .., "n": 3, "empty": 0}, ...},
         "mean_dsc": .., "mean_iou": ..}

    ``n`` counts the cases where the class is defined, ``empty`` those where it is absent
    from both prediction and reference (skipped). ``std`` is the population std (ddof=0).
    ``mean_dsc``/``mean_iou`` average the per-class means over foreground classes with a
    defined mean (``None`` if none is).
    """
    if isinstance(class_names, Mapping):
        names = {int(k): str(v) for k, v in class_names.items() if int(k) != 0}
    else:
        names = {k: str(v) for k, v in enumerate(class_names) if k != 0}
    if len(set(names.values())) != len(names):
        raise ValueError(f"class names must be unique, got {sorted(names.values())}")
    labels = sorted({k for cs in case_scores for k in cs.dsc} | set(names))
    missing = [k for k in labels if k not in names]
    if missing:
        raise ValueError(f"no name for class label(s) {missing}; class_names gives {names}")

    classes: dict[str, dict[str, Any]] = {}
    for k in labels:
        dsc = [cs.dsc.get(k, math.nan) for cs in case_scores]
        iou = [cs.iou.get(k, math.nan) for cs in case_scores]
        d, i = _stats(dsc), _stats(iou)
        n = sum(not math.isnan(v) for v in dsc)
        classes[names[k]] = {
            "label": k,
            "dsc_mean": d["mean"],
            "dsc_std": d["std"],
            "iou_mean": i["mean"],
            "iou_std": i["std"],
            "n": n,
            "empty": len(dsc) - n,
        }
        if any(k in cs.hd95 for cs in case_scores):
            h = _stats([cs.hd95.get(k, math.nan) for cs in case_scores])
            classes[names[k]].update({"hd95_mean": h["mean"], "hd95_std": h["std"]})

    def overall(key: str) -> float | None:
        vals = [c[key] for c in classes.values() if c[key] is not None]
        return float(np.mean(vals)) if vals else None

    return {
        "n_cases": len(case_scores),
        "classes": classes,
        "mean_dsc": overall("dsc_mean"),
        "mean_iou": overall("iou_mean"),
    }
