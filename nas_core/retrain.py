"""Retraining from scratch: a genotype or a baseline, CE + Dice, validation DSC every epoch.

Writes `last.pt` every epoch (exact resume), `best.pt` when validation DSC improves,
`final.pt` at the end, and `metrics.json` with per-case DSC of the best model on the
validation cases (which chose it) and, scored once at the end, on the test cases (which
chose nothing). Both are scored on each case at its own size. A run stops at its epochs
or its `time_budget_minutes`, whichever comes first, with the cosine schedule laid over it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas_core.callbacks import Callbacks, EpochRecord, StepEvent
from nas_core.checkpoint import check_resumable, load_checkpoint, save_checkpoint
from nas_core.config import RetrainConfig
from nas_core.data import open_dataset
from nas_core.data.splits import leak_message, leaked_cases, split_for
from nas_core.io import atomic_copy, atomic_write_text
from nas_core.loop import BatchStream, check_stop, checked, evaluate, mean_dsc
from nas_core.losses import DeepSupervisionLoss, DiceCELoss
from nas_core.metrics import summarise
from nas_core.models import architecture_name, build_model, count_parameters
from nas_core.optim import build_optimizer
from nas_core.pipeline import PreparedData, make_augmenter, prepare_retrain_data
from nas_core.runtime import (
    autocast,
    configure_backend,
    epoch_generator,
    free_device_memory,
    resolve_device,
    rng_state,
    seed_everything,
    set_rng_state,
)
from nas_core.schedule import RunClock, cosine

LAST, BEST, FINAL, METRICS = "last.pt", "best.pt", "final.pt", "metrics.json"
DIVERGED_HINT = "lower the learning rate (lr) or check the data's intensity normalisation"


@dataclass
class RetrainResult:
    metrics: dict[str, Any]
    best_checkpoint: Path
    final_checkpoint: Path
    history: list[dict[str, Any]]


class DataLeak(ValueError):
    """Validation or test cases of a retrain helped the search choose its architecture."""


def _architecture(spec: dict[str, Any], channels: int | None = None) -> dict[str, Any]:
    """Normalise an architecture spec to plain JSON (a Genotype object becomes its dict);
    ``channels`` sets a genotype's width C (search narrow, retrain wider)."""
    if "genotype" in spec and hasattr(spec["genotype"], "to_dict"):
        spec = {"genotype": spec["genotype"].to_dict()}
    spec = dict(spec)
    if channels is not None and "genotype" in spec:
        spec["genotype"] = {**spec["genotype"], "C": channels}
    return spec


class _Retrain:
    def __init__(self, data: PreparedData, architecture: dict[str, Any], config: RetrainConfig, out_dir: Path,
                 callbacks: Callbacks) -> None:
        self.data, self.config, self.out_dir, self.cb = data, config, out_dir, callbacks
        self.architecture = _architecture(architecture, config.channels)
        self.device = resolve_device(config.device)
        configure_backend(self.device, config.cpu_threads)
        seed_everything(config.seed)
        self.model = build_model(self.architecture, data.in_channels, data.num_classes,
                                 deep_supervision=config.deep_supervision).to(self.device)
        self.criterion = DeepSupervisionLoss(DiceCELoss(data.num_classes))
        self.opt = build_optimizer(config.optimizer, self.model, config.lr, config.weight_decay)
        self.clock = RunClock(config.epochs, config.time_budget_minutes)
        self.steps_run = 0
        self.augment = make_augmenter(config)
        self.amp = config.amp and self.device.type == "cuda"
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"epoch": None, "dsc": None}
        self.start_epoch = 0

    def state(self, epoch: int, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "kind": "retrain", "epoch": epoch, "architecture": self.architecture,
            **self.data.describe(), "config": self.config.to_dict(),
            "model": self.model.state_dict(), "optimizers": {"model": self.opt.state_dict()},
            "schedulers": {"clock": {"spent_s": self.clock.spent_s, "steps_run": self.steps_run}},
            "rng": rng_state(), "history": self.history, "best": self.best, "metrics": metrics or {},
            "params": count_parameters(self.model),
        }

    def restore(self, path: Path) -> None:
        state = load_checkpoint(path, map_location=self.device)
        check_resumable(state, "retrain", self.config.to_dict(), path)
        if state["architecture"] != self.architecture:
            raise ValueError(f"cannot resume from {path}: it trained another architecture")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizers"]["model"])
        clock = state["schedulers"].get("clock", {})
        self.clock = RunClock(self.config.epochs, self.config.time_budget_minutes, clock.get("spent_s", 0.0))
        self.steps_run = clock.get("steps_run", 0)
        set_rng_state(state["rng"])
        self.history, self.best, self.start_epoch = state["history"], state["best"], state["epoch"]

    def train_epoch(self, epoch: int, run_t0: float) -> dict[str, float | None]:
        cfg = self.config
        self.model.train()
        stream = BatchStream(self.data.train, cfg.batch_size, self.device, epoch_generator(cfg.seed, epoch),
                             augment=self.augment, num_workers=cfg.num_workers, limit=cfg.steps_per_epoch,
                             foreground=cfg.foreground_oversampling)
        total, steps, t0 = 0.0, len(stream), time.perf_counter()
        lr = None
        done = 0
        for step, (x, y) in enumerate(stream):
            check_stop(self.cb.should_stop)
            if step > 0 and self.clock.out_of_time():
                break
            rate = cosine(cfg.lr, 0.0, self.clock.progress(epoch + step / max(steps, 1)))
            for group in self.opt.param_groups:
                group["lr"] = rate
            lr = rate if lr is None else lr  # the rate this epoch started with
            self.opt.zero_grad(set_to_none=True)
            with autocast(self.device, self.amp):
                loss = self.criterion(self.model(x), y)
            total += checked(loss, epoch, step, DIVERGED_HINT)
            loss.backward()
            self.opt.step()
            done, self.steps_run = step + 1, self.steps_run + 1
            self.cb.on_step(StepEvent("retrain", epoch, cfg.epochs, step, steps, total / (step + 1),
                                      time.perf_counter() - t0, time.perf_counter() - run_t0, self.start_epoch))
        elapsed = time.perf_counter() - t0
        return {"loss": total / max(done, 1), "lr": lr, "steps": done,
                "data_wait_fraction": stream.wait_s / max(elapsed, 1e-9), "seconds": elapsed}

    def run(self) -> RetrainResult:
        cfg = self.config
        run_t0 = time.perf_counter()
        try:
            for epoch in range(self.start_epoch, cfg.epochs):
                if self.clock.out_of_time():
                    break
                train = self.train_epoch(epoch, run_t0)
                scores = evaluate(self.model, self.data.val, self.device, self.data.num_classes, self.amp)
                dsc = mean_dsc(scores)
                improved = dsc is not None and (self.best["dsc"] is None or dsc > self.best["dsc"])
                if improved or self.best["epoch"] is None:
                    self.best = {"epoch": epoch + 1, "dsc": dsc}
                record = EpochRecord(
                    "retrain", epoch, cfg.epochs, metrics={"train": train, "val": {"dsc": dsc}},
                    elapsed_s=time.perf_counter() - run_t0,
                    eta_s=(time.perf_counter() - run_t0) / (epoch + 1 - self.start_epoch) * (cfg.epochs - epoch - 1),
                    per_case=[s.to_dict() for s in scores], extra={"best_epoch": self.best["epoch"]},
                )
                self.history.append(record.to_dict())
                last = save_checkpoint(self.state(epoch + 1, self.summary(scores)), self.out_dir / LAST)
                self.cb.on_checkpoint(last, "last")
                if self.best["epoch"] == epoch + 1:
                    atomic_copy(last, self.out_dir / BEST)
                    self.cb.on_checkpoint(self.out_dir / BEST, "best")
                self.cb.on_epoch(record)
        finally:
            free_device_memory(self.device)
        return self.finish()

    def summary(self, scores: list) -> dict[str, Any]:
        names = self.data.class_names
        return {**summarise(scores, names), "per_case": [s.to_dict() for s in scores]}

    def test_scores(self, best_state: dict[str, Any]) -> dict[str, Any] | None:
        """The best model scored once on the test cases, which chose nothing."""
        if self.data.test is None:
            return None
        self.model.load_state_dict(best_state["model"])
        scores = evaluate(self.model, self.data.test, self.device, self.data.num_classes, self.amp, hd95=True)
        return self.summary(scores)

    def finish(self) -> RetrainResult:
        if self.clock.out_of_time():  # record the whole budget as spent, so a resume does not train on
            last = load_checkpoint(self.out_dir / LAST)
            last["schedulers"]["clock"]["spent_s"] = self.clock.spent_s
            save_checkpoint(last, self.out_dir / LAST)
        final = self.out_dir / FINAL
        atomic_copy(self.out_dir / LAST, final)
        self.cb.on_checkpoint(final, "final")
        best_state = load_checkpoint(self.out_dir / BEST)
        final_state = load_checkpoint(final)
        metrics = {
            "architecture": architecture_name(self.architecture), "spec": self.architecture,
            "params": count_parameters(self.model), "epochs": self.config.epochs,
            "epochs_run": len(self.history), "steps_run": self.steps_run,
            "stopped_by": "time_budget" if self.clock.out_of_time() else "epochs",
            "time_budget_minutes": self.config.time_budget_minutes,
            "working_size": list(self.data.frame.size), "frame": self.data.frame.to_dict(),
            "scoring": "hard DSC per case at the case's own size (frame logits cut to the case, resampled bilinear, then argmax)",
            "best_epoch": self.best["epoch"], "best": best_state["metrics"], "final": final_state["metrics"],
            "test": self.test_scores(best_state),
            "dataset": self.data.describe()["dataset"],
            "train_seconds": sum(h["metrics"]["train"]["seconds"] for h in self.history),
            "elapsed_seconds": self.clock.spent_s,
        }
        atomic_write_text(self.out_dir / METRICS, json.dumps(metrics, indent=2))
        return RetrainResult(metrics, self.out_dir / BEST, final, self.history)


def run_retrain(data: str | Path | PreparedData, architecture: dict[str, Any], config: RetrainConfig,
                out_dir: str | Path, callbacks: Callbacks | None = None, resume: bool = False,
                cache_dir: Path | None = None, data_format: str | None = None,
                search_cases: Sequence[str] | None = None) -> RetrainResult:
    """Train `architecture` ({"genotype": ...} or {"baseline": "unet"|"unetpp"}) from scratch.

    ``search_cases``: the cases a search used to choose this genotype; a retrain whose
    validation or test cases are among them raises :class:`DataLeak` before any file is decoded.
    """
    if search_cases is not None:
        split = data.split if isinstance(data, PreparedData) else split_for(
            open_dataset(Path(data), format=data_format), config)
        leaked = leaked_cases(search_cases, split) if split is not None else []
        if leaked:
            raise DataLeak(leak_message(leaked))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prepared = data if isinstance(data, PreparedData) else prepare_retrain_data(
        Path(data), config, cache_dir=cache_dir, data_format=data_format)
    job = _Retrain(prepared, architecture, config, out_dir, callbacks or Callbacks())
    if resume and (out_dir / LAST).exists():
        job.restore(out_dir / LAST)
    return job.run()
