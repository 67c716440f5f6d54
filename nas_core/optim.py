"""The retrain's optimisers, by name: Adam (default), AdamW and nnU-Net's SGD.

AdamW decouples weight decay and, as is usual, spares normalisation weights and biases
(decaying a BatchNorm scale only fights the normalisation). nnU-Net's recipe is SGD with
Nesterov momentum 0.99; its learning rate is usually 10x Adam's (``lr=0.01``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)  # biases and norm scales are 1-D
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


OPTIMIZERS: dict[str, Callable[[nn.Module, float, float], torch.optim.Optimizer]] = {
    "adam": lambda m, lr, wd: torch.optim.Adam(m.parameters(), lr=lr, weight_decay=wd),
    "adamw": lambda m, lr, wd: torch.optim.AdamW(_decay_groups(m, wd), lr=lr),
    "sgd": lambda m, lr, wd: torch.optim.SGD(m.parameters(), lr=lr, momentum=0.99, nesterov=True, weight_decay=wd),
}


def build_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return OPTIMIZERS[name](model, lr, weight_decay)
