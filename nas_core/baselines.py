"""The paper's baselines: the Keras reference U-Net and UNet++ of Zhou et al.

Both follow ``MrGiovanni/UNetPlusPlus`` (``U_Net`` and ``Nest_Net``) layer for layer, so
their parameter counts match the Thrifty NAS paper's table exactly (1 input channel,
1-channel head): U-Net **7,759,521**, UNet++ **9,041,601**. A K-channel head adds
``33 * (K - 1)`` to either.

Shared pieces, as in the reference:

- *standard unit*: two 3x3 convolutions (bias, "same" padding), each followed by ReLU and
  an optional dropout (the reference uses p=0.5; we default to 0 so a retrain recipe
  decides). No batch norm.
- down: 2x2 max-pool; up: ``ConvTranspose2d(kernel=2, stride=2)`` to the level's filter
  count; the upsampled map is concatenated *before* the skips, as in the reference.
- head: 1x1 convolution to ``num_classes`` logits (no activation: sigmoid/softmax belongs
  to the loss and the metrics).

Inputs must have H and W divisible by ``2 ** (len(filters) - 1)`` (16 by default); wrap a
model in :class:`nas_core.padding.PadToMultiple` for other sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

DEFAULT_FILTERS: tuple[int, ...] = (32, 64, 128, 256, 512)


class StandardUnit(nn.Sequential):
    """Two 3x3 conv + ReLU (+ dropout) layers, the reference "standard unit".

    Args:
        c_in: input channels.
        c_out: output channels of both convolutions.
        dropout: dropout probability after each ReLU (0 disables it; no parameters).

    Shapes: ``[B, c_in, H, W] -> [B, c_out, H, W]``.
    """

    def __init__(self, c_in: int, c_out: int, dropout: float = 0.0) -> None:
        layers: list[nn.Module] = []
        for c in (c_in, c_out):
            layers += [nn.Conv2d(c, c_out, 3, padding=1, bias=True), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


def _up(c_in: int, c_out: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(c_in, c_out, kernel_size=2, stride=2)


def _check_args(in_channels: int, num_classes: int, filters: Sequence[int]) -> tuple[int, ...]:
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1 (1 = sigmoid head), got {num_classes}")
    filters = tuple(int(f) for f in filters)
    if len(filters) < 2 or any(f < 1 for f in filters):
        raise ValueError(f"filters must list >= 2 positive widths, one per level; got {filters}")
    return filters


def _init_like_keras(model: nn.Module) -> None:
    """He-normal kernels and zero biases for the 3x3/1x1 convs, as the reference does."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class _Baseline(nn.Module):
    filters: tuple[int, ...]

    @property
    def size_multiple(self) -> int:
        """H and W of an input must be multiples of this (``2 ** depth``)."""
        return 2 ** (len(self.filters) - 1)

    def _check_input(self, x: torch.Tensor) -> None:
        m = self.size_multiple
        if x.dim() != 4 or x.shape[-2] % m or x.shape[-1] % m:
            raise ValueError(
                f"{type(self).__name__} needs input [B, C, H, W] with H and W multiples of {m}; "
                f"got {tuple(x.shape)}. Wrap the model in nas_core.padding.PadToMultiple(model, {m})."
            )


class UNet(_Baseline):
    """The Keras reference U-Net (``U_Net`` of MrGiovanni/UNetPlusPlus).

    Args:
        in_channels: image channels (modalities).
        num_classes: output channels; 1 for a sigmoid (binary) head, K >= 2 for softmax.
        filters: width of each level, top to bottom; depth = ``len(filters) - 1``.
        dropout: dropout after each conv of every unit (reference: 0.5; default 0).

    Shapes: ``forward([B, in_channels, H, W]) -> [B, num_classes, H, W]`` logits, with H and
    W multiples of :attr:`size_multiple`.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 1,
        filters: Sequence[int] = DEFAULT_FILTERS,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.filters = _check_args(in_channels, num_classes, filters)
        f = self.filters
        self.pool = nn.MaxPool2d(2, 2)
        self.down = nn.ModuleList(
            StandardUnit(c_in, c_out, dropout) for c_in, c_out in zip((in_channels, *f[:-1]), f, strict=True)
        )
        self.ups = nn.ModuleList(_up(f[i + 1], f[i]) for i in range(len(f) - 1))
        self.up_units = nn.ModuleList(StandardUnit(2 * f[i], f[i], dropout) for i in range(len(f) - 1))
        self.head = nn.Conv2d(f[0], num_classes, 1)
        _init_like_keras(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, H, W] -> [B, num_classes, H, W]`` logits."""
        self._check_input(x)
        skips: list[torch.Tensor] = []
        for i, unit in enumerate(self.down):
            x = unit(x if i == 0 else self.pool(x))
            skips.append(x)
        for i in reversed(range(len(self.filters) - 1)):
            x = self.up_units[i](torch.cat([self.ups[i](x), skips[i]], dim=1))
        return self.head(x)


class UNetPlusPlus(_Baseline):
    """UNet++ (``Nest_Net`` of MrGiovanni/UNetPlusPlus): nested, dense skip pathways.

    Node ``X[i][j]`` (level i, column j) is ``unit(cat(up(X[i+1][j-1]), X[i][0], ..., X[i][j-1]))``
    with ``up = ConvTranspose2d(filters[i+1] -> filters[i], 2, stride 2)``; column 0 is the
    encoder.

    Args:
        in_channels: image channels (modalities).
        num_classes: output channels; 1 for a sigmoid (binary) head, K >= 2 for softmax.
        filters: width of each level, top to bottom; depth L = ``len(filters) - 1``.
        deep_supervision: one 1x1 head on each of ``X[0][1..L]`` instead of only ``X[0][L]``.
        dropout: dropout after each conv of every unit (reference: 0.5; default 0).

    Shapes: ``forward([B, in_channels, H, W]) -> [B, num_classes, H, W]`` logits, always one
    tensor, in training and in eval: the last head's logits, or with deep supervision the
    mean of all heads' logits (the UNet++ "accurate mode" ensemble). A trainer that wants a
    loss per head calls :meth:`forward_heads` instead.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 1,
        filters: Sequence[int] = DEFAULT_FILTERS,
        deep_supervision: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.filters = _check_args(in_channels, num_classes, filters)
        self.deep_supervision = deep_supervision
        f = self.filters
        depth = len(f) - 1
        self.pool = nn.MaxPool2d(2, 2)
        # nodes[i][j] builds X[i][j]; ups[i][j] upsamples X[i+1][j-1] for it (j >= 1).
        self.nodes = nn.ModuleList()
        self.ups = nn.ModuleList()
        for i in range(depth + 1):
            units = [StandardUnit(in_channels if i == 0 else f[i - 1], f[i], dropout)]
            units += [StandardUnit((j + 1) * f[i], f[i], dropout) for j in range(1, depth - i + 1)]
            self.nodes.append(nn.ModuleList(units))
            self.ups.append(nn.ModuleList(_up(f[i + 1], f[i]) for _ in range(depth - i)))
        n_heads = depth if deep_supervision else 1
        self.heads = nn.ModuleList(nn.Conv2d(f[0], num_classes, 1) for _ in range(n_heads))
        _init_like_keras(self)

    def forward_heads(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[B, C_in, H, W] -> [[B, num_classes, H, W], ...]``: one logits map per head,
        shallowest first (L of them with deep supervision, else 1)."""
        self._check_input(x)
        depth = len(self.filters) - 1
        grid: list[list[torch.Tensor]] = [[] for _ in range(depth + 1)]
        nodes = cast(Sequence[Sequence[nn.Module]], self.nodes)  # ModuleLists of ModuleLists
        ups = cast(Sequence[Sequence[nn.Module]], self.ups)
        for i in range(depth + 1):
            grid[i].append(nodes[i][0](x if i == 0 else self.pool(grid[i - 1][0])))
        # Column by column, so X[i+1][j-1] exists before X[i][j] needs it.
        for j in range(1, depth + 1):
            for i in range(depth - j + 1):
                up = ups[i][j - 1](grid[i + 1][j - 1])
                grid[i].append(nodes[i][j](torch.cat([up, *grid[i][:j]], dim=1)))
        tops = grid[0][1:] if self.deep_supervision else grid[0][-1:]
        return [head(t) for head, t in zip(self.heads, tops, strict=True)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, H, W] -> [B, num_classes, H, W]`` logits; with several heads, their list
        (shallow to deep) in training, for a loss on each, and their mean in eval."""
        heads = self.forward_heads(x)
        if len(heads) == 1:
            return heads[0]
        return heads if self.training else torch.stack(heads).mean(dim=0)  # type: ignore[return-value]


BASELINES: dict[str, type[_Baseline]] = {"unet": UNet, "unetpp": UNetPlusPlus}


def build_baseline(name: str, in_channels: int = 1, num_classes: int = 1, **kwargs: object) -> nn.Module:
    """Build a baseline by registry name (``"unet"`` or ``"unetpp"``).

    Extra keyword arguments (``filters``, ``dropout``, ``deep_supervision`` for UNet++) go to
    the class.
    """
    try:
        cls = BASELINES[name]
    except KeyError:
        raise ValueError(f"unknown baseline {name!r}; known: {sorted(BASELINES)}") from None
    return cls(in_channels=in_channels, num_classes=num_classes, **kwargs)
