"""The job lifecycle: submit, claim, lease, progress, finish, cancel, reap.

The job row is the source of truth; the queue message carries only the job id.
Every state change is one conditional UPDATE, so a duplicate message, a late
worker or a concurrent reaper changes nothing that is no longer theirs:

    queued --claim_job--> running --finish_job--> succeeded | failed | cancelled
      ^                      |
      +--reap_expired_leases-+  (lease expired, attempts left; else failed)

``started_at`` is the first claim; ``queued_at`` the last time the job was (re)queued.
Functions flush but never commit; enqueue the Celery message after the commit.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import String, cast, func, literal, select, update
from sqlalchemy.orm import Session

from store.models import TERMINAL_STATUSES, Job, JobKind, JobStatus
from store.types import new_id, utcnow
from store.upsert import insert_ignore, rowcount

log = logging.getLogger(__name__)

_SYNC = {"synchronize_session": "fetch"}


class IdempotencyConflict(ValueError):
    """The idempotency key was already used for a different submission."""


class CreatedJob(NamedTuple):
    job: Job
    created: bool  # False: the idempotency key matched an earlier submission; do not enqueue again


class ReapResult(NamedTuple):
    requeued: list[str]  # back to queued: send their messages again
    failed: list[str]  # retry limit reached


def _normalised(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True))


def get_job(session: Session, job_id: str, *, owner_id: str | None = None) -> Job | None:
    """The job, or None if it does not exist or belongs to someone other than ``owner_id``."""
    job = session.get(Job, job_id)
    if job is None or (owner_id is not None and job.owner_id != owner_id):
        return None
    return job


def create_job(
    session: Session,
    *,
    owner_id: str,
    kind: JobKind | str,
    dataset_id: str,
    config: dict[str, Any],
    epochs: int = 0,
    architecture: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    max_attempts: int = 3,
    now: datetime | None = None,
) -> CreatedJob:
    """Add a queued job. With ``idempotency_key``, a repeat by the same owner returns the first job.

    The repeat must match the first submission (kind, dataset, config, architecture),
    else ``IdempotencyConflict``. Safe under concurrent submits (INSERT ... ON CONFLICT).
    """
    now = now or utcnow()
    values = {
        "id": new_id("job"),
        "owner_id": owner_id,
        "kind": JobKind(kind).value,
        "status": JobStatus.QUEUED.value,
        "dataset_id": dataset_id,
        "config": config,
        "architecture": architecture,
        "epochs": epochs,
        "max_attempts": max_attempts,
        "idempotency_key": idempotency_key,
        "created_at": now,
        "queued_at": now,
        "updated_at": now,
    }
    if idempotency_key is None:
        job = Job(**values)
        session.add(job)
        session.flush()
        return CreatedJob(job, True)

    inserted = insert_ignore(session, Job.__table__, values, conflict=("owner_id", "idempotency_key"))
    job = session.scalars(
        select(Job)
        .where(Job.owner_id == owner_id, Job.idempotency_key == idempotency_key)
        .execution_options(populate_existing=True)
    ).one()
    if not inserted:
        first = (job.kind, job.dataset_id, _normalised(job.config), _normalised(job.architecture))
        again = (values["kind"], dataset_id, _normalised(config), _normalised(architecture))
        if first != again:
            raise IdempotencyConflict(
                f"Idempotency-Key {idempotency_key!r} was already used for job {job.id} with a different "
                f"request; send a new key for a new submission"
            )
    return CreatedJob(job, bool(inserted))


def claim_job(
    session: Session, job_id: str, worker_id: str, lease_seconds: float, *, now: datetime | None = None
) -> bool:
    """Take a queued job for ``worker_id``: True if this call claimed it, False otherwise.

    One conditional UPDATE (queued -> running), so of two workers handed the same
    message exactly one wins. Increments ``attempt``; the lease ends after ``lease_seconds``.
    """
    now = now or utcnow()
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED.value)
        .values(
            status=JobStatus.RUNNING.value,
            worker_id=worker_id,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempt=Job.attempt + 1,
            started_at=func.coalesce(Job.started_at, now),
            updated_at=now,
        )
        .execution_options(**_SYNC)
    )
    return rowcount(session.execute(stmt)) == 1


def _ours(job_id: str, worker_id: str) -> list[Any]:
    return [Job.id == job_id, Job.status == JobStatus.RUNNING.value, Job.worker_id == worker_id]


def renew_lease(
    session: Session, job_id: str, worker_id: str, lease_seconds: float, *, now: datetime | None = None
) -> bool:
    """Extend the lease; False if the job is no longer this worker's or a cancel was requested.

    On False the worker stops the job (``finish_job(..., "cancelled")`` if cancel was requested).
    """
    now = now or utcnow()
    stmt = (
        update(Job)
        .where(*_ours(job_id, worker_id), Job.cancel_requested.is_(False))
        .values(lease_expires_at=now + timedelta(seconds=lease_seconds), updated_at=now)
        .execution_options(**_SYNC)
    )
    return rowcount(session.execute(stmt)) == 1


def record_progress(
    session: Session,
    job_id: str,
    *,
    epoch: int,
    progress: float,
    eta_seconds: float | None = None,
    latest_metrics: dict[str, Any] | None = None,
    worker_id: str | None = None,
    lease_seconds: float | None = None,
    now: datetime | None = None,
) -> bool:
    """Store progress of a running job; False if it is not running (or not ``worker_id``'s).

    With ``worker_id`` and ``lease_seconds`` it also renews the lease.
    """
    now = now or utcnow()
    values: dict[str, Any] = {
        "epoch": epoch,
        "progress": min(max(progress, 0.0), 1.0),
        "eta_seconds": eta_seconds,
        "updated_at": now,
    }
    if latest_metrics is not None:
        values["latest_metrics"] = latest_metrics
    conditions = [Job.id == job_id, Job.status == JobStatus.RUNNING.value]
    if worker_id is not None:
        conditions.append(Job.worker_id == worker_id)
        if lease_seconds is not None:
            values["lease_expires_at"] = now + timedelta(seconds=lease_seconds)
    stmt = update(Job).where(*conditions).values(**values).execution_options(**_SYNC)
    return rowcount(session.execute(stmt)) == 1


def finish_job(
    session: Session,
    job_id: str,
    worker_id: str,
    status: JobStatus | str,
    error: str | None = None,
    *,
    now: datetime | None = None,
) -> bool:
    """Move this worker's running job to a final status; False if it is no longer this worker's."""
    status = JobStatus(status)
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"finish_job status {status.value!r} is not final; use one of {sorted(TERMINAL_STATUSES)}")
    now = now or utcnow()
    values: dict[str, Any] = {
        "status": status.value,
        "error": error,
        "finished_at": now,
        "lease_expires_at": None,
        "updated_at": now,
    }
    if status is JobStatus.SUCCEEDED:
        values.update(progress=1.0, eta_seconds=0.0)
    stmt = update(Job).where(*_ours(job_id, worker_id)).values(**values).execution_options(**_SYNC)
    return rowcount(session.execute(stmt)) == 1


def release_job(session: Session, job_id: str, worker_id: str, *, now: datetime | None = None) -> str | None:
    """Put this worker's running job straight back in the queue without spending an attempt
    (the worker is shutting down); its kind, or None if it is no longer ours or a cancel
    was requested (one conditional UPDATE: it races safely with a cancel or a reaper)."""
    now = now or utcnow()
    stmt = (
        update(Job)
        .where(*_ours(job_id, worker_id), Job.cancel_requested.is_(False))
        .values(status=JobStatus.QUEUED.value, worker_id=None, lease_expires_at=None,
                attempt=Job.attempt - 1, queued_at=now, updated_at=now)
        .returning(Job.kind)
        .execution_options(synchronize_session=False)
    )
    return session.scalars(stmt).one_or_none()


def request_cancel(
    session: Session, job_id: str, *, owner_id: str | None = None, now: datetime | None = None
) -> Job | None:
    """Cancel a job: a queued one is cancelled at once, a running one gets ``cancel_requested``.

    A finished job is left as it is. Returns the job as it now stands, or None if not found.
    """
    now = now or utcnow()
    owned = [Job.id == job_id] + ([Job.owner_id == owner_id] if owner_id is not None else [])
    cancelled = rowcount(session.execute(
        update(Job)
        .where(*owned, Job.status == JobStatus.QUEUED.value)
        .values(status=JobStatus.CANCELLED.value, finished_at=now, updated_at=now)
        .execution_options(**_SYNC)
    ))
    if not cancelled:
        session.execute(
            update(Job)
            .where(*owned, Job.status == JobStatus.RUNNING.value)
            .values(cancel_requested=True, updated_at=now)
            .execution_options(**_SYNC)
        )
    return session.scalars(select(Job).where(*owned).execution_options(populate_existing=True)).one_or_none()


def reap_expired_leases(session: Session, now: datetime | None = None) -> ReapResult:
    """Handle running jobs whose lease ran out (their worker was killed or lost).

    Attempts left: back to queued (resend their messages; the job resumes from its
    last checkpoint). No attempts left: failed, with the reason. Cancel requested:
    cancelled (logged, in neither list).
    """
    now = now or utcnow()
    expired = [Job.status == JobStatus.RUNNING.value, Job.lease_expires_at < now]
    base = {"worker_id": None, "lease_expires_at": None, "updated_at": now}

    def run(conditions: list[Any], values: dict[str, Any]) -> list[str]:
        stmt = update(Job).where(*expired, *conditions).values(**base, **values).returning(Job.id)
        return sorted(session.scalars(stmt.execution_options(**_SYNC)).all())

    cancelled = run(
        [Job.cancel_requested.is_(True)],
        {"status": JobStatus.CANCELLED.value, "finished_at": now},
    )
    reason = (
        literal("worker lost: the lease of attempt ")
        + cast(Job.attempt, String)
        + literal(" of ")
        + cast(Job.max_attempts, String)
        + literal(" expired (last worker ")
        + func.coalesce(Job.worker_id, literal("unknown"))
        + literal(") and no retries are left; check that worker's log (killed, out of memory, "
                  "machine lost), then submit the job again")
    )
    failed = run(
        [Job.cancel_requested.is_(False), Job.attempt >= Job.max_attempts],
        {"status": JobStatus.FAILED.value, "finished_at": now, "error": reason},
    )
    requeued = run(
        [Job.cancel_requested.is_(False), Job.attempt < Job.max_attempts],
        {"status": JobStatus.QUEUED.value, "queued_at": now},
    )
    for label, ids in (("requeued", requeued), ("failed", failed), ("cancelled", cancelled)):
        if ids:
            log.info("reaper %s %d job(s) with expired leases: %s", label, len(ids), ", ".join(ids))
    return ReapResult(requeued, failed)


def stale_queued_jobs(
    session: Session,
    older_than: timedelta,
    *,
    now: datetime | None = None,
    touch: bool = False,
    limit: int = 100,
) -> list[str]:
    """Ids of jobs queued for longer than ``older_than`` (their message may be lost), oldest first.

    Resending is safe (claims are conditional). With ``touch``, their ``queued_at`` is
    set to now so the next sweep waits ``older_than`` again before resending.
    """
    now = now or utcnow()
    stmt = (
        select(Job.id)
        .where(Job.status == JobStatus.QUEUED.value, Job.queued_at < now - older_than)
        .order_by(Job.queued_at, Job.id)
        .limit(limit)
    )
    ids = list(session.scalars(stmt))
    if touch and ids:
        session.execute(
            update(Job)
            .where(Job.id.in_(ids), Job.status == JobStatus.QUEUED.value)
            .values(queued_at=now)
            .execution_options(**_SYNC)
        )
    return ids
