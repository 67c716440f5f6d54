"""Keyset pagination, newest first, with opaque cursors.

A cursor is URL-safe base64 (no padding) of ``"<created_at ISO 8601, UTC>|<id>"`` of
the last item of the previous page. Rows are ordered by ``(created_at DESC, id DESC)``
and a page continues strictly after the cursor, so inserts and deletes between
requests never repeat or skip a row that existed throughout.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any, Generic, NamedTuple, TypeVar

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from store.models import Job, JobKind, JobStatus

T = TypeVar("T")

MAX_LIMIT = 200


class InvalidCursor(ValueError):
    """The cursor was not produced by this service (or was altered)."""


class Page(NamedTuple, Generic[T]):
    items: list[T]
    next_cursor: str | None  # None on the last page


def encode_cursor(created_at: datetime, row_id: str) -> str:
    text = f"{created_at.astimezone(UTC).isoformat()}|{row_id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, row_id = text.split("|", 1)
        created_at = datetime.fromisoformat(stamp)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidCursor(f"invalid cursor {cursor!r}: pass the next_cursor of a previous page") from exc
    if created_at.tzinfo is None or not row_id:
        raise InvalidCursor(f"invalid cursor {cursor!r}: pass the next_cursor of a previous page")
    return created_at, row_id


def keyset_page(
    session: Session,
    stmt: Select[Any],
    created_col: InstrumentedAttribute[datetime],
    id_col: InstrumentedAttribute[str],
    *,
    cursor: str | None,
    limit: int,
) -> Page[Any]:
    """One page of ``stmt`` (a ``select(Model)`` with filters), newest first."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit {limit} is out of range; use 1 to {MAX_LIMIT}")
    if cursor is not None:
        created_at, row_id = decode_cursor(cursor)
        stmt = stmt.where(or_(created_col < created_at, and_(created_col == created_at, id_col < row_id)))
    stmt = stmt.order_by(created_col.desc(), id_col.desc()).limit(limit + 1)
    rows = list(session.scalars(stmt))
    if len(rows) <= limit:
        return Page(rows, None)
    rows = rows[:limit]
    last = rows[-1]
    return Page(rows, encode_cursor(getattr(last, created_col.key), getattr(last, id_col.key)))


def list_jobs(
    session: Session,
    owner_id: str,
    *,
    kind: JobKind | str | None = None,
    status: JobStatus | str | Collection[JobStatus | str] | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page[Job]:
    """The owner's jobs, newest first, optionally of one ``kind`` and one or more ``status``."""
    stmt = select(Job).where(Job.owner_id == owner_id)
    if kind is not None:
        stmt = stmt.where(Job.kind == JobKind(kind).value)
    if status is not None:
        statuses = [status] if isinstance(status, str) else list(status)
        stmt = stmt.where(Job.status.in_([JobStatus(s).value for s in statuses]))
    return keyset_page(session, stmt, Job.created_at, Job.id, cursor=cursor, limit=limit)
