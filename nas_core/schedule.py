"""How far a run has come, in epochs or in wall-clock time, and the learning rate that follows.

Labs budget in GPU-hours, so a run may be bounded by ``time_budget_minutes`` as well as by
epochs. Progress is whichever fraction is larger; the cosine schedule is laid over it, so a
run stopped by its budget has annealed, not been cut off mid-schedule. Time spent in
earlier attempts is carried in checkpoints (``spent_s``), so a resumed run keeps its budget.
"""

from __future__ import annotations

import math
import time


def cosine(lr0: float, lr_min: float, progress: float) -> float:
    """Cosine annealing from ``lr0`` (progress 0) to ``lr_min`` (progress 1)."""
    p = min(max(progress, 0.0), 1.0)
    return lr_min + (lr0 - lr_min) * 0.5 * (1.0 + math.cos(math.pi * p))


class RunClock:
    """Progress through ``epochs`` or ``budget_minutes`` of wall-clock, whichever ends first."""

    def __init__(self, epochs: int, budget_minutes: float | None, spent_s: float = 0.0) -> None:
        self.epochs = epochs
        self.budget_s = None if budget_minutes is None else budget_minutes * 60.0
        self.spent_before = spent_s
        self.t0 = time.perf_counter()

    @property
    def spent_s(self) -> float:
        """Seconds spent by this run, earlier attempts included."""
        return self.spent_before + time.perf_counter() - self.t0

    def progress(self, epochs_done: float) -> float:
        """Fraction of the run done, in [0, 1], after ``epochs_done`` (fractional) epochs."""
        p = epochs_done / self.epochs
        if self.budget_s is not None:
            p = max(p, self.spent_s / self.budget_s)
        return min(p, 1.0)

    def out_of_time(self) -> bool:
        return self.budget_s is not None and self.spent_s >= self.budget_s
