"""INSERT ... ON CONFLICT for the two supported databases (PostgreSQL and SQLite)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

from sqlalchemy import CursorResult, FromClause, Result, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def dialect_insert(session: Session, table: FromClause) -> Any:
    """A dialect ``insert(table)`` that supports ``on_conflict_do_update/nothing``."""
    name = session.get_bind().dialect.name
    try:
        return _INSERTS[name](cast(Table, table))  # a mapped class's __table__ is typed as FromClause
    except KeyError:
        raise NotImplementedError(f"database {name!r} is not supported; use one of {sorted(_INSERTS)}") from None


def upsert(
    session: Session,
    table: FromClause,
    rows: Sequence[dict[str, Any]],
    *,
    conflict: Iterable[str],
    update: Iterable[str],
) -> None:
    """Insert ``rows``; a row whose ``conflict`` columns already exist updates ``update`` instead."""
    if not rows:
        return
    stmt = dialect_insert(session, table)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(conflict), set_={col: stmt.excluded[col] for col in update}
    )
    session.execute(stmt, list(rows))


def insert_ignore(session: Session, table: FromClause, row: dict[str, Any], *, conflict: Iterable[str]) -> bool:
    """Insert ``row`` unless ``conflict`` columns already exist; True if it was inserted.

    Uses RETURNING, not the row count: drivers may report -1 for INSERT.
    """
    stmt = dialect_insert(session, table).values(**row).on_conflict_do_nothing(index_elements=list(conflict))
    pk = list(cast(Table, table).primary_key.columns)[0]
    return session.execute(stmt.returning(pk)).first() is not None


def rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE matched: ``Session.execute`` returns a ``CursorResult`` for
    them, though it is typed as the general ``Result``."""
    assert isinstance(result, CursorResult), type(result)
    return result.rowcount
