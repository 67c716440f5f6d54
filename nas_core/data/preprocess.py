"""Intensity normalisation and slicing of decoded volumes into fixed-size 2D samples.

The paper's networks are 2D, so volumes are cut along D (axial) and every slice is
placed in the job's working frame (``nas_core.data.frame``): resampled to the frame's
spacing with its aspect ratio kept, centred and padded with the case's lowest intensity.
The normalisation is a small JSON-able record stored in checkpoints, so inference
re-applies exactly what training did.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nas_core.data.errors import DatasetError
from nas_core.data.frame import Frame, Placement
from nas_core.data.spec import LoadedCase

ABDOMEN_WINDOW = (-160.0, 240.0)  # HU, a common abdominal soft-tissue window
_EPS = 1e-8


@dataclass(frozen=True)
class Normalisation:
    """How intensities are scaled.

    scheme: "ct_foreground" (nnU-Net's CT scheme) clips each channel to ``clip`` (the
    training foreground's 0.5/99.5 percentiles) and z-scores it with the foreground's
    ``mean`` and ``std``; "ct_window" clips to a fixed ``window`` (HU) and maps it to [0, 1];
    "zscore" subtracts each channel's mean and divides by its std over the whole case
    (nnU-Net's MR/other scheme); "none" leaves values as they are.
    """

    scheme: str = "zscore"
    window: tuple[float, float] | None = None
    clip: tuple[tuple[float, float], ...] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise DatasetError(f"unknown normalisation {self.scheme!r}; known: {sorted(SCHEMES)}")
        if self.scheme == "ct_window":
            if self.window is None or len(self.window) != 2 or not self.window[0] < self.window[1]:
                raise DatasetError(f"ct_window needs window=(low, high) with low < high, got {self.window!r}")
            object.__setattr__(self, "window", (float(self.window[0]), float(self.window[1])))
        if self.scheme == "ct_foreground":
            n = len(self.clip or ())
            if not n or len(self.mean or ()) != n or len(self.std or ()) != n:
                raise DatasetError("ct_foreground needs clip, mean and std for every channel")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["window"] = None if self.window is None else list(self.window)
        for key in ("clip", "mean", "std"):
            if d[key] is None:
                del d[key]  # records of the other schemes keep their old shape
            else:
                d[key] = [list(v) if isinstance(v, tuple) else v for v in d[key]]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalisation:
        window, clip = data.get("window"), data.get("clip")
        return cls(scheme=data["scheme"], window=None if window is None else tuple(window),
                   clip=None if clip is None else tuple(tuple(c) for c in clip),
                   mean=None if data.get("mean") is None else tuple(data["mean"]),
                   std=None if data.get("std") is None else tuple(data["std"]))


def normalisation_for(modality: str, ct_window: tuple[float, float] = ABDOMEN_WINDOW) -> Normalisation:
    """The default for a modality: a CT window for CT, per-case z-score otherwise."""
    return Normalisation("ct_window", ct_window) if modality == "CT" else Normalisation("zscore")


def _ct_window(image: np.ndarray, norm: Normalisation) -> np.ndarray:
    assert norm.window is not None, "a ct_window normalisation carries its window"
    low, high = norm.window
    return (np.clip(image, low, high) - low) / (high - low)


def _zscore(image: np.ndarray, norm: Normalisation) -> np.ndarray:
    out = np.empty_like(image)
    for c, channel in enumerate(image):  # float64 accumulators, no float64 copy of the volume
        mean = float(channel.mean(dtype=np.float64))
        std = float(np.sqrt(np.mean(np.square(channel - mean, dtype=np.float64))))
        np.subtract(channel, mean, out=out[c])
        out[c] /= max(std, _EPS)
    return out


def _ct_foreground(image: np.ndarray, norm: Normalisation) -> np.ndarray:
    assert norm.clip is not None and norm.mean is not None and norm.std is not None, \
        "a ct_foreground normalisation carries its clip, mean and std"
    out = np.empty_like(image)
    for c, channel in enumerate(image):
        (low, high), mean, std = norm.clip[c], norm.mean[c], norm.std[c]
        np.clip(channel, low, high, out=out[c])
        out[c] -= mean
        out[c] /= max(std, _EPS)
    return out


SCHEMES: dict[str, Callable[[np.ndarray, Normalisation], np.ndarray]] = {
    "ct_foreground": _ct_foreground,
    "ct_window": _ct_window,
    "zscore": _zscore,
    "none": lambda image, norm: image,
}


def normalise(image: np.ndarray, norm: Normalisation) -> np.ndarray:
    """Normalise a whole case, channel-first ([C, D, H, W] or [C, H, W]); returns float32."""
    return SCHEMES[norm.scheme](np.asarray(image, dtype=np.float32), norm).astype(np.float32, copy=False)


def _in_plane_spacing(case: LoadedCase) -> tuple[float, float] | None:
    spacing = case.geometry.get("spacing")
    return None if spacing is None or len(spacing) < 2 else (float(spacing[1]), float(spacing[0]))  # (x, y)


def placement_of(case: LoadedCase, frame: Frame) -> Placement:
    """Where the slices of ``case`` go in ``frame``."""
    return frame.place(tuple(case.image.shape[-2:]), _in_plane_spacing(case))


def place_slices(image: np.ndarray, frame: Frame, where: Placement) -> torch.Tensor:
    """[C, D, h, w] -> [D, C, H, W]: each slice resampled (bilinear, antialiased when shrinking)
    to ``where.resized`` and padded to the frame with each channel's lowest value."""
    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, 1, 0)))
    if tuple(x.shape[-2:]) != where.resized:
        x = F.interpolate(x, size=where.resized, mode="bilinear", align_corners=False, antialias=True)
    if tuple(x.shape[-2:]) == frame.size:
        return x.contiguous()
    out = x.new_empty((x.shape[0], x.shape[1], *frame.size))
    out[:] = x.amin(dim=(0, 2, 3), keepdim=True) if x.numel() else 0
    rows, cols = where.crop()
    out[..., rows, cols] = x
    return out


def place_labels(label: np.ndarray | torch.Tensor, frame: Frame, where: Placement) -> torch.Tensor:
    """[D, h, w] class ids -> [D, H, W]: nearest (no new class ids), background around."""
    y = resize_labels(label, where.resized)
    out = torch.zeros((y.shape[0], *frame.size), dtype=torch.int64)
    rows, cols = where.crop()
    out[:, rows, cols] = y
    return out


def resize_labels(label: np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[D, H, W] class ids -> [D, *size], nearest so no new class ids appear."""
    y = torch.as_tensor(np.asarray(label)).to(torch.int64)
    if tuple(y.shape[-2:]) == tuple(size):
        return y.clone()
    return F.interpolate(y[:, None].float(), size=size, mode="nearest-exact")[:, 0].round().to(torch.int64)


def to_native(logits: torch.Tensor, where: Placement | None, size: tuple[int, int]) -> torch.Tensor:
    """Frame logits [N, K, H, W] -> the case's own size [N, K, *size]: the placed region cut
    out, then resampled bilinearly (argmax afterwards, as nnU-Net does)."""
    if where is not None:
        rows, cols = where.crop()
        logits = logits[..., rows, cols]
    if tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
    return logits


def prepare_case(case: LoadedCase, frame: Frame, norm: Normalisation
                 ) -> tuple[torch.Tensor, torch.Tensor | None, Placement]:
    """Normalise a case and place its slices in the frame:
    ([D, C, H, W] float32, [D, H, W] int64 or None, where they sit)."""
    where = placement_of(case, frame)
    images = place_slices(normalise(case.image, norm), frame, where)
    labels = None if case.label is None else place_labels(case.label, frame, where)
    return images, labels, where
