"""Transparent pad-and-crop, so size-constrained networks accept any input size.

A U-Net of depth L needs H and W divisible by ``2 ** L``. :class:`PadToMultiple` pads each
spatial dimension up to the next multiple, split as evenly as possible between both sides
(the extra pixel, if odd, goes after), runs the wrapped network, and crops its output back
to the input's spatial size, so a caller never sees the padding.

Padding mode: ``"reflect"`` by default (mirrors the image, so no artificial edge appears
at the border), falling back to zeros for a call where reflection is impossible (a pad
as wide as the dimension itself, e.g. a 5-pixel image padded to 16). ``mode="constant"``
always pads with zeros.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PAD_MODES = ("reflect", "constant")


def pad_amount(size: int, multiple: int) -> tuple[int, int]:
    """Padding ``(before, after)`` that brings ``size`` up to the next multiple of ``multiple``.

    ``before = total // 2`` and ``after = total - before``; ``(0, 0)`` when already divisible.
    """
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    total = -size % multiple
    return total // 2, total - total // 2


class PadToMultiple(nn.Module):
    """Wrap ``module`` so its spatial input sizes need not be multiples of ``multiple``.

    Args:
        module: a network whose output has the same spatial size as its input
            (segmentation logits); it is kept as ``self.module``.
        multiple: each spatial size is padded up to a multiple of this (16 for a depth-4
            U-Net: use the model's ``size_multiple``).
        mode: ``"reflect"`` (zeros when reflection is impossible) or ``"constant"`` (zeros).

    Shapes: ``[B, C, *S] -> [B, K, *S]`` where ``S`` is (H, W) or (D, H, W) and ``K`` the
    wrapped module's output channels. Inputs already divisible go to the module untouched.
    """

    def __init__(self, module: nn.Module, multiple: int, mode: str = "reflect") -> None:
        super().__init__()
        if multiple < 1:
            raise ValueError(f"multiple must be >= 1, got {multiple}")
        if mode not in PAD_MODES:
            raise ValueError(f"unknown pad mode {mode!r}; known: {list(PAD_MODES)}")
        self.module = module
        self.multiple = multiple
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (4, 5):
            raise ValueError(f"expected [B, C, H, W] or [B, C, D, H, W], got shape {tuple(x.shape)}")
        spatial = tuple(x.shape[2:])
        pads = [pad_amount(s, self.multiple) for s in spatial]
        if not any(b or a for b, a in pads):
            return self.module(x)
        # F.pad takes (before, after) pairs starting from the last dimension.
        flat = [p for pair in reversed(pads) for p in pair]
        reflectable = all(b < s and a < s for (b, a), s in zip(pads, spatial, strict=True))
        if self.mode == "reflect" and reflectable:
            x = F.pad(x, flat, mode="reflect")
        else:
            x = F.pad(x, flat, mode="constant", value=0.0)
        y = self.module(x)
        if isinstance(y, list):  # deep supervision in training: one map per head
            return [self._crop(t, x, pads, spatial) for t in y]  # type: ignore[return-value]
        return self._crop(y, x, pads, spatial)

    @staticmethod
    def _crop(y: torch.Tensor, x: torch.Tensor, pads: list[tuple[int, int]], spatial: tuple[int, ...]) -> torch.Tensor:
        if tuple(y.shape[2:]) != tuple(x.shape[2:]):
            raise ValueError(
                f"wrapped module changed the spatial size {tuple(x.shape[2:])} -> {tuple(y.shape[2:])}; "
                "PadToMultiple can only crop outputs the size of their input"
            )
        crop = tuple(slice(b, b + s) for (b, _), s in zip(pads, spatial, strict=True))
        return y[(slice(None), slice(None), *crop)]
