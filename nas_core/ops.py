"""The op registry: the PyTorch module of every candidate operation of the Thrifty NAS space.

A search space is data: genotypes name ops by their key in one of the families of
`nas_core.space` (the names and their order live there, without PyTorch), and every
network (supernet or derived) builds its ops through `build_op`. Every factory takes
``(C, affine)`` and returns a module mapping ``[B, C, H, W]`` to ``[B, C, H', W']`` with
H' given by the family's resampling.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nas_core.space import OP_NAMES, POOLING_OPS, Family, UnknownOp, op_names

__all__ = ["OPS", "POOLING_OPS", "Family", "UnknownOp", "build_op", "op_names"]


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

_FACTORIES: dict[Family, dict[str, OpFactory]] = {
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
if any(set(_FACTORIES[f]) != set(OP_NAMES[f]) for f in Family):
    raise ImportError("nas_core.ops builds other ops than nas_core.space.OP_NAMES names")

#: Every family's op factories, keyed and ordered as `nas_core.space.OP_NAMES` (the alpha columns).
OPS: dict[Family, dict[str, OpFactory]] = {f: {n: _FACTORIES[f][n] for n in OP_NAMES[f]} for f in Family}


def build_op(family: Family, name: str, channels: int, affine: bool = True) -> nn.Module:
    """Build op `name` of `family` at `channels` channels."""
    try:
        factory = OPS[family][name]
    except KeyError:
        raise UnknownOp(
            f"op {name!r} is not in the {family.value.upper()} family; known: {sorted(OPS[family])}"
        ) from None
    return factory(channels, affine)
