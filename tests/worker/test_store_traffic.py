"""What workers ask of the database: cancel polls at most once a second; retention of old artefacts."""

from __future__ import annotations

from sqlalchemy import event

from store.db import session_scope
from store.jobs import claim_job, request_cancel
from tests.worker.support import submit
from worker.callbacks import JobControl, StoreCallbacks


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_cancel_is_polled_at_most_once_a_second_and_still_seen_within_one(sessions, owner) -> None:
    job_id = submit(sessions, owner, "search", {"epochs": 1})
    with session_scope(sessions) as session:
        assert claim_job(session, job_id, "w1", 60)
    clock = FakeClock()
    callbacks = StoreCallbacks(JobControl(job_id, "w1", sessions), 60, poll_every=1.0, clock=clock)
    engine = sessions.kw["bind"]
    queries: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        if statement.startswith("SELECT jobs.status, jobs.worker_id, jobs.cancel_requested"):  # the poll
            queries.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        for step in range(200):  # 200 training steps in 2 seconds (a tiny network on a GPU)
            clock.now = step * 0.01
            assert not callbacks.should_stop()
        assert len(queries) == 2  # at t=0 and t=1: once a second, not 200 times
        with session_scope(sessions) as session:
            request_cancel(session, job_id)
        clock.now = 1.995  # cancelled at t=1.99; the last question was at t=1: not asked again yet
        assert not callbacks.should_stop()
        clock.now = 2.0  # within a second of the cancel it is seen
        assert callbacks.should_stop() and callbacks.control.reason.value == "cancelled"
        assert len(queries) == 3
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_retention_removes_old_artefacts_of_finished_jobs_only(sessions, owner, settings) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from store.artifacts import ArtifactStore, list_artifacts, register_artifact
    from store.models import Job
    from store.types import utcnow
    from worker.reaper import Reaper

    store = ArtifactStore(settings.artifact_dir)
    jobs = {}
    for name, status, age_days in (("old", "succeeded", 10), ("recent", "succeeded", 1), ("running", "running", 10)):
        job_id = submit(sessions, owner, "retrain", {"epochs": 1})
        with session_scope(sessions) as session:
            session.execute(update(Job).where(Job.id == job_id).values(
                status=status, finished_at=utcnow() - timedelta(days=age_days)))
            stored = store.put_bytes(job_id, "best.pt", b"w" * 100, "checkpoint")
            register_artifact(session, job_id=job_id, owner_id=owner.user_id, name="best.pt", kind="checkpoint",
                              stored=stored)
        jobs[name] = job_id
    kept = Reaper(sessions, enqueue=lambda *a: None, pending=set, settings=settings)
    assert kept.expire() == 0  # no retention configured: nothing goes
    settings = settings.model_copy(update={"retention_days": 7})
    assert Reaper(sessions, enqueue=lambda *a: None, pending=set, settings=settings).expire() == 1
    with session_scope(sessions) as session:
        left = {name: [a.name for a in list_artifacts(session, job_id)] for name, job_id in jobs.items()}
        assert session.get(Job, jobs["old"]) is not None  # the job and its history stay
    assert left == {"old": [], "recent": ["best.pt"], "running": ["best.pt"]}
    assert not (store.job_dir(jobs["old"]) / "best.pt").exists() and (store.job_dir(jobs["recent"]) / "best.pt").exists()
