"""Training loss: cross-entropy plus soft Dice over the foreground classes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DeepSupervisionLoss(nn.Module):
    """A loss on every head of a deeply supervised network, as nnU-Net and UNet++ train.

    ``outputs`` is one logits tensor (passed to ``base`` as is) or the list of heads ordered
    shallow to deep; head ``i`` of ``n`` weighs ``2 ** (i - n + 1)`` (the deepest, the
    network's output, weighs most; each shallower head half as much, as nnU-Net halves the
    weight per level), the weights normalised to sum to 1.
    """

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    @staticmethod
    def weights(n: int) -> list[float]:
        raw = [2.0 ** (i - n + 1) for i in range(n)]
        return [w / sum(raw) for w in raw]

    def forward(self, outputs: torch.Tensor | list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self.base(outputs, target)
        return sum(w * self.base(o, target) for w, o in zip(self.weights(len(outputs)), outputs, strict=True))


class DiceCELoss(nn.Module):
    """``ce_weight * CE + dice_weight * (1 - soft Dice)``, Dice over foreground classes only.

    The soft Dice is nnU-Net's "batch dice": for each foreground class k = 1..K-1 the
    intersection and the sums run over the whole batch and all pixels at once,
    ``dice_k = (2 * sum(p_k * t_k) + smooth) / (sum(p_k) + sum(t_k) + smooth)`` with
    ``p = softmax(logits)`` and ``t`` the one-hot target; the Dice term is the mean of
    ``dice_k`` over foreground classes. Background (class 0) is never in the Dice term; it
    is in the cross-entropy. The Dice term lies in [0, 1], so the loss is bounded below by
    0 and reaches ~0 for confident, correct logits.

    Args:
        num_classes: K >= 2 (background + at least one foreground class).
        ce_weight: weight of the mean pixel cross-entropy.
        dice_weight: weight of ``1 - mean foreground soft Dice``.
        smooth: added to numerator and denominator; keeps empty classes finite.

    Shapes: ``forward(logits [B, K, *S], target [B, *S] int64 labels in [0, K)) -> []``,
    with ``S`` = (H, W) or (D, H, W).
    """

    def __init__(
        self, num_classes: int, ce_weight: float = 1.0, dice_weight: float = 1.0, smooth: float = 1e-5
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(
                f"DiceCELoss needs num_classes >= 2 (background + foreground), got {num_classes}; "
                "use a 2-class softmax head for a binary task"
            )
        if ce_weight < 0 or dice_weight < 0 or ce_weight + dice_weight == 0:
            raise ValueError(f"weights must be >= 0 and not both 0; got ce={ce_weight}, dice={dice_weight}")
        if smooth < 0:
            raise ValueError(f"smooth must be >= 0, got {smooth}")
        self.num_classes = num_classes
        self.ce_weight = ce_weight
        self.dice_weight = dice_weight
        self.smooth = smooth

    def soft_dice(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per foreground class batch soft Dice, shape ``[K - 1]``."""
        probs = logits.softmax(dim=1)[:, 1:]
        onehot = F.one_hot(target, self.num_classes).movedim(-1, 1)[:, 1:].to(probs.dtype)
        dims = (0, *range(2, probs.dim()))
        intersection = (probs * onehot).sum(dims)
        denominator = probs.sum(dims) + onehot.sum(dims)
        return (2 * intersection + self.smooth) / (denominator + self.smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.dim() < 3 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"logits must be [B, {self.num_classes}, *spatial], got shape {tuple(logits.shape)}"
            )
        if target.shape != logits.shape[:1] + logits.shape[2:]:
            raise ValueError(
                f"target must be [B, *spatial] = {tuple(logits.shape[:1] + logits.shape[2:])}, "
                f"got {tuple(target.shape)}"
            )
        if target.dtype != torch.long:
            raise ValueError(f"target must hold int64 class labels, got dtype {target.dtype}")
        loss = logits.new_zeros(())
        if self.ce_weight:
            loss = loss + self.ce_weight * F.cross_entropy(logits, target)
        if self.dice_weight:
            loss = loss + self.dice_weight * (1 - self.soft_dice(logits, target).mean())
        return loss
