"""How much memory a training job will need at its peak, estimated from its configuration.

Used before a job runs (the API refuses a submit above ``THRIFTY_MAX_JOB_MEMORY_BYTES``,
a worker refuses a job its device cannot hold) so that a job that cannot fit fails in a
second with a message naming the knob to turn, not after minutes with an out-of-memory
error (or a machine that swaps).

The model, calibrated once per network shape (cached):

* **State**: parameters + their gradients + the optimiser's state (Adam: 2 slots per
  parameter; the search's SGD with momentum: 1 slot, Adam on the few architecture weights).
* **Training step**: the network and its loss run once, forward only, on CPU at a small size
  (``CALIBRATION_SIZE``, batch 2) under ``torch.autograd.graph.saved_tensors_hooks``; the
  bytes of every distinct tensor autograd saves for backward (parameters excluded) give
  the activation bytes per sample and pixel. They scale exactly with batch x (padded
  size)^2: every activation of these fully convolutional networks is a feature map. The
  backward pass holds gradients of activations on top: ``TRAIN_FACTOR`` (fitted).
* **Evaluation** (no gradients, batches of ``nas_core.loop.eval_batch_size`` slices): the peak of the live
  tensor bytes of a no-gradient forward, counted by a dispatch mode at the same small size,
  scaled the same way, times ``EVAL_FACTOR`` (allocator slack, convolution buffers).
  The allocators keep much of the training step's memory while evaluation runs, so the
  two add up (conservative, measured on CPU).
* **A retrain's end** reads its best and final checkpoints back (weights and optimiser
  state, twice) while the model and its optimiser are still alive.
* A fixed ``OVERHEAD_BYTES`` for the batch being loaded, the loss, the metrics.

Not included: the process itself (the PyTorch runtime, ~0.3-0.5 GB of host RAM, a CUDA
context ~0.5 GB), the dataset's slices kept in host memory (they depend on the number of
cases and slices, not on the configuration), the cases stacked whole for evaluation, and
AMP: the estimate is for float32 activations, so with bf16 autocast on a GPU it errs on
the safe side. Calibrated and validated on CPU only (peak RSS); the GPU path (the same
bytes against ``torch.cuda.mem_get_info``) has not been measured on a GPU.

Accuracy (peak RSS of real runs on CPU minus the process before them; searches, retrains of
the default genotype, the U-Net and the U-Net++ at 64-256 px, batch 1-8): the estimate
was 0.75x to 1.75x the measured peak over ten configurations (median ~1.0; the table is
in the README's Reliability section); ``tests/integration/test_faults_memory.py`` checks
three of them stay within 0.6x..2x.
"""

from __future__ import annotations

import json
import math
import warnings
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from nas_core.config import RetrainConfig, SearchConfig
from nas_core.data.fingerprint import PLAN_MAX_PIXELS
from nas_core.loop import eval_batch_size

GIB = 1024**3
CALIBRATION_SIZE = 32  # pixels (raised to two multiples of the network's size multiple)
# Fitted to measured peaks on CPU (tests/integration/test_faults_memory.py):
TRAIN_FACTOR = {"retrain": 1.5, "search": 2.0}  # peak of a training step / bytes saved for backward
EVAL_FACTOR = 1.3  # measured peak of an evaluation batch / the live tensor bytes counted
OVERHEAD_BYTES = 128 * 1024**2  # the batch, the loss and metrics, allocator slack (fitted on CPU)


@dataclass(frozen=True)
class Profile:
    """What one network shape costs: bytes of its parameters, bytes per sample and pixel."""

    kind: str
    param_bytes: int
    optimizer_slots: float  # the optimiser's state, in copies of the parameters
    saved_per_pixel: float  # bytes autograd saves for backward, per sample and (padded) pixel
    eval_per_pixel: float  # peak bytes alive in a forward without gradients, per sample and pixel
    size_multiple: int


@dataclass(frozen=True)
class MemoryEstimate:
    total: int  # the peak: state + max(training + evaluation, checkpoints) + OVERHEAD_BYTES
    state: int  # parameters, gradients and the optimiser's state, for the whole run
    training: int  # one training step's activations (and their gradients)
    evaluation: int  # one evaluation batch (nas_core.loop.eval_batch_size slices)
    checkpoints: int  # a retrain's end: its best and final checkpoints read back

def gib(nbytes: float) -> str:
    return f"{nbytes / GIB:.1f} GiB" if nbytes >= GIB / 10 else f"{nbytes / 1024**2:.0f} MiB"


def _typed(kind: str, config: Any) -> SearchConfig | RetrainConfig:
    if isinstance(config, SearchConfig | RetrainConfig):
        return config
    return SearchConfig.from_dict(config) if kind == "search" else RetrainConfig.from_dict(config)


def _plain(value: Any) -> Any:
    return value.to_dict() if hasattr(value, "to_dict") else str(value)


def _build(kind: str, shape: tuple[Any, ...], in_channels: int, num_classes: int) -> tuple[torch.nn.Module, float]:
    """The network (on CPU) and its optimiser's state in parameter copies."""
    from nas_core.models import build_model

    if kind == "search":
        from nas_core.supernet import SearchNetwork

        channels, depth, nodes, k, deep = shape
        net = SearchNetwork(in_channels, num_classes, channels=channels, depth=depth, nodes=nodes, k=k,
                            deep_supervision=deep)
        return net, 1.0  # SGD momentum on the weights (Adam on the architecture weights is negligible)
    architecture, deep = shape
    return build_model(json.loads(architecture), in_channels, num_classes, deep_supervision=deep), 2.0  # Adam


class _LiveBytes(TorchDispatchMode):
    """The peak of the bytes held by tensors that the operators run under it create.

    Only right without autograd (no_grad): tensors that autograd saves are kept alive by
    C++ references that a Python weak reference does not see.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._sizes: dict[int, int] = {}

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                if storage._cdata not in self._sizes:
                    self._sizes[storage._cdata] = storage.nbytes()
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(tensor, self._free, storage._cdata)
        return out


@lru_cache(maxsize=64)
def _profile(kind: str, shape: tuple[Any, ...], in_channels: int, num_classes: int) -> Profile:
    from nas_core.losses import DiceCELoss
    from nas_core.models import size_multiple

    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():  # leaves the global RNG as it was
        warnings.simplefilter("ignore")
        model, slots = _build(kind, shape, in_channels, num_classes)
        multiple = getattr(model, "multiple", None) or size_multiple(model)  # PadToMultiple's, else 2**depth
        size = math.ceil(max(CALIBRATION_SIZE, 2 * multiple) / multiple) * multiple
        pixels = 2 * size * size  # batch 2: batch norm needs two values per channel at the coarsest level
        x = torch.randn(2, in_channels, size, size)
        y = torch.randint(0, num_classes, (2, size, size))
        params = {p.untyped_storage()._cdata for p in model.parameters()}
        saved: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            if storage._cdata not in params:
                saved[storage._cdata] = storage.nbytes()
            return t

        model.train()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(x)
            DiceCELoss(num_classes)(out if isinstance(out, torch.Tensor) else out[0], y)
        del out
        model.eval()
        with torch.no_grad(), _LiveBytes() as live:
            model(x).argmax(1)
        param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return Profile(kind, param_bytes, slots, sum(saved.values()) / pixels, live.peak / pixels, multiple)


def profile_of(kind: str, config: Any, in_channels: int, num_classes: int,
               architecture: Mapping[str, Any] | None = None) -> Profile:
    """The calibrated cost of the network a job with ``config`` trains (cached per network shape)."""
    cfg = _typed(kind, config)
    if isinstance(cfg, SearchConfig):
        shape: tuple[Any, ...] = (cfg.channels, cfg.depth, cfg.nodes, cfg.k, cfg.deep_supervision)
    else:
        if architecture is None:
            from nas_core.models import default_genotype

            architecture = {"genotype": default_genotype().to_dict()}
        spec = {k: v for k, v in architecture.items() if k in ("genotype", "baseline")}
        shape = (json.dumps(spec, sort_keys=True, default=_plain), cfg.deep_supervision)
    return _profile(kind, shape, in_channels, max(num_classes, 2))


def estimate(kind: str, config: Any, in_channels: int, num_classes: int,
             architecture: Mapping[str, Any] | None = None) -> MemoryEstimate:
    """:func:`estimate_peak_bytes` with its parts."""
    if kind not in TRAIN_FACTOR:
        raise ValueError(f"kind must be one of {sorted(TRAIN_FACTOR)}, got {kind!r}")
    cfg = _typed(kind, config)
    prof = profile_of(kind, cfg, in_channels, num_classes, architecture)
    if cfg.image_size is None:  # the dataset's plan: its frame holds at most this many pixels
        side = math.sqrt(PLAN_MAX_PIXELS)
    else:
        side = cfg.image_size
    padded = math.ceil(side / prof.size_multiple) * prof.size_multiple
    pixels = padded * padded
    state = int(prof.param_bytes * (2 + prof.optimizer_slots))  # weights, gradients, optimiser state
    training = int(TRAIN_FACTOR[kind] * prof.saved_per_pixel * pixels * cfg.batch_size)
    evaluation = int(EVAL_FACTOR * prof.eval_per_pixel * pixels * eval_batch_size(padded, padded))
    # retrain's end (nas_core.retrain: finish) reads best.pt and final.pt: weights and optimiser state, twice
    checkpoints = int(2 * prof.param_bytes * (1 + prof.optimizer_slots)) if kind == "retrain" else 0
    # Host and GPU allocators keep much of a training step's memory cached while evaluation runs
    # (measured on CPU: the peak is near the sum), so the two add up.
    total = state + max(training + evaluation, checkpoints) + OVERHEAD_BYTES
    return MemoryEstimate(total, state, training, evaluation, checkpoints)


def estimate_peak_bytes(kind: str, config: Any, in_channels: int, num_classes: int,
                        architecture: Mapping[str, Any] | None = None) -> int:
    """Peak bytes a ``kind`` ('search' or 'retrain') job with ``config`` (a config object or
    its dict) needs on its device, without the runtime and the dataset (see the module doc).

    ``architecture``: a retrain's spec (``{"genotype": ...}`` or ``{"baseline": ...}``;
    default: the project's default genotype). The first call for a network shape builds
    it on CPU and runs it once at 32x32 (well under a second); later calls are cached.
    """
    return estimate(kind, config, in_channels, num_classes, architecture).total


def knobs(kind: str, config: Any) -> str:
    """What to turn to need less memory, with the current values."""
    cfg = _typed(kind, config)
    size = "the plan's" if cfg.image_size is None else cfg.image_size
    text = f"lower batch_size (now {cfg.batch_size}) or image_size (now {size})"
    if isinstance(cfg, SearchConfig):
        text += f", or channels (now {cfg.channels}), or raise k (now {cfg.k})"
    return text


def too_big_message(kind: str, config: Any, needed: int, limit: str) -> str:
    """``the search needs ~12.3 GiB of memory, this worker has 8.0 GiB free: lower batch_size (now 32) ...``

    ``limit``: what it does not fit, e.g. ``this worker has 8.0 GiB free``.
    """
    return f"the {kind} needs ~{gib(needed)} of memory, {limit}: {knobs(kind, config)} and resubmit"
