"""A rich progress bar fed by engine callbacks: epoch, loss, DSC and ETA."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from nas_core.callbacks import Callbacks, EpochRecord, StepEvent


class ProgressBar(Callbacks):
    """Callbacks that draw one bar over the whole run (hidden with `quiet`)."""

    def __init__(self, title: str, quiet: bool = False) -> None:
        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
            TextColumn("epoch {task.fields[epoch]}"), TextColumn("loss {task.fields[loss]}"),
            TextColumn("DSC {task.fields[dsc]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self.console, disable=quiet, transient=False,
        )
        self.task = self.progress.add_task(title, total=1.0, epoch="-", loss="-", dsc="-")
        self.last_dsc = "-"

    def __enter__(self) -> ProgressBar:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def on_step(self, event: StepEvent) -> None:
        self.progress.update(self.task, completed=event.progress, epoch=f"{event.epoch + 1}/{event.epochs}",
                             loss=f"{event.loss:.4f}", dsc=self.last_dsc)

    def on_epoch(self, record: EpochRecord) -> None:
        held_out = record.metrics.get("val") or record.metrics.get("arch") or {}
        dsc = held_out.get("dsc")
        self.last_dsc = "-" if dsc is None else f"{dsc:.4f}"
        self.progress.update(self.task, completed=(record.epoch + 1) / record.epochs, dsc=self.last_dsc,
                             epoch=f"{record.epoch + 1}/{record.epochs}")
