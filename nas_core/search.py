"""The PC-DARTS search engine: first-order bilevel optimisation of the supernet.

The training cases are halved (by case): one half trains the weights (SGD, cosine), the
other the architecture (Adam on alphas and betas) once the warm-up is over. Every epoch
records alphas, betas, the derived genotype, losses and the architecture-half DSC, and
writes an atomic checkpoint from which `resume=True` continues exactly.

A search stops at its epochs or its `time_budget_minutes`, whichever comes first: the
weights' cosine schedule is laid over that length and the warm-up is the same share of it
(warmup_epochs / epochs). `summary.json` records the cases the search used
(`search_cases`), so a retrain can refuse to validate or test on them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nas_core.callbacks import Callbacks, EpochRecord, StepEvent
from nas_core.checkpoint import check_resumable, load_checkpoint, save_checkpoint
from nas_core.config import SearchConfig
from nas_core.derive import fit_params
from nas_core.genotype import Genotype
from nas_core.io import atomic_write_text
from nas_core.latency import LatencyLoss, expected_latency, latency_table, measure_network_ms
from nas_core.loop import BatchStream, check_stop, checked, evaluate, mean_dsc
from nas_core.losses import DeepSupervisionLoss, DiceCELoss
from nas_core.models import build_model, count_parameters
from nas_core.pipeline import PreparedData, make_augmenter, prepare_search_data
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
from nas_core.supernet import SearchNetwork
from nas_core.topology import CellType

LAST = "last.pt"
ALPHAS = "alphas.jsonl"
GENOTYPE = "genotype.json"
SUMMARY = "summary.json"
DIVERGED_HINT = "lower the weight learning rate (w_lr) or the architecture learning rate (arch_lr)"


@dataclass
class SearchResult:
    genotype: Genotype
    history: list[dict[str, Any]]
    out_dir: Path
    epochs_run: int
    stopped_early: bool
    summary: dict[str, Any] = field(default_factory=dict)


class _Search:
    """One search run: state plus the epoch loop; `run()` is the only entry point."""

    def __init__(self, data: PreparedData, config: SearchConfig, out_dir: Path, callbacks: Callbacks,
                 cache_dir: Path | None = None) -> None:
        self.data, self.config, self.out_dir, self.cb = data, config, out_dir, callbacks
        self.device = resolve_device(config.device)
        configure_backend(self.device, config.cpu_threads)
        seed_everything(config.seed)
        self.model = SearchNetwork(data.in_channels, data.num_classes, channels=config.channels,
                                   depth=config.depth, nodes=config.nodes, k=config.k,
                                   deep_supervision=config.deep_supervision).to(self.device)
        self.criterion = DeepSupervisionLoss(DiceCELoss(data.num_classes))
        self.w_opt = torch.optim.SGD(self.model.weights(), lr=config.w_lr, momentum=config.w_momentum,
                                     weight_decay=config.w_weight_decay)
        self.clock = RunClock(config.epochs, config.time_budget_minutes)
        self.augment = make_augmenter(config)
        self.latency = None
        if config.latency_weight > 0:  # measured once per device kind and size, then read from the cache
            # at the width and size the found network will run at, which may not be the search's
            table = latency_table(config.latency_channels or config.channels, config.depth,
                                  config.latency_image_size or data.frame.size, self.device,
                                  cache_dir=(cache_dir or out_dir) / "latency")
            self.latency = LatencyLoss(table, config.depth, config.nodes, config.latency_weight,
                                       config.latency_target_ms)
        self.a_opt = torch.optim.Adam(self.model.arch_parameters(), lr=config.arch_lr, betas=config.arch_betas,
                                      weight_decay=config.arch_weight_decay)
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 0
        self.amp = config.amp and self.device.type == "cuda"

    # -- checkpointing -------------------------------------------------------------------
    def state(self, epoch: int) -> dict[str, Any]:
        return {
            "kind": "search", "epoch": epoch,
            "architecture": {"supernet": {"channels": self.config.channels, "depth": self.config.depth,
                                          "nodes": self.config.nodes, "k": self.config.k}},
            "genotype": self.derived().to_dict(),
            **self.data.describe(), "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizers": {"weights": self.w_opt.state_dict(), "arch": self.a_opt.state_dict()},
            "schedulers": {"clock": {"spent_s": self.clock.spent_s}},
            "rng": rng_state(), "history": self.history,
        }

    def restore(self, path: Path) -> None:
        state = load_checkpoint(path, map_location=self.device)
        check_resumable(state, "search", self.config.to_dict(), path)
        self.model.load_state_dict(state["model"])
        self.w_opt.load_state_dict(state["optimizers"]["weights"])
        self.a_opt.load_state_dict(state["optimizers"]["arch"])
        self.clock = RunClock(self.config.epochs, self.config.time_budget_minutes,
                              state["schedulers"].get("clock", {}).get("spent_s", 0.0))
        set_rng_state(state["rng"])
        self.history = state["history"]
        self.start_epoch = state["epoch"]

    # -- the loop ----------------------------------------------------------------------
    def train_epoch(self, epoch: int, run_t0: float) -> dict[str, float | None]:
        cfg = self.config
        self.model.train()
        w_stream = BatchStream(self.data.train, cfg.batch_size, self.device, epoch_generator(cfg.seed, epoch, 0),
                               augment=self.augment, num_workers=cfg.num_workers, limit=cfg.steps_per_epoch,
                               foreground=cfg.foreground_oversampling)
        a_stream = BatchStream(self.data.arch, cfg.batch_size, self.device, epoch_generator(cfg.seed, epoch, 1),
                               num_workers=cfg.num_workers, foreground=cfg.foreground_oversampling)
        warmup = cfg.warmup_epochs / cfg.epochs
        arch_on = cfg.arch_lr > 0 and self.clock.progress(epoch) >= warmup
        a_iter = iter(a_stream) if arch_on else None
        w_loss = a_loss = 0.0
        steps, done, lr = len(w_stream), 0, None
        t0 = time.perf_counter()
        for step, (x, y) in enumerate(w_stream):
            check_stop(self.cb.should_stop)
            if step > 0 and self.clock.out_of_time():
                break
            rate = cosine(cfg.w_lr, cfg.w_lr_min, self.clock.progress(epoch + step / max(steps, 1)))
            for group in self.w_opt.param_groups:
                group["lr"] = rate
            lr = rate if lr is None else lr  # the rate this epoch started with
            if a_iter is not None:
                try:
                    xa, ya = next(a_iter)
                except StopIteration:
                    a_iter = iter(a_stream)
                    xa, ya = next(a_iter)
                self.a_opt.zero_grad(set_to_none=True)
                with autocast(self.device, self.amp):
                    loss_a = self.criterion(self.model(xa), ya)
                if self.latency is not None:
                    loss_a = loss_a + self.latency({t: self.model.alphas[t.value] for t in CellType})
                a_loss += checked(loss_a, epoch, step, DIVERGED_HINT)
                loss_a.backward()
                self.a_opt.step()
            self.w_opt.zero_grad(set_to_none=True)
            with autocast(self.device, self.amp):
                loss = self.criterion(self.model(x), y)
            w_loss += checked(loss, epoch, step, DIVERGED_HINT)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(self.model.weights()), cfg.grad_clip)
            self.w_opt.step()
            done = step + 1
            self.cb.on_step(StepEvent("search", epoch, cfg.epochs, step, steps, w_loss / (step + 1),
                                      time.perf_counter() - t0, time.perf_counter() - run_t0, self.start_epoch))
        elapsed = time.perf_counter() - t0
        return {"loss": w_loss / max(done, 1), "arch_loss": a_loss / max(done, 1) if arch_on else None,
                "lr": lr, "steps": done, "data_wait_fraction": w_stream.wait_s / max(elapsed, 1e-9),
                "seconds": elapsed}

    def run(self) -> SearchResult:
        cfg = self.config
        run_t0 = time.perf_counter()
        stopped_early = False
        try:
            for epoch in range(self.start_epoch, cfg.epochs):
                if self.clock.out_of_time():
                    break
                train = self.train_epoch(epoch, run_t0)
                last = epoch + 1 == cfg.epochs or self.clock.out_of_time()
                dsc = None  # the architecture half is scored every eval_every epochs and at the end
                if (epoch + 1) % cfg.eval_every == 0 or last:
                    dsc = mean_dsc(evaluate(self.model, self.data.arch, self.device, self.data.num_classes,
                                            self.amp))
                genotype = self.derived()
                record = EpochRecord(
                    "search", epoch, cfg.epochs,
                    metrics={"train": train, "arch": {"dsc": dsc}},
                    elapsed_s=time.perf_counter() - run_t0,
                    eta_s=(time.perf_counter() - run_t0) / (epoch + 1 - self.start_epoch) * (cfg.epochs - epoch - 1),
                    arch=self.model.arch_state(), genotype=genotype.to_dict(),
                )
                self.history.append(record.to_dict())
                self.persist(epoch + 1, genotype)
                self.cb.on_epoch(record)
                if self.genotype_is_stable(epoch):
                    stopped_early = True
                    break
            if self.clock.out_of_time() and self.history:  # the whole budget spent: a resume does not go on
                self.persist(len(self.history), Genotype.from_dict(self.history[-1]["genotype"]))
        finally:
            free_device_memory(self.device)
        genotype = Genotype.from_dict(self.history[-1]["genotype"]) if self.history else self.derived()
        described = self.data.describe()["dataset"]
        summary = {"genotype": genotype.to_dict(), "epochs_run": len(self.history), "stopped_early": stopped_early,
                   "stopped_by": ("genotype_stable" if stopped_early else
                                  "time_budget" if self.clock.out_of_time() else "epochs"),
                   "final_arch_dsc": next((h["metrics"]["arch"]["dsc"] for h in reversed(self.history)
                                           if h["metrics"]["arch"]["dsc"] is not None), None),
                   "seconds": self.clock.spent_s, "dataset": described,
                   "search_cases": sorted({*described["train_cases"], *described["held_out_cases"]}),
                   **self.genotype_cost(genotype)}
        atomic_write_text(self.out_dir / SUMMARY, json.dumps(summary, indent=2))
        return SearchResult(genotype, self.history, self.out_dir, len(self.history), stopped_early, summary)

    def derived(self) -> Genotype:
        """The genotype of the current architecture weights, within ``max_params`` when set."""
        genotype = self.model.genotype()
        if self.config.max_params is None:
            return genotype
        in_ch, classes = self.data.in_channels, self.data.num_classes

        def count(g: Genotype) -> int:
            with torch.device("meta"):  # shapes only: no memory, no initialisation
                return count_parameters(build_model({"genotype": g}, in_ch, classes, pad=False))

        return fit_params(genotype, {t: self.model.alphas[t.value].detach().cpu() for t in CellType},
                          {t: self.model.betas[t.value].detach().cpu() for t in CellType}, self.config.max_params,
                          count)

    def genotype_cost(self, genotype: Genotype) -> dict[str, Any]:
        """The found network's parameters and measured latency (batch 1, working size, this device),
        and the latency objective's table when the search used one."""
        net = build_model({"genotype": genotype}, self.data.in_channels, self.data.num_classes)
        cost: dict[str, Any] = {
            "genotype_params": count_parameters(net),
            "genotype_latency_ms": measure_network_ms(net, self.data.in_channels, self.data.frame.size, self.device),
            "latency_device": str(self.device)}
        if self.latency is not None:
            alphas = {t: self.model.alphas[t.value].detach().cpu() for t in CellType}
            cost["latency_objective"] = {**self.latency.describe(),
                                         "expected_ms": float(expected_latency(alphas, self.latency.costs,
                                                                               self.config.nodes))}
        return cost

    def persist(self, epochs_done: int, genotype: Genotype) -> None:
        path = save_checkpoint(self.state(epochs_done), self.out_dir / LAST)
        self.cb.on_checkpoint(path, "last")
        write_alpha_history(self.out_dir / ALPHAS, self.history)
        atomic_write_text(self.out_dir / GENOTYPE, json.dumps(genotype.to_dict(), indent=2))

    def genotype_is_stable(self, epoch: int) -> bool:
        patience = self.config.early_stop_patience
        if patience is None or epoch < self.config.warmup_epochs + patience:
            return False
        recent = [h["genotype"] for h in self.history[-(patience + 1):]]
        return len(recent) == patience + 1 and all(g == recent[0] for g in recent)


def write_alpha_history(path: Path, history: list[dict[str, Any]]) -> None:
    """One JSON line per epoch (rewritten whole, so a resumed run never duplicates an epoch)."""
    lines = [json.dumps({"epoch": h["epoch"], "genotype": h["genotype"], "metrics": h["metrics"], **h["arch"]})
             for h in history]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def run_search(data: str | Path | PreparedData, config: SearchConfig, out_dir: str | Path,
               callbacks: Callbacks | None = None, resume: bool = False, cache_dir: Path | None = None,
               data_format: str | None = None) -> SearchResult:
    """Search the Thrifty NAS space on a dataset folder; see the module docstring.

    With `resume`, continues from `out_dir/last.pt` when it exists (a finished search
    returns at once with its result).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prepared = data if isinstance(data, PreparedData) else prepare_search_data(
        Path(data), config, cache_dir=cache_dir, data_format=data_format)
    search = _Search(prepared, config, out_dir, callbacks or Callbacks(), cache_dir=cache_dir)
    if resume and (out_dir / LAST).exists():
        search.restore(out_dir / LAST)
    return search.run()
