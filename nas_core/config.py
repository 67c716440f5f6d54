"""Typed, frozen run configurations: the only knobs the engines read.

The core never reads argparse or the environment; the CLI and the service build these
from their own inputs. `from_dict` refuses unknown keys so a typo is an error, not a
silently ignored option.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any, Self


class ConfigError(ValueError):
    """A configuration value is out of range; `errors` maps field -> reason."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


class _Config:
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Self:
        data = dict(data or {})
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError({k: f"unknown option; known: {sorted(known)}" for k in unknown})
        for key in ("arch_betas", "ct_window", "val_cases", "test_cases"):
            if key in data and isinstance(data[key], list):
                data[key] = tuple(data[key])
        return cls(**data)

    def _check(self, rules: dict[str, tuple[bool, str]]) -> None:
        errors = {name: msg for name, (ok, msg) in rules.items() if not ok}
        if errors:
            raise ConfigError(errors)


SEED_MAX = 2**32 - 1
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:[0-9]{1,3})?)$")  # at most cuda:999
MAX_STEPS_PER_EPOCH = 1_000_000
AUGMENTATIONS = ("none", "basic", "nnunet")
OPTIMIZER_NAMES = ("adam", "adamw", "sgd")  # nas_core.optim.OPTIMIZERS (this module stays torch-free)
MAX_BUDGET_MINUTES = 7 * 24 * 60


def _common_rules(c: Any) -> dict[str, tuple[bool, str]]:
    return {
        "seed": (0 <= c.seed <= SEED_MAX, f"must be between 0 and {SEED_MAX}, got {c.seed}"),
        "epochs": (1 <= c.epochs <= 10_000, f"must be between 1 and 10000, got {c.epochs}"),
        "image_size": (c.image_size is None or 16 <= c.image_size <= 1024,
                       f"must be between 16 and 1024 pixels or null (the dataset's plan), got {c.image_size}"),
        "batch_size": (1 <= c.batch_size <= 512, f"must be between 1 and 512, got {c.batch_size}"),
        "device": (bool(DEVICE_PATTERN.match(c.device)), f"must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {c.device!r}"),
        "num_workers": (0 <= c.num_workers <= 64, f"must be between 0 and 64, got {c.num_workers}"),
        "cpu_threads": (1 <= c.cpu_threads <= 256, f"must be between 1 and 256, got {c.cpu_threads}"),
        "steps_per_epoch": (c.steps_per_epoch is None or 1 <= c.steps_per_epoch <= MAX_STEPS_PER_EPOCH,
                            f"must be between 1 and {MAX_STEPS_PER_EPOCH} or null, got {c.steps_per_epoch}"),
        "time_budget_minutes": (c.time_budget_minutes is None or 0 < c.time_budget_minutes <= MAX_BUDGET_MINUTES,
                                f"must be in (0, {MAX_BUDGET_MINUTES}] minutes or null, got {c.time_budget_minutes}"),
        "augmentation": (c.augmentation in AUGMENTATIONS,
                         f"must be one of {list(AUGMENTATIONS)}, got {c.augmentation!r}"),
        "foreground_oversampling": (0 <= c.foreground_oversampling <= 1,
                                    f"must be in [0, 1], got {c.foreground_oversampling}"),
        "val_cases": (_case_list_ok(c.val_cases), "must be a list of distinct, non-empty case ids or null"),
        "test_cases": (_case_list_ok(c.test_cases), "must be a list of distinct, non-empty case ids or null"),
    }


def _case_list_ok(cases: tuple[str, ...] | None) -> bool:
    return cases is None or (len(set(cases)) == len(cases) <= 100_000
                             and all(isinstance(c, str) and 0 < len(c) <= 200 for c in cases))


@dataclass(frozen=True)
class SearchConfig(_Config):
    """PC-DARTS search recipe (DESIGN.md section 2): first-order bilevel optimisation."""

    epochs: int = 50
    warmup_epochs: int = 15
    # Side S of a square working frame; None: the plan of the training cases (median spacing,
    # aspect ratio kept, at most 256x256 pixels).
    image_size: int | None = None
    batch_size: int = 8
    channels: int = 32
    nodes: int = 2
    depth: int = 4
    k: int = 4
    seed: int = 0
    w_lr: float = 0.025
    w_lr_min: float = 1e-3
    w_momentum: float = 0.9
    w_weight_decay: float = 3e-4
    grad_clip: float = 5.0
    arch_lr: float = 6e-4
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 1e-3
    early_stop_patience: int | None = None
    augmentation: str = "none"  # of the weight half's batches: none, basic or nnunet (as the retrain's)
    # Latency-aware search (nas_core.latency): weight of E[latency] / target in the architecture loss
    # (0: off); the target defaults to the expected latency of uniform architecture weights.
    latency_weight: float = 0.0
    latency_target_ms: float | None = None
    # Where the latency table is measured: the width and square frame side the found network will
    # run at (the retrain's, when it differs from the search's); None: the search's own.
    latency_channels: int | None = None
    latency_image_size: int | None = None
    # Parameter budget the derived genotype must respect (ops swapped for cheaper ones; None: any).
    max_params: int | None = None
    # Score the architecture half every N epochs (and at the end); the genotype is recorded every epoch.
    eval_every: int = 1
    val_fraction: float = 0.2
    deep_supervision: bool = False
    steps_per_epoch: int | None = None
    device: str = "auto"
    amp: bool = True
    num_workers: int = 0
    cpu_threads: int = 1
    # Share of each training batch drawn from slices that show foreground (nnU-Net: a third).
    foreground_oversampling: float = 0.33
    # Stop at this wall-clock budget (training and validation, over resumes); the learning-rate
    # schedule is laid over whichever of epochs and budget ends first.
    time_budget_minutes: float | None = None
    # Explicit case roles: validation cases choose the best epoch, test cases are only reported.
    val_cases: tuple[str, ...] | None = None
    test_cases: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        self._check({
            **_common_rules(self),
            # May reach epochs (a search that only trains weights), never far beyond the epoch range.
            "warmup_epochs": (0 <= self.warmup_epochs <= 10_000,
                              f"must be between 0 and 10000, got {self.warmup_epochs}"),
            "channels": (4 <= self.channels <= 256, f"must be between 4 and 256, got {self.channels}"),
            "nodes": (1 <= self.nodes <= 6, f"must be between 1 and 6, got {self.nodes}"),
            "depth": (1 <= self.depth <= 6, f"must be between 1 and 6, got {self.depth}"),
            "k": (self.k >= 1 and self.channels % self.k == 0,
                  f"must be >= 1 and divide channels={self.channels}, got {self.k}"),
            "w_lr": (0 < self.w_lr < 10, f"must be in (0, 10), got {self.w_lr}"),
            "w_lr_min": (0 <= self.w_lr_min <= self.w_lr, f"must be in [0, w_lr={self.w_lr}], got {self.w_lr_min}"),
            "w_momentum": (0 <= self.w_momentum < 1, f"must be in [0, 1), got {self.w_momentum}"),
            "w_weight_decay": (0 <= self.w_weight_decay < 1, f"must be in [0, 1), got {self.w_weight_decay}"),
            "arch_weight_decay": (0 <= self.arch_weight_decay < 1,
                                  f"must be in [0, 1), got {self.arch_weight_decay}"),
            "arch_betas": (len(self.arch_betas) == 2 and all(0 <= b < 1 for b in self.arch_betas),
                           f"must be two numbers in [0, 1), got {list(self.arch_betas)}"),
            "arch_lr": (0 <= self.arch_lr < 1, f"must be in [0, 1), got {self.arch_lr}"),
            "grad_clip": (0 < self.grad_clip <= 1e6, f"must be in (0, 1e6], got {self.grad_clip}"),
            "val_fraction": (0 <= self.val_fraction < 1, f"must be in [0, 1), got {self.val_fraction}"),
            "max_params": (self.max_params is None or 1_000 <= self.max_params <= 10**9,
                           f"must be between 1000 and 1e9 or null, got {self.max_params}"),
            "latency_weight": (0 <= self.latency_weight <= 100, f"must be in [0, 100], got {self.latency_weight}"),
            "latency_target_ms": (self.latency_target_ms is None or 0 < self.latency_target_ms <= 1e7,
                                  f"must be in (0, 1e7] ms or null, got {self.latency_target_ms}"),
            "latency_channels": (self.latency_channels is None or 4 <= self.latency_channels <= 256,
                                 f"must be between 4 and 256 or null, got {self.latency_channels}"),
            "latency_image_size": (self.latency_image_size is None or 16 <= self.latency_image_size <= 2048,
                                   f"must be between 16 and 2048 or null, got {self.latency_image_size}"),
            "eval_every": (1 <= self.eval_every <= 10_000, f"must be between 1 and 10000, got {self.eval_every}"),
            "early_stop_patience": (self.early_stop_patience is None or 1 <= self.early_stop_patience <= 10_000,
                                    f"must be between 1 and 10000 or null, got {self.early_stop_patience}"),
        })


@dataclass(frozen=True)
class RetrainConfig(_Config):
    """Retraining from scratch: Adam + cosine, CE + Dice, augmentation, val every epoch."""

    epochs: int = 100
    # Side S of a square working frame; None: the plan of the training cases (median spacing,
    # aspect ratio kept, at most 256x256 pixels).
    image_size: int | None = None
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 5e-4
    optimizer: str = "adam"  # adam, adamw (decoupled decay, none on norms/biases) or sgd (nnU-Net's)
    # Width C of a genotype at retrain (None: the genotype's own): search narrow, train wider.
    channels: int | None = None
    seed: int = 0
    val_fraction: float = 0.2
    augmentation: str = "basic"  # basic: the flip/affine/elastic flags; nnunet: nnU-Net's 2D pipeline; none
    flip: bool = True
    affine: bool = True
    elastic: bool = False
    deep_supervision: bool = False
    steps_per_epoch: int | None = None
    device: str = "auto"
    amp: bool = True
    num_workers: int = 0
    cpu_threads: int = 1
    # Share of each training batch drawn from slices that show foreground (nnU-Net: a third).
    foreground_oversampling: float = 0.33
    # Stop at this wall-clock budget (training and validation, over resumes); the learning-rate
    # schedule is laid over whichever of epochs and budget ends first.
    time_budget_minutes: float | None = None
    # Explicit case roles: validation cases choose the best epoch, test cases are only reported.
    val_cases: tuple[str, ...] | None = None
    test_cases: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        self._check({
            **_common_rules(self),
            "lr": (0 < self.lr < 10, f"must be in (0, 10), got {self.lr}"),
            "optimizer": (self.optimizer in OPTIMIZER_NAMES, f"must be one of {list(OPTIMIZER_NAMES)}, "
                                                             f"got {self.optimizer!r}"),
            "channels": (self.channels is None or 4 <= self.channels <= 256,
                         f"must be between 4 and 256 or null, got {self.channels}"),
            "weight_decay": (0 <= self.weight_decay < 1, f"must be in [0, 1), got {self.weight_decay}"),
            "val_fraction": (0 < self.val_fraction < 1, f"must be in (0, 1), got {self.val_fraction}"),
        })
