"""A running job asks the database whether it was cancelled at most once a second, not every step."""

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
