"""The pieces every training loop shares: batches on the device, a checked loss, evaluation."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from nas_core.callbacks import StopRequested, TrainingDiverged
from nas_core.data.frame import Placement
from nas_core.data.preprocess import to_native
from nas_core.metrics import CaseScores
from nas_core.runtime import autocast, batches

EVAL_PIXELS = 4 * 64 * 64  # pixels per no-gradient batch: 4 slices of 64x64, 1 of 128x128 or more
MAX_EVAL_BATCH = 16


def eval_batch_size(height: int, width: int) -> int:
    """Slices per no-gradient batch for a frame: a budget of pixels, not of slices, so the
    evaluation's peak does not grow with the frame (a batch of 16 at 64x64 doubled a
    retrain's peak RSS on CPU; one slice at a time costs no throughput there)."""
    return max(1, min(MAX_EVAL_BATCH, EVAL_PIXELS // max(height * width, 1)))


Augmenter = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


class BatchStream:
    """Batches of one epoch, moved to the device, with the time spent waiting for them.

    Shuffling and augmentation come from `generator`, so an epoch's batches depend only on
    (seed, epoch). Slices live in memory (SliceDataset caches them), so workers are optional.
    ``foreground``: the share of each batch drawn from slices that show foreground (nnU-Net
    forces a third), so thin or small structures do not starve among empty slices.
    """

    def __init__(self, dataset: Dataset, batch_size: int, device: torch.device, generator: torch.Generator,
                 augment: Augmenter | None = None, num_workers: int = 0, limit: int | None = None,
                 foreground: float = 0.0) -> None:
        n = len(dataset)  # type: ignore[arg-type]
        order = list(batches(n, min(batch_size, n), generator, drop_last=True))
        order = order[:limit] if limit else order
        pool = getattr(dataset, "foreground_slices", None)
        self.batches = oversample(order, pool() if pool else [], foreground, generator)
        self.loader = DataLoader(dataset, batch_sampler=self.batches, num_workers=num_workers,
                                 pin_memory=device.type == "cuda", persistent_workers=False)
        self.device, self.augment, self.generator = device, augment, generator
        self.wait_s = 0.0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        it = iter(self.loader)
        while True:
            t0 = time.perf_counter()
            try:
                images, labels, _ = next(it)
            except StopIteration:
                return
            nb = self.device.type == "cuda"
            if self.augment is not None and not getattr(self.augment, "batched", False):
                pairs = [self.augment(i, lbl, self.generator) for i, lbl in zip(images, labels, strict=True)]
                images = torch.stack([p[0] for p in pairs])
                labels = torch.stack([p[1] for p in pairs])
            images = images.to(self.device, non_blocking=nb)
            labels = labels.to(self.device, non_blocking=nb).long()
            if self.augment is not None and getattr(self.augment, "batched", False):
                images, labels = self.augment(images, labels, self.generator)  # once, on the device
            self.wait_s += time.perf_counter() - t0
            yield images, labels


def oversample(order: list[list[int]], pool: list[int], share: float,
               generator: torch.Generator) -> list[list[int]]:
    """Each batch with its last ``ceil(share * size)`` places drawn from ``pool`` (foreground
    slices), as nnU-Net does; unchanged when the share is 0 or the pool is empty."""
    if share <= 0 or not pool:
        return order
    out = []
    for batch in order:
        forced = min(len(batch), math.ceil(share * len(batch)))
        draws = torch.randint(len(pool), (forced,), generator=generator).tolist()
        out.append(batch[: len(batch) - forced] + [pool[i] for i in draws])
    return out


def checked(loss: torch.Tensor, epoch: int, step: int, hint: str) -> float:
    """The loss as a float; NaN/inf stops the run with a reason a person can act on."""
    value = float(loss.detach())
    if not math.isfinite(value):
        raise TrainingDiverged(f"training diverged: loss is {value} at epoch {epoch + 1}, step {step + 1}; {hint}")
    return value


def check_stop(should_stop: Callable[[], bool]) -> None:
    if should_stop():
        raise StopRequested("stop requested")


@torch.no_grad()
def predict_slices(model: nn.Module, images: torch.Tensor, device: torch.device, amp: bool,
                   batch_size: int | None = None, out_size: tuple[int, int] | None = None, tta: bool = False,
                   placement: Placement | None = None) -> torch.Tensor:
    """Argmax labels [N, H, W] for images [N, C, H', W'] in the working frame.

    With ``out_size``, the logits are cut to ``placement`` (where the case sits in the frame;
    None: the whole frame) and resampled (bilinear) to that in-plane size before the argmax:
    how a prediction made in the working frame returns to the scan's own size.
    Resampling the label map instead (nearest) would make staircase edges and lose thin
    structures. ``tta``: the logits averaged over the four mirrorings (none, H, W, both), as
    nnU-Net predicts by default.
    """
    out = []
    flips = [(), (-1,), (-2,), (-2, -1)] if tta else [()]
    batch_size = batch_size or eval_batch_size(*images.shape[-2:])
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(device)
        logits = torch.zeros(())
        for dims in flips:
            with autocast(device, amp):
                y = model(x.flip(dims) if dims else x).float()
            logits = logits + (y.flip(dims) if dims else y)
        logits = logits / len(flips)
        if out_size is not None:
            logits = to_native(logits, placement, out_size)
        out.append(logits.argmax(1).cpu())
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Any, device: torch.device, num_classes: int, amp: bool = False,
             batch_size: int | None = None, hd95: bool = False) -> list[CaseScores]:
    """Hard DSC/IoU per case: every slice of a case predicted, the whole volume scored at once.

    A dataset built with ``native=True`` is scored on each case at its own size (logits
    resampled, then argmax); otherwise on the resized slices. ``hd95``: also the 95th
    percentile Hausdorff distance of every case whose spacing is known (for final reports:
    it costs more than the Dice).
    """
    was_training = model.training
    model.eval()
    scores = []
    try:
        for case_index, case_id in enumerate(dataset.case_ids):
            idx = dataset.slices_of(case_index)
            if not idx:
                continue
            items = [dataset[i] for i in idx]
            images = torch.stack([it[0] for it in items])
            native = getattr(dataset, "native_labels", None)
            labels = native[case_index].long() if native is not None else torch.stack([it[1] for it in items])
            where = dataset.placements[case_index] if native is not None else None
            pred = predict_slices(model, images, device, amp, batch_size, out_size=tuple(labels.shape[-2:]),
                                  placement=where)
            spacing = (getattr(dataset, "native_spacing", None) or [None] * (case_index + 1))[case_index]
            scores.append(CaseScores.compute(case_id, pred, labels, num_classes, spacing=spacing if hd95 else None))
    finally:
        model.train(was_training)
    return scores


def mean_dsc(scores: list[CaseScores]) -> float | None:
    """Mean over foreground classes of each class's mean DSC over cases (undefined cases skipped):
    nnU-Net's ``foreground_mean`` and exactly ``summarise(...)["mean_dsc"]``, so the epoch that
    is selected is the one the report calls best."""
    classes = sorted({k for s in scores for k in s.dsc})
    means = []
    for k in classes:
        vals = [s.dsc[k] for s in scores if k in s.dsc and not math.isnan(s.dsc[k])]
        if vals:
            means.append(sum(vals) / len(vals))
    return sum(means) / len(means) if means else None
