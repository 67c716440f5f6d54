"""The op registry: every candidate operation of the Thrifty NAS space, by family.

A search space is data: genotypes name ops by their key in one of the three
families below, and every network (supernet or derived) builds its ops through
`build_op`. Each family fixes how an edge resamples:

* ``dn``   - stride-2 edges of DN cells (halve H and W),
* ``up``   - upsampling edges of UP cells (double H and W),
* ``node`` - stride-1 edges (node to node, and the same-resolution input of UP cells).

Every factory takes ``(C, affine)`` and returns a module mapping ``[B, C, H, W]`` to
``[B, C, H', W']`` with H' given by the family's resampling.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

import torch
import torch.nn.functional as F
from torch import nn


class Family(StrEnum):
    DN = "dn"
    UP = "up"
    NODE = "node"


class UnknownOp(ValueError):
    """A genotype or config names an op that its edge family does not have."""


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv -> BN, the DARTS conv unit."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int,
                 dilation: int = 1, affine: bool = True) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class DilConv(nn.Sequential):
    """ReLU -> depthwise dilated conv -> pointwise conv -> BN."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int,
                 dilation: int, affine: bool = True) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride, padding, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two stacked separable convs (the DARTS sep_conv); only the first may stride."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int,
                 affine: bool = True) -> None:
        super().__init__(
            DilConv(c_in, c_in, kernel, stride, padding, 1, affine),
            DilConv(c_in, c_out, kernel, 1, padding, 1, affine),
        )


class FactorizedReduce(nn.Module):
    """Halve H and W without losing information: two offset 1x1 stride-2 convs."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


class Zero(nn.Module):
    """The `none` op: zeros at the family's output resolution."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[2] * self.scale), int(x.shape[3] * self.scale)
        return x.new_zeros(x.shape[0], x.shape[1], h, w)


class Upsample(nn.Module):
    """Bilinear x2 upsampling (parameter-free)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def _up_then(op: nn.Module) -> nn.Module:
    return nn.Sequential(Upsample(), op)


class UpConv(nn.Sequential):
    """ReLU -> 2x2 transposed conv (stride 2) -> BN: learned upsampling."""

    def __init__(self, c: int, affine: bool = True) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.ConvTranspose2d(c, c, 2, stride=2, bias=False),
            nn.BatchNorm2d(c, affine=affine),
        )


OpFactory = Callable[[int, bool], nn.Module]

#: Pooling ops; a MixedOp follows them with a non-affine BN (PC-DARTS).
POOLING_OPS = frozenset({"max_pool", "avg_pool", "max_pool_3x3", "avg_pool_3x3"})

OPS: dict[Family, dict[str, OpFactory]] = {
    Family.DN: {
        "none": lambda c, affine: Zero(0.5),
        "max_pool": lambda c, affine: nn.MaxPool2d(3, stride=2, padding=1),
        "avg_pool": lambda c, affine: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
        "skip": lambda c, affine: FactorizedReduce(c, c, affine),
        "conv_3x3": lambda c, affine: ReLUConvBN(c, c, 3, 2, 1, affine=affine),
        "dil_conv_3x3": lambda c, affine: DilConv(c, c, 3, 2, 2, 2, affine),
        "sep_conv_3x3": lambda c, affine: SepConv(c, c, 3, 2, 1, affine),
    },
    Family.UP: {
        "none": lambda c, affine: Zero(2.0),
        "skip": lambda c, affine: _up_then(ReLUConvBN(c, c, 1, 1, 0, affine=affine)),
        "up_conv": lambda c, affine: UpConv(c, affine),
        "conv_3x3": lambda c, affine: _up_then(ReLUConvBN(c, c, 3, 1, 1, affine=affine)),
        "dil_conv_3x3": lambda c, affine: _up_then(DilConv(c, c, 3, 1, 2, 2, affine)),
    },
    Family.NODE: {
        "none": lambda c, affine: Zero(1.0),
        "max_pool_3x3": lambda c, affine: nn.MaxPool2d(3, stride=1, padding=1),
        "avg_pool_3x3": lambda c, affine: nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
        "skip": lambda c, affine: nn.Identity(),
        "conv_3x3": lambda c, affine: ReLUConvBN(c, c, 3, 1, 1, affine=affine),
        "sep_conv_3x3": lambda c, affine: SepConv(c, c, 3, 1, 1, affine),
        "dil_conv_3x3": lambda c, affine: DilConv(c, c, 3, 1, 2, 2, affine),
    },
}


def op_names(family: Family) -> list[str]:
    """The candidate ops of a family, in the order of the alpha columns."""
    return list(OPS[family])


def build_op(family: Family, name: str, channels: int, affine: bool = True) -> nn.Module:
    """Build op `name` of `family` at `channels` channels."""
    try:
        factory = OPS[family][name]
    except KeyError:
        raise UnknownOp(
            f"op {name!r} is not in the {family.value.upper()} family; known: {sorted(OPS[family])}"
        ) from None
    return factory(channels, affine)
