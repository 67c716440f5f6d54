"""The reaper: re-queue jobs whose worker vanished, re-send queued jobs whose message was lost.

One sweep:

1. ``reap_expired_leases``: running jobs whose lease ran out go back to ``queued`` (or to
   ``failed`` once their attempts are spent); their messages are sent again, and the next
   worker resumes them from their last epoch checkpoint.
2. ``stale_queued_jobs(touch=True)``: jobs queued for longer than ``stale_after`` whose
   message is not waiting in the queue (the broker was down at submit, or a worker died
   holding it) are sent again.

After a database outage no lease is reaped for ``outage_grace`` (one lease period): while
the database was unreachable no worker could renew its lease, so every running job
looks dead at first; its worker renews within a third of a lease once it can. Without
the grace each outage longer than a lease would cost every running job an attempt (and
fail those on their last one).

Every worker process runs one in a daemon thread (every ``lease_seconds / 2``), and so
does ``thrifty-nas up``: no separate beat process. Several reapers are safe: each store
operation is one conditional UPDATE, and a duplicate message is ignored by ``claim_job``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from store.db import get_sessionmaker, session_scope
from store.jobs import reap_expired_leases, stale_queued_jobs
from store.models import Job
from store.removal import expire_artifacts, remove_files
from store.settings import Settings, get_settings
from worker import dispatch
from worker.retry import transient

log = logging.getLogger(__name__)

Enqueue = Callable[[str, str], None]


class SweepResult(NamedTuple):
    requeued: list[str]  # lease expired: back to queued, message sent
    failed: list[str]  # lease expired with no attempts left
    resent: list[str]  # queued too long with no message waiting: message sent again


def _default_enqueue(job_id: str, kind: str) -> None:
    dispatch.enqueue_job(job_id, kind)


def _default_pending() -> set[str] | None:
    return dispatch.pending_job_ids()


class Reaper:
    """One sweep at a time; ``enqueue`` and ``pending`` default to the real broker."""

    def __init__(self, sessions: sessionmaker[Session] | None = None, *, enqueue: Enqueue | None = None,
                 pending: Callable[[], set[str] | None] | None = None,
                 stale_after: timedelta = timedelta(minutes=2), outage_grace: timedelta = timedelta(0),
                 clock: Callable[[], float] = time.monotonic, settings: Settings | None = None) -> None:
        self.sessions = sessions or get_sessionmaker()
        self.settings = settings
        self.enqueue = enqueue or _default_enqueue
        self.pending = pending or _default_pending
        self.stale_after = stale_after
        self.outage_grace = outage_grace
        self.clock = clock
        self._database_down = False
        self._grace_until = -1.0

    def _send(self, job_ids: list[str]) -> list[str]:
        if not job_ids:
            return []
        with session_scope(self.sessions) as session:
            kinds = {row.id: row.kind for row in session.execute(select(Job.id, Job.kind).where(Job.id.in_(job_ids)))}
        sent = []
        for job_id in job_ids:
            try:
                self.enqueue(job_id, kinds[job_id])
                sent.append(job_id)
            except Exception as exc:  # broker down: the job stays queued; a later sweep re-sends it
                log.warning("reaper could not send job %s (%s: %s); a later sweep retries",
                            job_id, exc.__class__.__name__, exc)
        return sent

    def reap_expired(self, now: datetime | None = None) -> tuple[list[str], list[str]]:
        """Re-queue (and re-send) jobs whose lease expired; return (requeued, failed)."""
        with session_scope(self.sessions) as session:
            result = reap_expired_leases(session, now=now)
        self._send(result.requeued)
        return result.requeued, result.failed

    def resend_stale(self, now: datetime | None = None) -> list[str]:
        """Re-send jobs queued longer than ``stale_after`` whose message is not waiting."""
        with session_scope(self.sessions) as session:
            stale = stale_queued_jobs(session, self.stale_after, now=now, touch=True)
        if not stale:
            return []
        waiting = self.pending()
        lost = [job_id for job_id in stale if waiting is None or job_id not in waiting]
        if lost:
            log.info("reaper re-sends %d queued job(s) with no message waiting: %s", len(lost), ", ".join(lost))
        return self._send(lost)

    def expire(self, now: datetime | None = None) -> int:
        """Remove the artefacts older than the retention period (none without one)."""
        if self.settings is None or self.settings.retention_days is None:
            return 0
        with session_scope(self.sessions) as session:
            files = expire_artifacts(session, self.settings, timedelta(days=self.settings.retention_days), now=now)
        remove_files(files)  # after the commit: a failed one leaves the files in place
        if files:
            log.info("reaper removed %d artefact(s) older than %g days", len(files), self.settings.retention_days)
        return len(files)

    def sweep(self, now: datetime | None = None) -> SweepResult:
        try:
            if self._database_down or self.clock() < self._grace_until:
                requeued, failed = [], []  # during or just after an outage: leases could not be renewed
            else:
                requeued, failed = self.reap_expired(now)
            result = SweepResult(requeued, failed, self.resend_stale(now))
            self.expire(now)
        except Exception as exc:
            if transient(exc):
                self._database_down = True
            raise
        if self._database_down:
            self._database_down = False
            self._grace_until = self.clock() + self.outage_grace.total_seconds()
            if self.outage_grace:
                log.info("reaper: the database is back; no lease is reaped for %.0fs, so that running jobs' "
                         "workers can renew theirs", self.outage_grace.total_seconds())
        return result


class ReaperThread:
    """Runs ``Reaper.sweep`` every ``every`` seconds in a daemon thread until ``stop()``."""

    def __init__(self, reaper: Reaper, every: float) -> None:
        self.reaper, self.every = reaper, every
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="thrifty-reaper", daemon=True)

    def start(self) -> ReaperThread:
        self._thread.start()
        log.info("reaper started: a sweep every %.1fs", self.every)
        return self

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._done.wait(self.every):
            try:
                self.reaper.sweep()
            except Exception as exc:  # database or broker down: try again next time
                log.warning("reaper sweep failed (%s: %s); next try in %.1fs", exc.__class__.__name__, exc,
                            self.every)


_thread: ReaperThread | None = None
_lock = threading.Lock()


def reaper_for(settings: Settings) -> ReaperThread:
    """A reaper thread (not started) with the intervals the settings imply."""
    lease = settings.lease_seconds
    reaper = Reaper(stale_after=timedelta(seconds=max(2 * lease, 10)), outage_grace=timedelta(seconds=lease),
                    settings=settings)
    return ReaperThread(reaper, every=max(lease / 2, 0.5))


def start_reaper(settings: Settings | None = None) -> ReaperThread:
    """Start this process's reaper thread (once; later calls return the running one)."""
    global _thread
    with _lock:
        if _thread is None:
            _thread = reaper_for(settings or get_settings()).start()
        return _thread
