"""Before a job runs: will it fit the memory of the device this worker gives it?

``check_fits(plan)`` estimates the job's peak memory from its configuration
(``nas_core.memory``) and compares it with what the device has free now: on a GPU
``torch.cuda.mem_get_info``; on CPU the host's ``MemAvailable`` (``/proc/meminfo``),
or less when the worker's cgroup (a container's memory limit) leaves less. A job that
cannot fit is rejected (``JobRejected``: the job fails at once) with a message naming
the knobs to turn, e.g. ``the search needs ~12.3 GiB of memory, this worker has 8.0 GiB
free (GPU cuda:0): lower batch_size (now 32) or image_size (now 512), ...``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from nas_core import memory
from nas_core.data import open_dataset
from nas_core.runtime import resolve_device
from worker.plan import JobPlan, JobRejected

log = logging.getLogger(__name__)

MEMINFO = Path("/proc/meminfo")
CGROUP = Path("/sys/fs/cgroup")


def _cgroup_free() -> int | None:
    """Bytes this process's cgroup (v2) may still use, or None without a limit."""
    try:
        limit = (CGROUP / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(int(limit) - int((CGROUP / "memory.current").read_text().strip()), 0)
    except (OSError, ValueError):
        return None


def host_available_bytes() -> int | None:
    """Host RAM a new job can use now (``MemAvailable``, capped by the cgroup), or None if unknown."""
    available = None
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    cgroup = _cgroup_free()
    if cgroup is not None:
        available = cgroup if available is None else min(available, cgroup)
    return available


def device_free_bytes(device_name: str) -> tuple[int | None, str]:
    """(bytes free, which memory) on the device a job configured with ``device_name`` runs on."""
    device = resolve_device(device_name)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        free, _total = torch.cuda.mem_get_info(index)
        return free, f"GPU cuda:{index}"
    return host_available_bytes(), "host RAM"


def check_fits(plan: JobPlan) -> int | None:
    """Raise ``JobRejected`` if the job cannot fit its device's free memory; return the estimate
    (None when it cannot be made, e.g. the dataset cannot be opened: the engine then says why)."""
    try:
        spec = open_dataset(plan.data_path, format=plan.data_format)
        needed = memory.estimate_peak_bytes(plan.kind.value, plan.config, max(len(spec.channel_names), 1),
                                            spec.num_classes, architecture=plan.architecture)
        free, where = device_free_bytes(plan.config.device)
    except Exception as exc:  # the engine reports a bad dataset or architecture itself; a guess never fails a job
        log.warning("job %s: its memory could not be estimated (%s: %s); it runs unchecked", plan.job_id,
                    exc.__class__.__name__, exc)
        return None
    log.info("job %s needs ~%s of memory (estimated); %s has %s free", plan.job_id, memory.gib(needed), where,
             "an unknown amount" if free is None else memory.gib(free))
    if free is not None and needed > free:
        raise JobRejected(memory.too_big_message(plan.kind.value, plan.config, needed,
                                                 f"this worker has {memory.gib(free)} free ({where})"))
    return needed
