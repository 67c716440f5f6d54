"""Faster inference with the same numbers: BatchNorm folded into the convolution before it.

In eval mode a BatchNorm is an affine map per channel, so ``BN(conv(x))`` equals one
convolution with scaled weights and a bias (``torch.nn.utils.fusion``). Folding removes a
full pass over every activation map it touches: in a derived network that is every
ReLU-Conv-BN, dilated and separable conv, cell fusion and the stem. The result differs from
the unfolded network by float rounding only (tested at 1e-4 absolute on the logits).

Only for inference: a folded model has no BatchNorm to train or to update.
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def _fold_sequential(seq: nn.Sequential) -> int:
    folded = 0
    names = list(seq._modules)
    for a, b in zip(names, names[1:], strict=False):
        conv, bn = seq._modules[a], seq._modules[b]
        if isinstance(conv, nn.Conv2d | nn.ConvTranspose2d) and isinstance(bn, nn.BatchNorm2d) \
                and bn.track_running_stats and bn.running_mean is not None:
            seq._modules[a] = fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d))
            seq._modules[b] = nn.Identity()
            folded += 1
    return folded


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every Conv -> BatchNorm pair of a Sequential folded."""
    model = copy.deepcopy(model).eval()
    count = sum(_fold_sequential(m) for m in model.modules() if isinstance(m, nn.Sequential))
    model.folded_batchnorms = count  # type: ignore[assignment]
    return model
