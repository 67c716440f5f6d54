"""Run one job: claim it, run its engine with store callbacks, publish the results or the failure.

The task in ``worker.tasks`` hands off here in one line. The flow:

1. ``claim_job`` (conditional): a duplicate message, or a job another worker holds, does nothing.
2. Resolve the job (``worker.plan``) and run the engine with ``resume=True`` in
   ``{artifact_dir}/work/{job_id}``: a re-queued job continues from its last epoch checkpoint.
   A lease keeper thread renews the lease meanwhile.
3. Success: copy the outputs into the artefact store (a retrain's model also packaged as
   ``bundle.zip`` and ``model.onnx``; packaging never fails the job), then in one transaction
   mark the job succeeded and write its artefact rows, epoch history, genotype and per-case DSC.
   With ``THRIFTY_MLFLOW_TRACKING_URI`` set, a ``worker.tracking.JobTracker`` also logs the job
   to MLflow (one run per job); MLflow failing never changes the job's outcome.
4. Stop: cancelled -> ``cancelled``; lease lost -> nothing (the job is someone else's now);
   this worker shutting down -> the job is handed back to the queue at once (no attempt spent).
5. A failure a person can fix -> ``failed`` with a message saying what to change (the
   traceback goes to the log). Before the engine starts, a job whose estimated peak memory
   (``nas_core.memory``) exceeds what its device has free fails at once, naming the knobs.
6. The database unreachable: progress and epoch writes are skipped (the history is
   written in full at the end), the lease keeper keeps trying; the claim, the plan and
   the final state change are retried with backoff (``worker.retry``) for minutes. A
   database error that outlasts them is re-raised: the job keeps its lease until it
   expires, and the reaper re-queues it (it resumes from its last checkpoint).
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import socket
import threading
from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from nas_core.callbacks import Callbacks, StopRequested
from nas_core.retrain import run_retrain
from nas_core.search import run_search
from store.artifacts import ArtifactStore
from store.db import get_sessionmaker, session_scope
from store.jobs import claim_job, finish_job, release_job
from store.models import Job, JobKind, JobStatus
from store.settings import Settings, get_settings
from worker import dispatch
from worker.callbacks import Chain, JobControl, LeaseKeeper, StopReason, StoreCallbacks
from worker.failures import failure_message
from worker.joblog import job_log, register_log
from worker.memory import check_fits
from worker.plan import JobPlan, JobRejected, plan_job, work_dir
from worker.results import copy_outputs, package_model, publish
from worker.retry import retry_db
from worker.tracking import JobTracker

log = logging.getLogger(__name__)

_shutdown = threading.Event()


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # not claimed: a duplicate message, or the job is not queued
    LOST = "lost"  # the lease was lost mid-run: the job belongs to another attempt now
    HANDED_BACK = "handed_back"  # this worker is shutting down: the job was re-queued


class _NoLongerOurs(Exception):
    pass


def request_shutdown(reason: str) -> None:
    """Make the running job (if any) stop at its next step and go back to the queue."""
    log.info("%s: the running job stops at its next step and is re-queued", reason)
    _shutdown.set()


def shutting_down() -> bool:
    return _shutdown.is_set()


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def release_device_memory() -> None:
    """Free cached GPU memory once the run's tensors are unreachable."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def run_job(
    job_id: str,
    *,
    worker_id: str | None = None,
    settings: Settings | None = None,
    sessions: sessionmaker[Session] | None = None,
    enqueue: Callable[[str, str], None] | None = None,
    observers: Sequence[Callbacks] = (),
    shutdown: threading.Event | None = None,
    progress_every: float = 2.0,
) -> Outcome:
    """Claim and run job ``job_id``; return what became of it. See the module docstring."""
    settings = settings or get_settings()
    sessions = sessions or get_sessionmaker()
    worker_id = worker_id or default_worker_id()

    def claim() -> bool:
        with session_scope(sessions) as session:
            return claim_job(session, job_id, worker_id, settings.lease_seconds)

    claimed = retry_db(f"job {job_id}: claiming it", claim)
    if not claimed:
        log.info("job %s not claimed by %s: not queued (a duplicate message or another worker's)", job_id, worker_id)
        return Outcome.SKIPPED
    control = JobControl(job_id, worker_id, sessions, shutdown or _shutdown)
    store = ArtifactStore(settings.artifact_dir)
    try:
        with LeaseKeeper(control, settings.lease_seconds), job_log(store, job_id), \
                JobTracker(settings, job_id) as tracker:
            outcome = _run_claimed(control, settings, tracker, observers, progress_every, enqueue)
            tracker.end(outcome)
            return outcome
    finally:
        release_device_memory()
        try:
            register_log(store, sessions, job_id)
        except Exception as exc:  # the log is a convenience: never let it change the job's outcome
            log.warning("job %s: could not register its log (%s: %s)", job_id, exc.__class__.__name__, exc)


def _run_claimed(control: JobControl, settings: Settings, tracker: JobTracker, observers: Sequence[Callbacks],
                 progress_every: float, enqueue: Callable[[str, str], None] | None) -> Outcome:
    job_id, sessions = control.job_id, control.sessions
    plan: JobPlan | None = None
    try:
        def load_plan() -> JobPlan:
            with session_scope(sessions) as session:
                job = session.get(Job, job_id)
                if job is None:
                    raise JobRejected(f"job {job_id} no longer exists")
                return plan_job(session, job, settings)

        plan = retry_db(f"job {job_id}: reading it", load_plan)
        log.info("job %s (%s) running on %s in %s", job_id, plan.kind.value, control.worker_id, plan.out_dir)
        tracker.start(plan)
        check_fits(plan)
        remove_partial_checkpoints(plan.out_dir)
        callbacks = Chain(StoreCallbacks(control, settings.lease_seconds, progress_every,
                                         poll_every=settings.cancel_poll_seconds), tracker, *observers)
        result = _run_engine(plan, callbacks)
        store = ArtifactStore(settings.artifact_dir)
        outputs = [*copy_outputs(plan, store), *package_model(plan, store)]

        def succeed() -> None:
            with session_scope(sessions) as session:
                if not finish_job(session, job_id, control.worker_id, JobStatus.SUCCEEDED):
                    if _already(session, control, JobStatus.SUCCEEDED):  # an earlier try committed
                        return
                    raise _NoLongerOurs
                publish(session, plan, outputs, result.history, result)

        retry_db(f"job {job_id}: recording its success", succeed)
        tracker.publish(result, outputs, store)
        shutil.rmtree(plan.out_dir, ignore_errors=True)
        log.info("job %s succeeded", job_id)
        return Outcome.SUCCEEDED
    except StopRequested:
        return _stopped(control, settings, enqueue)
    except _NoLongerOurs:
        log.warning("job %s finished here, but its lease was lost meanwhile; its results are not published",
                    job_id)
        return Outcome.LOST
    except SQLAlchemyError:
        log.exception("job %s: database error; it keeps its lease until it expires, then it is re-queued", job_id)
        raise
    except Exception as exc:
        message = failure_message(exc, plan)
        if message is None:
            log.exception("job %s failed with an unexpected error", job_id)
            message = (f"internal error ({exc.__class__.__name__}: {exc}); the traceback is in the log of "
                       f"worker {control.worker_id}")
        else:
            log.warning("job %s failed: %s", job_id, message, exc_info=True)
        return _finish(control, JobStatus.FAILED, message)


def _run_engine(plan: JobPlan, callbacks: Callbacks) -> Any:
    common: dict[str, Any] = dict(callbacks=callbacks, resume=True, cache_dir=plan.cache_dir,
                                  data_format=plan.data_format)
    if plan.kind is JobKind.SEARCH:
        return run_search(plan.data_path, plan.config, plan.out_dir, **common)
    return run_retrain(plan.data_path, plan.architecture, plan.config, plan.out_dir, **common)


def _already(session: Session, control: JobControl, status: JobStatus) -> bool:
    """True if our job is already ``status``: a try whose commit reached the database before
    the connection broke (``finish_job`` keeps the worker id)."""
    job = session.get(Job, control.job_id, populate_existing=True)
    return job is not None and job.status == status.value and job.worker_id == control.worker_id


def _finish(control: JobControl, status: JobStatus, error: str | None = None) -> Outcome:
    def finish() -> bool:
        with session_scope(control.sessions) as session:
            return (finish_job(session, control.job_id, control.worker_id, status, error)
                    or _already(session, control, status))

    finished = retry_db(f"job {control.job_id}: marking it {status.value}", finish)
    if not finished:
        log.warning("job %s could not be marked %s: it is no longer %s's", control.job_id, status.value,
                    control.worker_id)
        return Outcome.LOST
    return Outcome(status.value)


def _stopped(control: JobControl, settings: Settings, enqueue: Callable[[str, str], None] | None) -> Outcome:
    reason = control.reason
    if reason in (None, StopReason.SHUTDOWN):  # None: another callback asked; treated as a shutdown
        reason = control.read()
        if reason is None and _hand_back(control, enqueue):
            return Outcome.HANDED_BACK
        reason = reason or control.read()
    if reason is StopReason.CANCELLED:
        outcome = _finish(control, JobStatus.CANCELLED)
        shutil.rmtree(work_dir(settings, control.job_id), ignore_errors=True)
        log.info("job %s cancelled", control.job_id)
        return outcome
    log.warning("job %s stopped: its lease was lost (another attempt owns it now)", control.job_id)
    return Outcome.LOST


def _hand_back(control: JobControl, enqueue: Callable[[str, str], None] | None) -> bool:
    """Put our running job straight back in the queue, without spending one of its attempts
    (``store.jobs.release_job``), and send its message again."""
    def release() -> str | None:
        with session_scope(control.sessions) as session:
            return release_job(session, control.job_id, control.worker_id)

    kind = retry_db(f"job {control.job_id}: handing it back", release)
    if kind is None:
        return False
    try:
        (enqueue or _default_enqueue)(control.job_id, kind)
    except Exception as exc:  # the broker is down: the reaper re-sends the queued job later
        log.warning("job %s re-queued, but its message could not be sent (%s: %s); the reaper re-sends it",
                    control.job_id, exc.__class__.__name__, exc)
    log.info("job %s handed back to the queue", control.job_id)
    return True


def remove_partial_checkpoints(out_dir: Path) -> list[Path]:
    """Delete the temp files a killed attempt left in the job's work folder (a checkpoint
    being written: ``.last.pt.*.tmp``, see ``nas_core.checkpoint.save_checkpoint``).

    Only the job's current owner calls this, before its engine starts: no other attempt
    writes there any more (its lease is gone). The finished checkpoints are untouched.
    """
    removed = []
    for path in out_dir.glob(".*.tmp") if out_dir.is_dir() else ():
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            continue
    if removed:
        log.info("removed %d partial checkpoint file(s) a previous attempt left in %s", len(removed), out_dir)
    return removed


def _default_enqueue(job_id: str, kind: str) -> None:
    dispatch.enqueue_job(job_id, kind)
