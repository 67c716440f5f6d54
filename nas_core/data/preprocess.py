"""Intensity normalisation and slicing of decoded volumes into fixed-size 2D samples.

The paper's networks are 2D, so volumes are cut along D (axial) and every slice
is resized to image_size x image_size. The normalisation is a small JSON-able
record stored in checkpoints, so inference re-applies exactly what training did.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nas_core.data.errors import DatasetError
from nas_core.data.spec import LoadedCase

ABDOMEN_WINDOW = (-160.0, 240.0)  # HU, a common abdominal soft-tissue window
_EPS = 1e-8


@dataclass(frozen=True)
class Normalisation:
    """How intensities are scaled.

    scheme: "ct_window" clips to ``window`` (HU) and maps it to [0, 1];
    "zscore" subtracts each channel's mean and divides by its std over the whole
    case (nnU-Net's MR/other scheme); "none" leaves values as they are.
    """

    scheme: str = "zscore"
    window: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise DatasetError(f"unknown normalisation {self.scheme!r}; known: {sorted(SCHEMES)}")
        if self.scheme == "ct_window":
            if self.window is None or len(self.window) != 2 or not self.window[0] < self.window[1]:
                raise DatasetError(f"ct_window needs window=(low, high) with low < high, got {self.window!r}")
            object.__setattr__(self, "window", (float(self.window[0]), float(self.window[1])))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["window"] = None if self.window is None else list(self.window)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalisation:
        window = data.get("window")
        return cls(scheme=data["scheme"], window=None if window is None else tuple(window))


def normalisation_for(modality: str, ct_window: tuple[float, float] = ABDOMEN_WINDOW) -> Normalisation:
    """The default for a modality: a CT window for CT, per-case z-score otherwise."""
    return Normalisation("ct_window", ct_window) if modality == "CT" else Normalisation("zscore")


def _ct_window(image: np.ndarray, norm: Normalisation) -> np.ndarray:
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


SCHEMES: dict[str, Callable[[np.ndarray, Normalisation], np.ndarray]] = {
    "ct_window": _ct_window,
    "zscore": _zscore,
    "none": lambda image, norm: image,
}


def normalise(image: np.ndarray, norm: Normalisation) -> np.ndarray:
    """Normalise a whole case, channel-first ([C, D, H, W] or [C, H, W]); returns float32."""
    return SCHEMES[norm.scheme](np.asarray(image, dtype=np.float32), norm).astype(np.float32, copy=False)


def resize_slices(image: np.ndarray, size: int) -> torch.Tensor:
    """[C, D, H, W] -> [D, C, size, size], bilinear with antialiasing (area-like when shrinking)."""
    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, 1, 0)))
    if x.shape[-2:] == (size, size):
        return x.clone()
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def resize_labels(label: np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[D, H, W] class ids -> [D, *size], nearest so no new class ids appear."""
    y = torch.as_tensor(np.asarray(label)).to(torch.int64)
    if tuple(y.shape[-2:]) == tuple(size):
        return y.clone()
    return F.interpolate(y[:, None].float(), size=size, mode="nearest-exact")[:, 0].round().to(torch.int64)


def prepare_case(
    case: LoadedCase, image_size: int, norm: Normalisation
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Normalise a case and cut it into slices: ([D, C, S, S] float32, [D, S, S] int64 or None)."""
    images = resize_slices(normalise(case.image, norm), image_size)
    labels = None if case.label is None else resize_labels(case.label, (image_size, image_size))
    return images, labels
