"""Engines: SQLite pragmas on every connection; UTC timestamps on both databases."""

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from store.db import make_engine, make_sessionmaker, session_scope
from store.models import User


def test_sqlite_pragmas(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30_000
    engine.dispose()


def test_session_scope_commits_or_rolls_back(factory) -> None:
    with session_scope(factory) as s:
        s.add(User(name="kept"))
    with pytest.raises(RuntimeError), session_scope(factory) as s:
        s.add(User(name="dropped"))
        s.flush()
        raise RuntimeError("boom")
    with factory() as s:
        assert [u.name for u in s.query(User)] == ["kept"]


def test_timestamps_round_trip_as_utc(session: Session) -> None:
    paris = timezone(timedelta(hours=2))
    stamp = datetime(2026, 7, 1, 12, 30, 15, 123456, tzinfo=paris)
    session.add(User(id="usr_t", name="t", created_at=stamp))
    session.commit()
    session.expunge_all()
    loaded = session.get(User, "usr_t")
    assert loaded.created_at == stamp and loaded.created_at.tzinfo == UTC
    with pytest.raises(Exception, match="naive datetime"):
        session.add(User(name="naive", created_at=datetime(2026, 1, 1)))
        session.flush()


def test_sessionmaker_keeps_objects_readable_after_commit(factory) -> None:
    assert make_sessionmaker(factory.kw["bind"]).kw["expire_on_commit"] is False
