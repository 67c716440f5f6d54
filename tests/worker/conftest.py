"""Fixtures for the worker tests: the real PostgreSQL (a fresh schema per session), tiny phantoms.

PostgreSQL: ``THRIFTY_TEST_POSTGRES_URL`` (default the local server, database ``test``).
The session works in its own schema (random name, via ``search_path``), migrated to
head and dropped at the end. If the server is unreachable the tests are skipped,
unless ``CI=true``: then they fail.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from nas_core.data import make_phantom_dataset
from store import migrate
from store.db import make_engine, make_sessionmaker
from store.settings import Settings
from tests.worker.support import PG_URL, Owner, make_owner, make_settings, require_postgres


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A URL whose connections use a fresh schema, migrated to head; dropped at the end."""
    require_postgres()
    schema = f"tnas_worker_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="session")
def sessions(pg_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(pg_url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def settings(pg_url: str, tmp_path: Path) -> Settings:
    """Settings on the test schema with an empty artefact folder of this test."""
    return make_settings(pg_url, tmp_path)


@pytest.fixture(scope="session")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SYNTHETIC nnU-Net dataset: 6 cases of 32x32, 3 classes."""
    return make_phantom_dataset(tmp_path_factory.mktemp("data") / "phantom", num_cases=6, image_size=32,
                                depth=1, num_classes=3, seed=0)


@pytest.fixture
def owner(sessions: sessionmaker[Session], phantom: Path) -> Owner:
    return make_owner(sessions, phantom)
