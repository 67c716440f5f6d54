"""Job lifecycle: idempotent submit, exclusive claims, leases, the reaper, cancel."""

import threading
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from store.jobs import (
    IdempotencyConflict,
    claim_job,
    create_job,
    finish_job,
    get_job,
    reap_expired_leases,
    record_progress,
    release_job,
    renew_lease,
    request_cancel,
    stale_queued_jobs,
)
from store.models import Dataset, Job, User
from store.types import utcnow
from store.users import create_user_with_key

CONFIG = {"epochs": 2, "batch_size": 2, "lr": 0.025}


def _job(session: Session, owner: tuple[User, Dataset], **kw) -> Job:
    user, dataset = owner
    kw.setdefault("kind", "search")
    kw.setdefault("config", CONFIG)
    job, created = create_job(session, owner_id=user.id, dataset_id=dataset.id, epochs=2, **kw)
    assert created
    session.commit()
    return job


def test_create_job_defaults(session: Session, owner) -> None:
    job = _job(session, owner)
    assert job.id.startswith("job_") and len(job.id) == 36
    assert (job.status, job.attempt, job.progress, job.cancel_requested) == ("queued", 0, 0.0, False)
    assert job.created_at.tzinfo is not None and job.queued_at == job.created_at
    again = get_job(session, job.id, owner_id=owner[0].id)
    assert again is job
    assert get_job(session, job.id, owner_id="usr_other") is None


def test_idempotency_key_returns_existing_job(session: Session, owner, pepper: str) -> None:
    user, dataset = owner
    first = create_job(session, owner_id=user.id, kind="search", dataset_id=dataset.id, config=CONFIG, idempotency_key="k1")
    session.commit()
    again = create_job(session, owner_id=user.id, kind="search", dataset_id=dataset.id, config=dict(CONFIG), idempotency_key="k1")
    session.commit()
    assert first.created and not again.created
    assert again.job.id == first.job.id
    assert session.query(Job).count() == 1

    with pytest.raises(IdempotencyConflict, match="k1"):
        create_job(session, owner_id=user.id, kind="retrain", dataset_id=dataset.id, config=CONFIG, idempotency_key="k1")

    # another owner may use the same key; no key means always a new job
    bob, _ = create_user_with_key(session, "bob", pepper=pepper)
    other = create_job(session, owner_id=bob.id, kind="search", dataset_id=dataset.id, config=CONFIG, idempotency_key="k1")
    assert other.created and other.job.id != first.job.id
    for _ in range(2):
        assert create_job(session, owner_id=user.id, kind="search", dataset_id=dataset.id, config=CONFIG).created
    session.commit()
    assert session.query(Job).count() == 4


def test_claim_is_exclusive(session: Session, owner) -> None:
    job = _job(session, owner)
    assert claim_job(session, job.id, "w1", 60) is True
    assert claim_job(session, job.id, "w2", 60) is False  # duplicate message
    session.commit()
    session.refresh(job)
    assert (job.status, job.worker_id, job.attempt) == ("running", "w1", 1)
    assert job.started_at is not None and job.lease_expires_at > utcnow()
    assert claim_job(session, "job_missing", "w1", 60) is False


def test_concurrent_claims_have_one_winner(factory: sessionmaker[Session], session: Session, owner) -> None:
    job = _job(session, owner)
    contenders = 4
    barrier = threading.Barrier(contenders)
    results: list[bool] = []
    errors: list[BaseException] = []

    def contend(worker: str) -> None:
        try:
            with factory() as s:
                barrier.wait(timeout=10)
                won = claim_job(s, job.id, worker, 60)
                s.commit()
                results.append(won)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=contend, args=(f"w{i}",)) for i in range(contenders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert sorted(results) == [False] * (contenders - 1) + [True]
    session.refresh(job)
    assert job.attempt == 1


def test_lease_renewal_progress_and_finish(session: Session, owner) -> None:
    job = _job(session, owner)
    now = utcnow()
    assert claim_job(session, job.id, "w1", 60, now=now)
    later = now + timedelta(seconds=30)
    assert renew_lease(session, job.id, "w1", 60, now=later) is True
    assert renew_lease(session, job.id, "w2", 60, now=later) is False
    assert record_progress(session, job.id, epoch=1, progress=0.5, eta_seconds=12.5,
                           latest_metrics={"val_dsc": 0.7}, worker_id="w1") is True
    assert record_progress(session, job.id, epoch=1, progress=0.5, worker_id="w2") is False
    session.commit()
    session.refresh(job)
    assert job.lease_expires_at == later + timedelta(seconds=60)
    assert (job.epoch, job.progress, job.eta_seconds, job.latest_metrics) == (1, 0.5, 12.5, {"val_dsc": 0.7})

    with pytest.raises(ValueError, match="not final"):
        finish_job(session, job.id, "w1", "running")
    assert finish_job(session, job.id, "w2", "succeeded") is False
    assert finish_job(session, job.id, "w1", "succeeded") is True
    assert finish_job(session, job.id, "w1", "failed", "late") is False
    session.commit()
    session.refresh(job)
    assert (job.status, job.progress, job.lease_expires_at, job.error) == ("succeeded", 1.0, None, None)
    assert job.finished_at is not None
    assert renew_lease(session, job.id, "w1", 60) is False
    assert record_progress(session, job.id, epoch=2, progress=1.0) is False


def test_cancel_queued_is_immediate(session: Session, owner) -> None:
    job = _job(session, owner)
    assert request_cancel(session, job.id, owner_id="usr_other") is None
    result = request_cancel(session, job.id, owner_id=owner[0].id)
    session.commit()
    assert result.status == "cancelled" and result.finished_at is not None
    assert claim_job(session, job.id, "w1", 60) is False


def test_cancel_running_sets_flag_and_stops_renewal(session: Session, owner) -> None:
    job = _job(session, owner)
    assert claim_job(session, job.id, "w1", 60)
    result = request_cancel(session, job.id)
    session.commit()
    assert (result.status, result.cancel_requested) == ("running", True)
    assert renew_lease(session, job.id, "w1", 60) is False
    assert finish_job(session, job.id, "w1", "cancelled") is True
    session.commit()
    assert get_job(session, job.id).status == "cancelled"
    assert request_cancel(session, job.id).status == "cancelled"  # finished jobs stay as they are
    assert request_cancel(session, "job_missing") is None


def test_release_hands_our_running_job_back_without_spending_an_attempt(session: Session, owner) -> None:
    job = _job(session, owner)
    assert claim_job(session, job.id, "w1", 60) is True
    session.commit()
    assert release_job(session, job.id, "w2") is None  # not ours
    assert release_job(session, job.id, "w1") == "search"
    session.commit()
    session.refresh(job)
    assert (job.status, job.worker_id, job.lease_expires_at, job.attempt) == ("queued", None, None, 0)
    assert release_job(session, job.id, "w1") is None  # queued now: nothing to release

    assert claim_job(session, job.id, "w1", 60) is True
    request_cancel(session, job.id)
    session.commit()
    assert release_job(session, job.id, "w1") is None  # a cancel request wins over a hand-back
    session.refresh(job)
    assert job.status == "running" and job.cancel_requested


def test_reaper_requeues_then_fails_at_the_attempt_limit(session: Session, owner) -> None:
    job = _job(session, owner, max_attempts=2)
    t0 = utcnow()
    assert claim_job(session, job.id, "w1", 60, now=t0)
    session.commit()
    assert reap_expired_leases(session, now=t0 + timedelta(seconds=59)) == ([], [])

    requeued, failed = reap_expired_leases(session, now=t0 + timedelta(seconds=61))
    session.commit()
    assert (requeued, failed) == ([job.id], [])
    session.refresh(job)
    assert (job.status, job.worker_id, job.lease_expires_at, job.attempt) == ("queued", None, None, 1)
    assert job.queued_at == t0 + timedelta(seconds=61)
    assert finish_job(session, job.id, "w1", "succeeded") is False  # the lost worker comes back too late

    t1 = t0 + timedelta(seconds=100)
    assert claim_job(session, job.id, "w2", 60, now=t1)
    session.commit()
    session.refresh(job)
    assert job.attempt == 2 and job.started_at == t0  # started_at keeps the first start
    requeued, failed = reap_expired_leases(session, now=t1 + timedelta(seconds=61))
    session.commit()
    assert (requeued, failed) == ([], [job.id])
    session.refresh(job)
    assert job.status == "failed" and job.finished_at is not None
    assert "attempt 2 of 2" in job.error and "w2" in job.error


def test_reaper_cancels_expired_job_with_cancel_request(session: Session, owner) -> None:
    job = _job(session, owner)
    t0 = utcnow()
    assert claim_job(session, job.id, "w1", 10, now=t0)
    request_cancel(session, job.id)
    session.commit()
    assert reap_expired_leases(session, now=t0 + timedelta(seconds=11)) == ([], [])
    session.commit()
    assert get_job(session, job.id).status == "cancelled"


def test_stale_queued_jobs(session: Session, owner) -> None:
    t0 = utcnow()
    old = _job(session, owner, now=t0 - timedelta(minutes=10))
    _job(session, owner, now=t0)
    running = _job(session, owner, now=t0 - timedelta(minutes=10))
    assert claim_job(session, running.id, "w1", 60)
    assert stale_queued_jobs(session, timedelta(minutes=5), now=t0) == [old.id]
    assert stale_queued_jobs(session, timedelta(minutes=5), now=t0, touch=True) == [old.id]
    assert stale_queued_jobs(session, timedelta(minutes=5), now=t0) == []
    assert stale_queued_jobs(session, timedelta(minutes=5), now=t0 + timedelta(minutes=6)) != []


def test_concurrent_submits_with_one_key_make_one_job(factory: sessionmaker[Session], owner) -> None:
    user, dataset = owner
    contenders = 4
    barrier = threading.Barrier(contenders)
    results: list[tuple[str, bool]] = []
    errors: list[BaseException] = []

    def submit() -> None:
        try:
            with factory() as s:
                barrier.wait(timeout=10)
                job, created = create_job(
                    s, owner_id=user.id, kind="search", dataset_id=dataset.id, config=CONFIG, idempotency_key="retry"
                )
                s.commit()
                results.append((job.id, created))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(contenders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert len({job_id for job_id, _ in results}) == 1
    assert sorted(created for _, created in results) == [False] * (contenders - 1) + [True]
