"""How an engine talks to whoever runs it: events out, a stop flag in.

The CLI renders these as a progress bar; the worker writes them to the database. The
engine never knows which.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class StopRequested(Exception):
    """The caller asked the run to stop (cancel); raised between training steps."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message says what to change."""


@dataclass(frozen=True)
class StepEvent:
    """One optimisation step finished. `progress` and `eta_s` cover the whole run."""

    phase: str
    epoch: int
    epochs: int
    step: int
    steps_per_epoch: int
    loss: float
    elapsed_s: float
    run_elapsed_s: float = 0.0
    start_epoch: int = 0

    @property
    def progress(self) -> float:
        return (self.epoch * self.steps_per_epoch + self.step + 1) / (self.epochs * self.steps_per_epoch)

    @property
    def eta_s(self) -> float | None:
        done = (self.epoch - self.start_epoch) * self.steps_per_epoch + self.step + 1
        left = (self.epochs - self.epoch) * self.steps_per_epoch - self.step - 1
        return self.run_elapsed_s / done * left if done > 0 else None


@dataclass(frozen=True)
class EpochRecord:
    """Everything an epoch produced, as plain data (JSON-able)."""

    phase: str
    epoch: int
    epochs: int
    metrics: dict[str, dict[str, float | None]]
    elapsed_s: float
    eta_s: float | None = None
    arch: dict[str, dict[str, list]] | None = None
    genotype: dict[str, Any] | None = None
    per_case: list[dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "epoch": self.epoch, "epochs": self.epochs, "metrics": self.metrics,
                "elapsed_s": self.elapsed_s, "eta_s": self.eta_s, "arch": self.arch,
                "genotype": self.genotype, "per_case": self.per_case, **self.extra}


class Callbacks:
    """Base class with no-op hooks; override what you need."""

    def on_step(self, event: StepEvent) -> None:
        """After every optimisation step."""

    def on_epoch(self, record: EpochRecord) -> None:
        """After every epoch, once its checkpoint is on disk."""

    def on_checkpoint(self, path: Path, kind: str) -> None:
        """A checkpoint (`kind` = 'last', 'best' or 'final') was written atomically."""

    def should_stop(self) -> bool:
        """Checked between steps; True stops the run with StopRequested."""
        return False
