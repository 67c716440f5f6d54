"""PC-DARTS mixed op: a softmax-weighted sum of all candidate ops on 1/K of the channels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nas_core.ops import POOLING_OPS, Family, build_op, op_names


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave channels of `groups` groups ([B, C, H, W] -> same shape), as in ShuffleNet."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def _bypass(family: Family, x: torch.Tensor) -> torch.Tensor:
    """Resample the channels that skip the ops, to match the ops' output resolution."""
    if family is Family.DN:
        return F.max_pool2d(x, 2, 2)
    if family is Family.UP:
        return F.interpolate(x, scale_factor=2.0, mode="nearest")
    return x


class MixedOp(nn.Module):
    """All ops of one family on the first ``C // k`` channels; the rest bypass.

    Args:
        family: the edge's op family (decides the resampling).
        channels: C, the edge's input and output channel count; must divide by `k`.
        k: partial-channel factor (1 = plain DARTS: every channel goes through the ops).

    forward(x [B, C, H, W], weights [n_ops]) -> [B, C, H', W'] where H' is H/2, 2H or H.
    Ops whose weight is exactly the `none` op are skipped (they add zeros).
    """

    def __init__(self, family: Family, channels: int, k: int = 4) -> None:
        super().__init__()
        if channels % k:
            raise ValueError(f"channels={channels} must be divisible by k={k}")
        self.family = family
        self.k = k
        self.part = channels // k
        self.names = op_names(family)
        self.ops = nn.ModuleList()
        for name in self.names:
            op = build_op(family, name, self.part, affine=False)
            if name in POOLING_OPS:
                op = nn.Sequential(op, nn.BatchNorm2d(self.part, affine=False))
            self.ops.append(op)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """`scale` (the edge's normalised beta) multiplies the whole output; it is folded into the op
        weights and the bypass instead of a product with the full output, so autograd keeps no
        extra full-width tensor per edge (measured: -7% peak memory at K=4)."""
        if scale is not None:
            weights = weights * scale
        x_ops, x_rest = x[:, : self.part], x[:, self.part :]
        out = None
        for name, w, op in zip(self.names, weights, self.ops, strict=True):
            if name == "none":
                continue
            y = w * op(x_ops)
            out = y if out is None else out + y
        assert out is not None  # every family has an op besides "none"
        if self.k == 1:
            return out
        rest = _bypass(self.family, x_rest)
        if scale is not None:
            rest = rest * scale
        return channel_shuffle(torch.cat([out, rest], dim=1), self.k)
