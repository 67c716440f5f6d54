"""Retraining from scratch: a genotype or a baseline, CE + Dice, validation DSC every epoch.

Writes `last.pt` every epoch (exact resume), `best.pt` when validation DSC improves,
`final.pt` at the end, and `metrics.json` with per-case DSC of the best model.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nas_core.callbacks import Callbacks, EpochRecord, StepEvent
from nas_core.checkpoint import check_resumable, load_checkpoint, save_checkpoint
from nas_core.config import RetrainConfig
from nas_core.loop import BatchStream, check_stop, checked, evaluate, mean_dsc
from nas_core.losses import DiceCELoss
from nas_core.metrics import summarise
from nas_core.models import architecture_name, build_model, count_parameters
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

LAST, BEST, FINAL, METRICS = "last.pt", "best.pt", "final.pt", "metrics.json"
DIVERGED_HINT = "lower the learning rate (lr) or check the data's intensity normalisation"


@dataclass
class RetrainResult:
    metrics: dict[str, Any]
    best_checkpoint: Path
    final_checkpoint: Path
    history: list[dict[str, Any]]


def _architecture(spec: dict[str, Any]) -> dict[str, Any]:
    """Normalise an architecture spec to plain JSON (a Genotype object becomes its dict)."""
    if "genotype" in spec and hasattr(spec["genotype"], "to_dict"):
        return {"genotype": spec["genotype"].to_dict()}
    return dict(spec)


class _Retrain:
    def __init__(self, data: PreparedData, architecture: dict[str, Any], config: RetrainConfig, out_dir: Path,
                 callbacks: Callbacks) -> None:
        self.data, self.config, self.out_dir, self.cb = data, config, out_dir, callbacks
        self.architecture = _architecture(architecture)
        self.device = resolve_device(config.device)
        configure_backend(self.device, config.cpu_threads)
        seed_everything(config.seed)
        self.model = build_model(self.architecture, data.in_channels, data.num_classes,
                                 deep_supervision=config.deep_supervision).to(self.device)
        self.criterion = DiceCELoss(data.num_classes)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, config.epochs)
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
            "schedulers": {"model": self.sched.state_dict()}, "rng": rng_state(),
            "history": self.history, "best": self.best, "metrics": metrics or {},
            "params": count_parameters(self.model),
        }

    def restore(self, path: Path) -> None:
        state = load_checkpoint(path, map_location=self.device)
        check_resumable(state, "retrain", self.config.to_dict(), path)
        if state["architecture"] != self.architecture:
            raise ValueError(f"cannot resume from {path}: it trained another architecture")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizers"]["model"])
        self.sched.load_state_dict(state["schedulers"]["model"])
        set_rng_state(state["rng"])
        self.history, self.best, self.start_epoch = state["history"], state["best"], state["epoch"]

    def train_epoch(self, epoch: int, run_t0: float) -> dict[str, float | None]:
        cfg = self.config
        self.model.train()
        stream = BatchStream(self.data.train, cfg.batch_size, self.device, epoch_generator(cfg.seed, epoch),
                             augment=self.augment, num_workers=cfg.num_workers, limit=cfg.steps_per_epoch)
        total, steps, t0 = 0.0, len(stream), time.perf_counter()
        for step, (x, y) in enumerate(stream):
            check_stop(self.cb.should_stop)
            self.opt.zero_grad(set_to_none=True)
            with autocast(self.device, self.amp):
                loss = self.criterion(self.model(x), y)
            total += checked(loss, epoch, step, DIVERGED_HINT)
            loss.backward()
            self.opt.step()
            self.cb.on_step(StepEvent("retrain", epoch, cfg.epochs, step, steps, total / (step + 1),
                                      time.perf_counter() - t0, time.perf_counter() - run_t0, self.start_epoch))
        lr = self.opt.param_groups[0]["lr"]  # the rate this epoch used
        self.sched.step()
        elapsed = time.perf_counter() - t0
        return {"loss": total / max(steps, 1), "lr": lr,
                "data_wait_fraction": stream.wait_s / max(elapsed, 1e-9), "seconds": elapsed}

    def run(self) -> RetrainResult:
        cfg = self.config
        run_t0 = time.perf_counter()
        try:
            for epoch in range(self.start_epoch, cfg.epochs):
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
                    shutil.copyfile(last, self.out_dir / f".{BEST}.tmp")
                    (self.out_dir / f".{BEST}.tmp").replace(self.out_dir / BEST)
                    self.cb.on_checkpoint(self.out_dir / BEST, "best")
                self.cb.on_epoch(record)
        finally:
            free_device_memory(self.device)
        return self.finish()

    def summary(self, scores: list) -> dict[str, Any]:
        names = self.data.class_names
        return {**summarise(scores, names), "per_case": [s.to_dict() for s in scores]}

    def finish(self) -> RetrainResult:
        final = self.out_dir / FINAL
        shutil.copyfile(self.out_dir / LAST, self.out_dir / f".{FINAL}.tmp")
        (self.out_dir / f".{FINAL}.tmp").replace(final)
        self.cb.on_checkpoint(final, "final")
        best_state = load_checkpoint(self.out_dir / BEST)
        final_state = load_checkpoint(final)
        metrics = {
            "architecture": architecture_name(self.architecture), "spec": self.architecture,
            "params": count_parameters(self.model), "epochs": self.config.epochs,
            "best_epoch": self.best["epoch"], "best": best_state["metrics"], "final": final_state["metrics"],
            "dataset": self.data.describe()["dataset"],
            "train_seconds": sum(h["metrics"]["train"]["seconds"] for h in self.history),
        }
        (self.out_dir / METRICS).write_text(json.dumps(metrics, indent=2))
        return RetrainResult(metrics, self.out_dir / BEST, final, self.history)


def run_retrain(data: str | Path | PreparedData, architecture: dict[str, Any], config: RetrainConfig,
                out_dir: str | Path, callbacks: Callbacks | None = None, resume: bool = False,
                cache_dir: Path | None = None, data_format: str | None = None) -> RetrainResult:
    """Train `architecture` ({"genotype": ...} or {"baseline": "unet"|"unetpp"}) from scratch."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prepared = data if isinstance(data, PreparedData) else prepare_retrain_data(
        Path(data), config.image_size, config.seed, config.val_fraction, cache_dir=cache_dir,
        data_format=data_format)
    job = _Retrain(prepared, architecture, config, out_dir, callbacks or Callbacks())
    if resume and (out_dir / LAST).exists():
        job.restore(out_dir / LAST)
    return job.run()
