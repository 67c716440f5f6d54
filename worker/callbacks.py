"""The engine's callbacks, written to the store: progress, epochs, lease, stop.

* :class:`JobControl`: the stop flag of one running job and the checks that set it
  (the job is no longer ours -> lease lost; cancel requested; this worker shuts down).
* :class:`LeaseKeeper`: a thread that renews the lease every few seconds, so a long
  data preparation or evaluation (no training steps for minutes) never loses it.
* :class:`StoreCallbacks`: progress and ETA (at most every ``progress_every`` seconds),
  every epoch (always: metrics, alphas/betas/genotype via ``record_epoch``, idempotent),
  and ``should_stop`` re-reading the job row at most every ``poll_every`` seconds
  (``THRIFTY_CANCEL_POLL_SECONDS``, default 1), so a cancel stops the run within about a
  second while a fast GPU job does not ask the database at every one of its steps.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from nas_core.callbacks import Callbacks, EpochRecord, StepEvent
from store.db import session_scope
from store.history import record_epoch
from store.jobs import record_progress, renew_lease
from store.models import Job, JobStatus

log = logging.getLogger(__name__)


class StopReason(StrEnum):
    CANCELLED = "cancelled"  # the owner asked
    LEASE_LOST = "lease_lost"  # the job is no longer this worker's (lease expired, re-queued)
    SHUTDOWN = "shutdown"  # this worker process is stopping


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf replaced by None (JSON columns refuse them)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def store_epoch(session: Session, job_id: str, entry: dict[str, Any]) -> None:
    """Record one epoch of an engine's history (an ``EpochRecord.to_dict()``); idempotent."""
    genotype = entry.get("genotype")
    cells = {cell: {"alphas": snap["alphas"], "betas": snap.get("betas"), "genotype": genotype}
             for cell, snap in (entry.get("arch") or {}).items()}
    record_epoch(session, job_id, entry["epoch"], cells=json_safe(cells), metrics=json_safe(entry["metrics"]))


class JobControl:
    """Whether a running job must stop, and why; shared by the training thread and the lease keeper."""

    def __init__(self, job_id: str, worker_id: str, sessions: sessionmaker[Session],
                 shutdown: threading.Event | None = None) -> None:
        self.job_id, self.worker_id, self.sessions = job_id, worker_id, sessions
        self.shutdown = shutdown or threading.Event()
        self.reason: StopReason | None = None
        self._lock = threading.Lock()

    def stop(self, reason: StopReason) -> None:
        with self._lock:
            if self.reason is None:
                self.reason = reason
                log.info("job %s will stop: %s", self.job_id, reason.value)

    def read(self) -> StopReason | None:
        """What the row says now: lease lost, cancelled, or None (still ours, no cancel)."""
        stmt = select(Job.status, Job.worker_id, Job.cancel_requested).where(Job.id == self.job_id)
        with session_scope(self.sessions) as session:
            row = session.execute(stmt).one_or_none()
        if row is None or row.status != JobStatus.RUNNING.value or row.worker_id != self.worker_id:
            return StopReason.LEASE_LOST
        return StopReason.CANCELLED if row.cancel_requested else None

    def check(self) -> StopReason | None:
        """Set the stop reason from the shutdown flag and the row; return it (None: carry on)."""
        if self.shutdown.is_set():
            self.stop(StopReason.SHUTDOWN)
        verdict = self.read()
        if verdict is not None:
            self.stop(verdict)
        return self.reason

    def renew(self, lease_seconds: float) -> bool:
        """Extend the lease; False (and a stop reason set) if it is no longer ours or cancelled."""
        with session_scope(self.sessions) as session:
            renewed = renew_lease(session, self.job_id, self.worker_id, lease_seconds)
        if not renewed:
            self.check()
        return renewed


class LeaseKeeper:
    """Renews a job's lease every ``every`` seconds in a daemon thread until stopped."""

    def __init__(self, control: JobControl, lease_seconds: float, every: float | None = None) -> None:
        self.control, self.lease_seconds = control, lease_seconds
        self.every = every if every is not None else max(0.5, min(lease_seconds / 3, 10.0))
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{control.job_id}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._done.wait(self.every):
            try:
                if not self.control.renew(self.lease_seconds):
                    return
            except Exception as exc:  # database blip: keep trying; the lease lasts a while
                log.warning("job %s: renewing the lease failed (%s: %s); retrying in %.0fs",
                            self.control.job_id, exc.__class__.__name__, exc, self.every)


class StoreCallbacks(Callbacks):
    """Writes a running job's progress and epochs to the store and tells the engine when to stop."""

    def __init__(self, control: JobControl, lease_seconds: float, progress_every: float = 2.0,
                 poll_every: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.control, self.lease_seconds = control, lease_seconds
        self.progress_every, self.poll_every, self.clock = progress_every, poll_every, clock
        self._last_progress = self._last_poll = -math.inf
        self._announced = False

    def _tolerant(self, what: str, func: Callable[[], object]) -> None:
        # A database blip must not kill hours of training: the lease keeper keeps trying, and
        # the finished job's history is written again in full (see worker.results).
        try:
            func()
        except SQLAlchemyError as exc:
            log.warning("job %s: %s failed (%s: %s); training goes on", self.control.job_id, what,
                        exc.__class__.__name__, exc)

    def on_step(self, event: StepEvent) -> None:
        if not self._announced:
            self._announced = True
            resumed = f"resumed from its checkpoint after epoch {event.start_epoch}" if event.start_epoch else "new"
            log.info("job %s trains epochs %d-%d of %d (%s)", self.control.job_id, event.start_epoch + 1,
                     event.epochs, event.epochs, resumed)
        now = self.clock()
        if now - self._last_progress < self.progress_every:
            return
        self._last_progress = now

        def write() -> None:
            with session_scope(self.control.sessions) as session:
                ours = record_progress(session, self.control.job_id, epoch=event.epoch, progress=event.progress,
                                       eta_seconds=event.eta_s, worker_id=self.control.worker_id,
                                       lease_seconds=self.lease_seconds)
            if not ours:
                self.control.check()

        self._tolerant("writing progress", write)

    def on_epoch(self, record: EpochRecord) -> None:
        latest = json_safe({"epoch": record.epoch + 1, **record.metrics, **record.extra})

        def write() -> None:
            with session_scope(self.control.sessions) as session:
                ours = record_progress(session, self.control.job_id, epoch=record.epoch + 1,
                                       progress=(record.epoch + 1) / record.epochs, eta_seconds=record.eta_s,
                                       latest_metrics=latest, worker_id=self.control.worker_id,
                                       lease_seconds=self.lease_seconds)
                if ours:
                    store_epoch(session, self.control.job_id, record.to_dict())
            if not ours:
                self.control.check()

        self._tolerant(f"recording epoch {record.epoch}", write)
        self._last_progress = self.clock()

    def should_stop(self) -> bool:
        if self.control.reason is None:
            if self.control.shutdown.is_set():
                self.control.stop(StopReason.SHUTDOWN)
            elif self.clock() - self._last_poll >= self.poll_every:
                self._last_poll = self.clock()
                self._tolerant("checking for a cancel", self.control.check)
        return self.control.reason is not None


class Chain(Callbacks):
    """Several callbacks as one: every hook goes to each; stop when any asks."""

    def __init__(self, *members: Callbacks) -> None:
        self.members = members

    def on_step(self, event: StepEvent) -> None:
        for member in self.members:
            member.on_step(event)

    def on_epoch(self, record: EpochRecord) -> None:
        for member in self.members:
            member.on_epoch(record)

    def on_checkpoint(self, path: Path, kind: str) -> None:
        for member in self.members:
            member.on_checkpoint(path, kind)

    def should_stop(self) -> bool:
        return any([member.should_stop() for member in self.members])
