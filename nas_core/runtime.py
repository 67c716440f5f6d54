"""Device, precision and reproducibility helpers shared by the engines."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when available, else CPU; a missing CUDA device is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was requested but CUDA is not available; use device='cpu'")
    return device


def configure_backend(device: torch.device, cpu_threads: int = 1) -> None:
    """cudnn autotuning on CUDA (input sizes are fixed within a run); on CPU, a fixed number
    of intra-op threads: the supernet's many small ops gain little from more threads and
    slow down 10-30x when a busy machine makes OpenMP threads wait for cores (measured)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    else:
        torch.set_num_threads(cpu_threads)


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when AMP is on (no loss scaler needed); a no-op on CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A generator fixed by (seed, epoch, stream): shuffling and augmentation of an epoch
    do not depend on what ran before, so a resumed run sees the same batches."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 101 + stream)


def batches(n: int, batch_size: int, generator: torch.Generator | None, drop_last: bool) -> Iterator[list[int]]:
    order = torch.randperm(n, generator=generator).tolist() if generator is not None else list(range(n))
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for i in range(0, stop, batch_size):
        yield order[i : i + batch_size]


def free_device_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
