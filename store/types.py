"""Column types and ids shared by the models.

Ids are strings: a short type prefix, an underscore and 32 hex digits of a
UUID4, e.g. ``job_3f2a...`` (36-40 characters). The prefix tells a person what
an id names in a log line or URL; the random part makes ids unguessable, so an
id leaks nothing about other users' rows. Ids are not ordered: order by
``created_at`` then ``id``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

ID_LENGTH = 40


def new_id(prefix: str) -> str:
    """Return a fresh id such as ``job_<32 hex>``."""
    return f"{prefix}_{uuid.uuid4().hex}"


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp, stored in UTC on every database.

    PostgreSQL keeps ``timestamptz``; SQLite has no time zones, so the value is
    stored as naive UTC text and given back its UTC zone when read. Naive
    datetimes are refused: their zone is a guess.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware value, e.g. datetime.now(UTC)")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
