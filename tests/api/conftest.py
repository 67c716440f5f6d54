"""Fixtures for the API tests: the real PostgreSQL (a fresh schema per test session) and Redis.

PostgreSQL: ``THRIFTY_TEST_POSTGRES_URL`` (default the local server, database ``test``);
unreachable -> the tests are skipped, unless ``CI=true``: then they fail. The broker is
the real Redis, database 10 (``THRIFTY_TEST_REDIS_URL``), flushed by the tests that read it:
a client's app builds its own queue (Celery on that Redis) unless the test passes one
(``make_client(queue=RecordingQueue())``, ``tests.api.support``), or the module overrides the
``job_queue`` fixture. Every response is checked: a 500 fails the test that caused it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, delete, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from api.main import create_app
from api.queue import JobQueue, dispatch_installed
from api.state import UploadLimits
from nas_core.data import make_phantom_dataset
from store import migrate
from store.datasets import create_dataset
from store.db import make_engine, make_sessionmaker
from store.jobs import create_job
from store.models import Base
from store.settings import Settings, get_settings
from store.users import create_user_with_key

PG_URL = os.environ.get("THRIFTY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("THRIFTY_TEST_REDIS_URL", "redis://127.0.0.1:6379/10")
PEPPER = "api-test-pepper"
GOOD_LABEL = "labelsTr/phantom_001.nii.gz"


def _unreachable(what: str, exc: Exception) -> None:
    reason = f"{what} is unreachable: {exc.__class__.__name__}: {exc}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: it is required)")
    pytest.skip(reason)


@pytest.fixture(scope="module", autouse=True)
def _isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Anything reading the global settings (e.g. worker.dispatch) uses a temp home and the test broker.

    Module-scoped, so the environment is restored before tests of other packages run.
    """
    saved = {k: os.environ.get(k) for k in ("THRIFTY_HOME", "THRIFTY_BROKER_URL")}
    os.environ["THRIFTY_HOME"] = str(tmp_path_factory.mktemp("home"))
    os.environ["THRIFTY_BROKER_URL"] = REDIS_URL
    _reset_global_caches()
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _reset_global_caches()


def _reset_global_caches() -> None:
    get_settings.cache_clear()
    if dispatch_installed():  # the Celery app is built from the settings once
        from worker.app import get_app

        get_app.cache_clear()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL on a new schema migrated to head; dropped at the end of the session."""
    admin = create_engine(PG_URL, connect_args={"connect_timeout": 3})
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to connect means "no server here"
        admin.dispose()
        _unreachable(f"PostgreSQL at {make_url(PG_URL).render_as_string()}", exc)
    schema = f"tnas_api_{uuid.uuid4().hex[:12]}"
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    rendered = url.render_as_string(hide_password=False)
    try:
        migrate.upgrade(rendered)
        yield rendered
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture
def factory(pg_engine: Engine) -> sessionmaker[Session]:
    """Sessions on emptied tables (each test starts from an empty database)."""
    with pg_engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(delete(table))
    return make_sessionmaker(pg_engine)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding a good phantom dataset and a broken copy (one label file unreadable)."""
    root = tmp_path_factory.mktemp("data")
    make_phantom_dataset(root / "phantom", num_cases=3, image_size=32)
    shutil.copytree(root / "phantom", root / "broken")
    (root / "broken" / GOOD_LABEL).write_bytes(b"this is not a NIfTI file")
    return root


@pytest.fixture
def settings(tmp_path: Path, pg_url: str, data_root: Path, factory: sessionmaker[Session]) -> Settings:
    return Settings(
        home=tmp_path / "home",
        database_url=pg_url,
        broker_url=REDIS_URL,
        artifact_dir=tmp_path / "artifacts",
        data_roots=[data_root],
        upload_dir=tmp_path / "uploads",
        api_key_pepper=PEPPER,
        max_attempts=4,
    )


def _no_server_errors(response: httpx.Response) -> None:
    assert response.status_code != 500, f"500 from {response.request.method} {response.request.url}"


def open_client(app: Any) -> TestClient:
    client = TestClient(app)
    client.event_hooks = {"request": [], "response": [_no_server_errors]}
    return client


@pytest.fixture
def job_queue() -> JobQueue | None:
    """The queue clients get: None, the app's own (Celery on the test Redis); a module may override it."""
    return None


@pytest.fixture
def make_client(settings: Settings, job_queue: JobQueue | None) -> Iterator[Callable[..., TestClient]]:
    """``make_client(upload_limits=None, queue=job_queue, **setting_changes)``: a started client, new app."""
    with ExitStack() as stack:

        def make(upload_limits: UploadLimits | None = None, queue: JobQueue | None = None,
                 **changes: Any) -> TestClient:
            app = create_app(settings.model_copy(update=changes), upload_limits=upload_limits,
                             queue=queue if queue is not None else job_queue)
            return stack.enter_context(open_client(app))

        yield make


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


@pytest.fixture
def make_user(factory: sessionmaker[Session]) -> Callable[[str], tuple[str, dict[str, str]]]:
    """``make_user(name)`` -> (user id, request headers carrying the user's key)."""

    def make(name: str) -> tuple[str, dict[str, str]]:
        with factory() as session:
            user, key = create_user_with_key(session, name, pepper=PEPPER)
            session.commit()
            return user.id, {"Authorization": f"Bearer {key}"}

    return make


@pytest.fixture
def alice(make_user: Callable[[str], tuple[str, dict[str, str]]]) -> tuple[str, dict[str, str]]:
    return make_user("alice")


@pytest.fixture
def bob(make_user: Callable[[str], tuple[str, dict[str, str]]]) -> tuple[str, dict[str, str]]:
    return make_user("bob")


@pytest.fixture
def add_dataset(factory: sessionmaker[Session], data_root: Path) -> Callable[..., str]:
    """Insert a ready dataset row directly (fast; registration itself is tested on its own)."""

    def add(owner_id: str, name: str = "phantom", **kwargs: Any) -> str:
        values: dict[str, Any] = {
            "path": str(data_root / "phantom"), "format": "nnunet", "num_cases": 3, "num_classes": 3,
            "labels": {"0": "background", "1": "organ_1", "2": "organ_2"}, **kwargs,
        }
        with factory() as session:
            dataset = create_dataset(session, owner_id=owner_id, name=name, **values)
            session.commit()
            return dataset.id

    return add


@pytest.fixture
def add_job(factory: sessionmaker[Session]) -> Callable[..., str]:
    """Insert a job directly; ``status`` and other columns are set after creation."""

    def add(owner_id: str, dataset_id: str, kind: str = "search", **columns: Any) -> str:
        with factory() as session:
            job = create_job(session, owner_id=owner_id, kind=kind, dataset_id=dataset_id,
                             config={"nodes": 2, "epochs": 3}, epochs=3).job
            for key, value in columns.items():
                setattr(job, key, value)
            session.commit()
            return job.id

    return add
