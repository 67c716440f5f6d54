"""The working frame: where each slice of a case sits in the fixed-size tensor a network sees.

nnU-Net resamples every case to one target spacing and keeps its aspect ratio; it never
squashes a 216x256 slice into a square. A :class:`Frame` is that rule for our 2D slices:
a size ``[H, W]`` and, when the dataset's spacing is known, the in-plane spacing (mm) a
pixel of the frame stands for. A case is *placed* in the frame: resampled to that spacing
(or, without spacing, scaled to fit), shrunk uniformly if it still does not fit, and
centred with padding around it. The inverse (crop the placed region, resample to the
case's own size) is how predictions go back to the scan, so scoring stays native.

This module is plain arithmetic (no torch) so the API and the configs can use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Placement:
    """A slice resampled to ``resized`` [h, w] and put at ``offset`` [top, left] of the frame."""

    resized: tuple[int, int]
    offset: tuple[int, int]

    def crop(self) -> tuple[slice, slice]:
        """The frame's region that holds the case (rows, columns)."""
        (h, w), (top, left) = self.resized, self.offset
        return slice(top, top + h), slice(left, left + w)


@dataclass(frozen=True)
class Frame:
    """A working size [H, W] and the in-plane spacing [row, column] in mm its pixels stand for
    (None: unknown, each case is scaled to fit the frame with its aspect ratio kept)."""

    size: tuple[int, int]
    spacing: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"a frame needs a size [H, W] of positive integers, got {list(self.size)}")
        object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))
        if self.spacing is not None:
            object.__setattr__(self, "spacing", (float(self.spacing[0]), float(self.spacing[1])))

    def place(self, shape: tuple[int, int], spacing: tuple[float, float] | None = None) -> Placement:
        """Where a slice of ``shape`` [h, w] (with in-plane ``spacing`` in mm, if known) goes.

        With both spacings known the slice is resampled to the frame's spacing; otherwise it
        is scaled to fill the frame. Either way it shrinks (uniformly) to fit if it must, and
        is centred.
        """
        h, w = (int(s) for s in shape)
        H, W = self.size  # noqa: N806
        if self.spacing is not None and spacing is not None and min(spacing) > 0:
            sh, sw = h * spacing[0] / self.spacing[0], w * spacing[1] / self.spacing[1]
        else:
            fill = min(H / h, W / w)
            sh, sw = h * fill, w * fill
        shrink = min(1.0, H / sh, W / sw)
        rh = min(H, max(1, round(sh * shrink)))
        rw = min(W, max(1, round(sw * shrink)))
        return Placement((rh, rw), ((H - rh) // 2, (W - rw) // 2))

    def to_dict(self) -> dict[str, Any]:
        return {"size": list(self.size), "spacing": None if self.spacing is None else list(self.spacing)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Frame:
        spacing = data.get("spacing")
        return cls(tuple(data["size"]), None if spacing is None else tuple(spacing))

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Frame:
        """A checkpoint's frame; checkpoints written before frames existed hold a square ``image_size``."""
        if meta.get("frame"):
            return cls.from_dict(meta["frame"])
        size = meta["image_size"]
        return cls((size, size) if isinstance(size, int) else tuple(size))

    def __str__(self) -> str:
        where = "" if self.spacing is None else f" at {self.spacing[0]:.3g}x{self.spacing[1]:.3g} mm"
        return f"{self.size[0]}x{self.size[1]}{where}"


def as_hw(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """An image size given as S (square) or [H, W], as (H, W)."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def multiple_of(n: float, m: int) -> int:
    """``n`` rounded up to a multiple of ``m`` (at least ``m``)."""
    return max(m, int(math.ceil(n / m)) * m)


def frame_for(working_size: list[int] | tuple[int, int], target_spacing: list[float] | None,
              image_size: int | None) -> Frame:
    """The frame of a job: the plan's working size at its target spacing, or, when the user set
    ``image_size`` S, an S x S frame whose spacing is coarsened so the plan's median slice fits
    (its aspect ratio still kept)."""
    if image_size is None:
        return Frame(tuple(working_size), None if target_spacing is None else tuple(target_spacing))  # type: ignore[arg-type]
    if target_spacing is None:
        return Frame((image_size, image_size))
    factor = max(working_size[0] / image_size, working_size[1] / image_size)
    return Frame((image_size, image_size), (target_spacing[0] * factor, target_spacing[1] * factor))
