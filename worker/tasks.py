"""The Celery tasks, thin, by id, handing off to domain code in a line or two; and the worker
process's hooks.

``run_job`` runs on the ``gpu`` queue. Workers use the solo pool (``thrifty-nas worker``
starts them so): the job then runs in the worker's own, non-daemonic main process, where
PyTorch DataLoader workers can start (a prefork pool child is daemonic and may not have
children), CUDA is initialised in the process that uses it (never forked), and one
worker process holds exactly one GPU job at a time.

Every worker process imports this module (``worker.app``'s ``imports``) before it is ready, so
the hooks are connected here, beside the runner and reaper they call, and ``worker.app`` stays
below both: when the worker is ready it starts its reaper thread (no beat process) and the
parent watch; when it begins a warm shutdown the running job stops at its next step and goes
back to the queue.
"""

from __future__ import annotations

import os
from typing import Any

from celery import current_task, signals
from celery.exceptions import Reject

from worker import runner
from worker.app import Queue, task, watch_parent
from worker.reaper import Reaper, start_reaper


def _worker_id() -> str:
    hostname = getattr(current_task.request, "hostname", None) if current_task else None
    return f"{hostname}:{os.getpid()}" if hostname else runner.default_worker_id()


@task("run_job", Queue.GPU)
def run_job(job_id: str) -> str:
    """Claim and run a search or retrain; a duplicate message does nothing."""
    if runner.shutting_down():  # taken during a warm shutdown: put it back for another worker
        raise Reject("this worker is shutting down", requeue=True)
    return runner.run_job(job_id, worker_id=_worker_id()).value


@task("reap", Queue.CONTROL)
def reap() -> dict[str, Any]:
    """One reaper sweep on demand (each worker also sweeps on its own, periodically)."""
    return Reaper().sweep()._asdict()


@signals.worker_ready.connect(weak=False, dispatch_uid="thrifty-reaper-start")
def _start_worker_reaper(sender: Any = None, **_: Any) -> None:
    start_reaper()
    watch_parent()


@signals.worker_shutting_down.connect(weak=False, dispatch_uid="thrifty-shutdown")
def _on_worker_shutdown(sender: Any = None, how: str = "", **_: Any) -> None:
    runner.request_shutdown(f"worker {sender} is shutting down ({how})")
