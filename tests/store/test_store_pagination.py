"""Keyset pagination returns every matching job exactly once, newest first."""

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from store.jobs import claim_job, create_job
from store.pagination import InvalidCursor, decode_cursor, encode_cursor, list_jobs
from store.types import utcnow
from store.users import create_user_with_key


@pytest.fixture
def jobs(session: Session, owner, pepper: str) -> list:
    user, dataset = owner
    t0 = utcnow()
    made = []
    for i in range(23):
        # groups of three share a timestamp, so the id must break ties
        created = t0 - timedelta(seconds=i // 3)
        kind = "search" if i % 2 else "retrain"
        made.append(create_job(session, owner_id=user.id, kind=kind, dataset_id=dataset.id, config={}, now=created).job)
    for job in made[::4]:
        claim_job(session, job.id, "w1", 60)
    bob, _ = create_user_with_key(session, "bob", pepper=pepper)
    create_job(session, owner_id=bob.id, kind="search", dataset_id=dataset.id, config={})
    session.commit()
    return made


def _all_pages(session: Session, owner_id: str, limit: int, **filters) -> list[str]:
    seen, cursor, pages = [], None, 0
    while True:
        page = list_jobs(session, owner_id, cursor=cursor, limit=limit, **filters)
        assert len(page.items) <= limit
        seen += [j.id for j in page.items]
        pages += 1
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor
        assert pages < 50


@pytest.mark.parametrize("limit", [1, 5, 7, 23, 100])
def test_every_job_exactly_once_in_order(session: Session, owner, jobs, limit: int) -> None:
    seen = _all_pages(session, owner[0].id, limit)
    expected = [j.id for j in sorted(jobs, key=lambda j: (j.created_at, j.id), reverse=True)]
    assert seen == expected


@pytest.mark.parametrize(
    "filters",
    [{"kind": "search"}, {"status": "running"}, {"status": ["queued", "running"]}, {"kind": "retrain", "status": "queued"}],
)
def test_filters(session: Session, owner, jobs, filters: dict) -> None:
    statuses = filters.get("status")
    statuses = [statuses] if isinstance(statuses, str) else statuses
    wanted = {
        j.id
        for j in jobs
        if ("kind" not in filters or j.kind == filters["kind"]) and (statuses is None or j.status in statuses)
    }
    seen = _all_pages(session, owner[0].id, 4, **filters)
    assert len(seen) == len(set(seen)) and set(seen) == wanted and wanted


def test_new_jobs_do_not_shift_pages(session: Session, owner, jobs) -> None:
    user, dataset = owner
    first = list_jobs(session, user.id, limit=10)
    create_job(session, owner_id=user.id, kind="search", dataset_id=dataset.id, config={})
    session.commit()
    rest = _all_pages_from(session, user.id, first.next_cursor)
    assert len(first.items) + len(rest) == len(jobs)


def _all_pages_from(session: Session, owner_id: str, cursor: str) -> list[str]:
    seen = []
    while cursor is not None:
        page = list_jobs(session, owner_id, cursor=cursor, limit=6)
        seen += [j.id for j in page.items]
        cursor = page.next_cursor
    return seen


def test_cursor_round_trip_and_rejects() -> None:
    now = utcnow()
    cursor = encode_cursor(now, "job_abc")
    assert "=" not in cursor and decode_cursor(cursor) == (now, "job_abc")
    for bad in ["", "!!!", "bm90LWEtY3Vyc29y", encode_cursor(now, "")]:
        with pytest.raises(InvalidCursor):
            decode_cursor(bad)


def test_limit_is_bounded(session: Session, owner) -> None:
    with pytest.raises(ValueError, match="limit"):
        list_jobs(session, owner[0].id, limit=0)
    with pytest.raises(ValueError, match="limit"):
        list_jobs(session, owner[0].id, limit=10_000)
