"""Fixtures for the store tests: every database test runs on SQLite and on PostgreSQL.

PostgreSQL: ``THRIFTY_TEST_POSTGRES_URL`` (default the local server, database ``test``).
Each test session works in its own freshly created schema (random name, chosen via
``search_path``) and drops it at the end, so parallel runs never collide. If the
server is unreachable the PostgreSQL cases are skipped, unless ``CI=true``: then
they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, delete, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from store import migrate
from store.datasets import create_dataset
from store.db import make_engine, make_sessionmaker
from store.models import Base, Dataset, User
from store.users import create_user_with_key

PG_URL = os.environ.get("THRIFTY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PEPPER = "test-pepper"
BACKENDS = ["sqlite", "postgresql"]


def _postgres_or_skip() -> str:
    engine = create_engine(PG_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to connect means "no server here"
        reason = f"PostgreSQL at {make_url(PG_URL).render_as_string()} is unreachable: {exc.__class__.__name__}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: PostgreSQL is required)")
        pytest.skip(reason)
    finally:
        engine.dispose()
    return PG_URL


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A URL whose connections use a new, empty schema; the schema is dropped afterwards."""
    base = _postgres_or_skip()
    schema = f"tnas_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def empty_database(backend: str, folder: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'thrifty.db'}"
    else:
        with postgres_schema() as url:
            yield url


@pytest.fixture(params=BACKENDS)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database (no tables), one per test."""
    with empty_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture(scope="session", params=BACKENDS)
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """An engine on a database migrated to head, shared by the session's tests."""
    with empty_database(request.param, tmp_path_factory.mktemp(request.param)) as url:
        migrate.upgrade(url)
        engine = make_engine(url)
        yield engine
        engine.dispose()


@pytest.fixture
def factory(engine: Engine) -> sessionmaker[Session]:
    """A sessionmaker on emptied tables."""
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(delete(table))
    return make_sessionmaker(engine)


@pytest.fixture
def session(factory: sessionmaker[Session]) -> Iterator[Session]:
    with factory() as session:
        yield session


@pytest.fixture
def owner(session: Session) -> tuple[User, Dataset]:
    """A committed user with one dataset."""
    user, _ = create_user_with_key(session, "alice", pepper=PEPPER)
    dataset = create_dataset(
        session, owner_id=user.id, name="spleen", path="/data/spleen", format="msd", num_cases=4, num_classes=2
    )
    session.commit()
    return user, dataset


@pytest.fixture
def pepper() -> str:
    """The API key pepper the tests use (passed explicitly, so no settings are read)."""
    return PEPPER
