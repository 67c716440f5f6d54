"""Jobs that cannot finish fail with a reason a person can act on, and the worker goes on.

One real worker process (solo pool: one job at a time) on the real Redis and PostgreSQL
is handed, in this order:

1. a retrain on a copy of the phantom dataset; once its first epoch is recorded, one of
   that dataset's label files is deleted. The running attempt has every slice in memory
   already, so it finishes; any later read of the dataset (a new job, or this job resumed
   on another worker) fails, naming the file (job 4).
2. a retrain of the U-Net with lr 9.9: the loss turns NaN within 3 epochs -> failed,
   "training diverged ... lower the learning rate (lr) ...".
3. a search whose estimated peak memory (``nas_core.memory``) exceeds what this machine has
   free -> failed before it starts, "needs ~N GiB of memory, this worker has M GiB free
   (host RAM): lower batch_size (now 512) or image_size (now 1024) ...". This is the
   out-of-memory case a CPU machine can show without running out of memory for real; the
   mapping of an allocation failure inside the engine (``torch.cuda.OutOfMemoryError``,
   ``MemoryError``, the CPU allocator's RuntimeError) to such a message is unit-tested
   below, with those exceptions raised by hand (simulated, not produced by an allocator).
4. a retrain on the dataset whose label file is gone -> failed, naming the case.
5. a normal search -> succeeded, on the same worker process.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from nas_core.config import RetrainConfig
from store.models import JobKind
from tests.integration.conftest import Services, wait_for
from tests.integration.faults_support import (
    RETRAIN,
    SEARCH,
    add_job,
    job_row,
    new_dataset,
    new_user,
    wait_finished,
)
from worker.dispatch import enqueue_job
from worker.failures import failure_message
from worker.plan import JobPlan

pytestmark = pytest.mark.integration

TIMEOUT_S = 150.0


def test_failing_jobs_fail_with_actionable_reasons_and_the_worker_goes_on(
        thrifty_env: Services, start_worker: Any, phantom_dataset: Path):
    sessions = thrifty_env.sessions
    user = new_user(sessions)
    copy = shutil.copytree(phantom_dataset, thrifty_env.data_root / f"phantom-doomed-{user.name}")
    doomed_ds = new_dataset(sessions, user.user_id, copy)
    good_ds = new_dataset(sessions, user.user_id, phantom_dataset)
    jobs = {
        "running": add_job(sessions, user.user_id, doomed_ds, "retrain", {**RETRAIN, "epochs": 3},
                           {"baseline": "unet"}),
        "diverging": add_job(sessions, user.user_id, good_ds, "retrain", {**RETRAIN, "epochs": 3, "lr": 9.9},
                             {"baseline": "unet"}),
        "too_big": add_job(sessions, user.user_id, good_ds, "search",
                           {**SEARCH, "image_size": 1024, "batch_size": 512}),
        "missing_file": add_job(sessions, user.user_id, doomed_ds, "retrain", RETRAIN, {"baseline": "unet"}),
        "normal": add_job(sessions, user.user_id, good_ds, "search", SEARCH),
    }
    worker = start_worker("faults-jobs")
    for job_id in jobs.values():
        enqueue_job(job_id, job_row(sessions, job_id).kind)

    # 1. delete a label file under the first job once it is training
    wait_for(lambda: job_row(sessions, jobs["running"]).epoch >= 1, TIMEOUT_S, "the first epoch of the first job",
             interval=0.1, on_timeout=worker.tail)
    label = copy / "labelsTr" / "phantom_003.nii.gz"
    label.unlink()

    done = {name: job for name, job in zip(jobs, wait_finished(sessions, list(jobs.values()), TIMEOUT_S, worker),
                                           strict=True)}
    summary = {name: (job.status, job.error) for name, job in done.items()}
    assert worker.process.poll() is None, f"the worker died\n{worker.tail()}"
    assert {job.worker_id for job in done.values()} == {done["normal"].worker_id}, "not one worker process"

    assert done["running"].status == "succeeded", summary  # its slices were read before the file went

    assert done["diverging"].status == "failed", summary
    assert "diverged" in done["diverging"].error and "lower the learning rate" in done["diverging"].error, summary

    too_big = done["too_big"]
    assert too_big.status == "failed" and too_big.epoch == 0, summary
    assert "of memory, this worker has" in too_big.error and "free (host RAM)" in too_big.error, summary
    assert "lower batch_size (now 512) or image_size (now 1024)" in too_big.error, summary
    assert "raise k (now 2)" in too_big.error, summary

    missing = done["missing_file"]
    assert missing.status == "failed", summary
    assert "phantom_003" in missing.error and "no label" in missing.error, summary

    assert done["normal"].status == "succeeded" and done["normal"].error is None, summary
    assert done["normal"].attempt == 1


@pytest.mark.parametrize(("raised", "expected"), [
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
     "out of GPU memory: lower batch_size (now 8) or image_size (now 256) and resubmit"),
    (MemoryError(), "out of host memory: lower batch_size (now 8) or image_size (now 256) and resubmit"),
    # the text PyTorch's CPU allocator raises (captured from torch 2.13 on Linux)
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                  "you tried to allocate 10000000000000 bytes. Error code 12 (Cannot allocate memory)"),
     "out of host memory: lower batch_size (now 8) or image_size (now 256) and resubmit"),
])
def test_an_allocation_failure_inside_the_engine_names_the_knobs(raised: BaseException, expected: str,
                                                                 tmp_path: Path):
    """SIMULATED: the exceptions are built by hand (no allocator ran out); what is tested is that
    the runner turns each into a message a person can act on, not an "internal error"."""
    plan = JobPlan(job_id="job_x", owner_id="u", kind=JobKind.RETRAIN,
                   dataset_id="d", data_path=tmp_path, data_format=None,
                   config=RetrainConfig(image_size=256, batch_size=8), architecture={"baseline": "unet"},
                   out_dir=tmp_path, cache_dir=tmp_path)
    assert failure_message(raised, plan) == expected


def test_the_cpu_allocators_error_is_what_the_runner_recognises():
    """Not simulated: a real allocation PyTorch refuses at once (far beyond RAM + swap, so the
    kernel's overcommit check fails it before a page is touched)."""
    with pytest.raises(Exception) as caught:  # noqa: B017 - whatever type this PyTorch raises
        torch.empty(10**15, dtype=torch.uint8)
    assert failure_message(caught.value, None) == "out of host memory; lower batch_size or image_size and resubmit"
