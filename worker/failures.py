"""Which failures a person can fix, and the message that tells them how.

A failure with a message here ends the job as ``failed`` with that message; any other
error is a bug or an outage: it is logged with its traceback and the job is retried.
"""

from __future__ import annotations

import torch

from nas_core.callbacks import TrainingDiverged
from nas_core.checkpoint import CheckpointError
from nas_core.config import ConfigError
from nas_core.data import DatasetError
from nas_core.genotype import InvalidGenotype
from nas_core.models import InvalidArchitecture
from nas_core.ops import UnknownOp
from store.models import JobKind
from worker.plan import JobPlan, JobRejected


def out_of_memory(exc: BaseException) -> str | None:
    """'GPU' or 'host' if ``exc`` says an allocation failed, else None.

    PyTorch's CPU allocator raises a plain RuntimeError ("DefaultCPUAllocator: can't
    allocate memory"), not MemoryError; CUDA raises ``torch.cuda.OutOfMemoryError``.
    """
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return "host" if "CPUAllocator" in str(exc) else "GPU"
    if isinstance(exc, MemoryError):
        return "host"
    if isinstance(exc, RuntimeError) and any(m in str(exc) for m in CPU_OOM_MARKERS):
        return "host"
    return None


CPU_OOM_MARKERS = ("DefaultCPUAllocator: can't allocate memory", "DefaultCPUAllocator: not enough memory")


def failure_message(exc: BaseException, plan: JobPlan | None) -> str | None:
    """A reason a person can act on, or None for an error we did not foresee."""
    where = out_of_memory(exc)
    if where is not None:
        if plan is None:
            return f"out of {where} memory; lower batch_size or image_size and resubmit"
        cfg = plan.config
        knobs = f"batch_size (now {cfg.batch_size}) or image_size (now {cfg.image_size})"
        if plan.kind is JobKind.SEARCH:
            knobs += f", or channels (now {cfg.channels})"
        return f"out of {where} memory: lower {knobs} and resubmit"
    if isinstance(exc, FileNotFoundError):
        missing = exc.filename or str(exc)
        return f"a file the job needs is missing: {missing}; restore it (or register the dataset again) and resubmit"
    if isinstance(exc, DatasetError):
        return f"the dataset cannot be used: {exc}"
    if isinstance(exc, ConfigError):
        return f"invalid configuration: {exc}"
    if isinstance(exc, InvalidGenotype | InvalidArchitecture | UnknownOp):
        return f"invalid architecture: {exc}"
    if isinstance(exc, TrainingDiverged | JobRejected | CheckpointError):
        return str(exc)
    return None
