"""Real services for end-to-end tests: Redis, PostgreSQL, Celery worker processes, a uvicorn API.

Fixtures (all real, nothing in memory):

* ``services`` (session): a fresh PostgreSQL database ``thrifty_it_<random>`` migrated to
  head (dropped at the end), a Redis database of its own (claimed among 1-15, never 0 or
  the API tests' 10; flushed at start and end), a temp home with ``artifacts/`` and a
  data root ``data/``; ``.env`` holds the ``THRIFTY_*`` variables every child process gets
  (``THRIFTY_LEASE_SECONDS=3``, so a killed worker's job is re-queued within seconds).
* ``thrifty_env`` (module): the same variables in this test process's ``os.environ`` (so
  ``worker.dispatch.enqueue_job`` and ``store.db.session_scope()`` reach them), restored
  at the end of the module.
* ``start_worker`` (module): a factory ``start_worker(name="w1") -> WorkerProcess`` that
  starts a real ``celery -A worker.app worker --pool solo -Q gpu --concurrency 1`` process
  (the command ``thrifty-nas worker`` runs) and waits until it is ready; every process it
  started is killed at the end of the module, and jobs left queued or running are cancelled.
* ``celery_worker`` (module): one started worker.
* ``api_server`` (module): ``uvicorn api.main:app`` in a subprocess on a free port, ready
  (``GET /healthz``) before the test starts; ``.url``, ``.client()`` (an httpx.Client).
* ``api_user``: a new user and API key in the test database; ``.headers`` for requests.
* ``phantom_dataset`` (session): a SYNTHETIC nnU-Net dataset (6 cases, 32x32, 3 classes)
  under the data root (register it by path ``phantom``).

Redis or PostgreSQL down: the tests are skipped with the reason, unless ``CI=true``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from cli.service import celery_worker_argv
from nas_core.data import make_phantom_dataset
from store import migrate
from store.db import make_engine, make_sessionmaker, session_scope
from store.jobs import request_cancel
from store.models import Job, JobStatus
from store.users import create_user_with_key

ROOT = Path(__file__).resolve().parents[2]
PG_URL = os.environ.get("THRIFTY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_BASE = os.environ.get("THRIFTY_TEST_REDIS_BASE", "redis://127.0.0.1:6379")
REDIS_DBS = (9, 11, 12, 13, 14, 15, 1, 2, 3, 4, 5, 6, 7, 8)  # 0: others' default; 10: the API tests'
CLAIM_KEY = "thrifty-integration-claim"
PEPPER = "integration-test-pepper"
LEASE_SECONDS = 3
READY_TIMEOUT_S = 90.0


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: it is required)")
    pytest.skip(reason)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2,
             on_timeout: Callable[[], str] | None = None) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{on_timeout()}" if on_timeout else ""
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(interval)


# -- Redis and PostgreSQL ------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis database of this session alone (claimed atomically), flushed at start and end."""
    import redis

    token = uuid.uuid4().hex
    try:
        redis.Redis.from_url(f"{REDIS_BASE}/0", socket_connect_timeout=3).ping()
    except Exception as exc:  # any failure to connect means "no server here"
        _unavailable(f"Redis at {REDIS_BASE} is unreachable: {exc.__class__.__name__}: {exc}")
    for number in REDIS_DBS:
        client = redis.Redis.from_url(f"{REDIS_BASE}/{number}")
        if client.set(CLAIM_KEY, token, nx=True, ex=3600):
            break
        client.close()
    else:
        pytest.fail(f"every Redis database in {REDIS_DBS} is claimed by another test session ({CLAIM_KEY})")
    client.flushdb()
    client.set(CLAIM_KEY, token, ex=3600)
    try:
        yield f"{REDIS_BASE}/{number}"
    finally:
        client.flushdb()  # also drops the claim
        client.close()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A new PostgreSQL database migrated to head; dropped (connections and all) at the end."""
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to connect means "no server here"
        admin.dispose()
        _unavailable(f"PostgreSQL at {make_url(PG_URL).render_as_string()} is unreachable: "
                     f"{exc.__class__.__name__}: {exc}")
    name = f"thrifty_it_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@dataclass
class Services:
    home: Path
    database_url: str
    broker_url: str
    artifact_dir: Path
    data_root: Path
    env: dict[str, str]  # THRIFTY_* for child processes (merged into a copy of os.environ)
    sessions: sessionmaker[Session]

    def process_env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("THRIFTY_")}
        return {**env, **self.env, "PYTHONUNBUFFERED": "1", **extra}


@pytest.fixture(scope="session")
def services(redis_url: str, database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    home = tmp_path_factory.mktemp("thrifty-home")
    artifact_dir, data_root = home / "artifacts", home / "data"
    for folder in (artifact_dir, data_root):
        folder.mkdir()
    env = {
        "THRIFTY_HOME": str(home),
        "THRIFTY_DATABASE_URL": database_url,
        "THRIFTY_BROKER_URL": redis_url,
        "THRIFTY_ARTIFACT_DIR": str(artifact_dir),
        "THRIFTY_DATA_ROOTS": str(data_root),
        "THRIFTY_API_KEY_PEPPER": PEPPER,
        "THRIFTY_LEASE_SECONDS": str(LEASE_SECONDS),
    }
    engine = make_engine(database_url)
    yield Services(home, database_url, redis_url, artifact_dir, data_root, env, make_sessionmaker(engine))
    engine.dispose()


def _clear_global_caches() -> None:
    from store.db import get_engine, get_sessionmaker
    from store.settings import get_settings
    from worker.app import get_app

    for cached in (get_settings, get_engine, get_sessionmaker, get_app):
        cached.cache_clear()


@pytest.fixture(scope="module")
def thrifty_env(services: Services) -> Iterator[Services]:
    """``services.env`` applied to this process's environment for one module, then restored."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("THRIFTY_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(services.env)
    _clear_global_caches()
    try:
        yield services
    finally:
        for key in services.env:
            os.environ.pop(key, None)
        os.environ.update(saved)
        _clear_global_caches()


@pytest.fixture(scope="session")
def phantom_dataset(services: Services) -> Path:
    """A SYNTHETIC nnU-Net dataset under the data root: ``{data_root}/phantom``."""
    return make_phantom_dataset(services.data_root / "phantom", num_cases=6, image_size=32, depth=1,
                                num_classes=3, seed=0)


# -- worker processes ------------------------------------------------------------------------


@dataclass
class WorkerProcess:
    """A real Celery worker process (solo pool, one job at a time) and its log file."""

    name: str
    process: subprocess.Popen
    log_path: Path
    _log: Any = field(repr=False, default=None)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return f"--- last lines of worker {self.name}'s log ---\n" + "\n".join(self.log().splitlines()[-lines:])

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> WorkerProcess:
        def ready() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"worker {self.name} exited with {self.process.returncode}\n{self.tail()}")
            return " ready." in self.log()

        wait_for(ready, timeout, f"worker {self.name} to be ready", on_timeout=self.tail)
        return self

    def kill(self) -> None:
        """SIGKILL, as when a machine dies: no cleanup runs in the worker."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (warm shutdown), then SIGKILL after ``timeout``; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        if self._log is not None:
            self._log.close()
        return self.process.returncode


def _cancel_leftovers(sessions: sessionmaker[Session]) -> None:
    """Cancel jobs a module left queued or running, so the next module's workers do not run them."""
    with session_scope(sessions) as session:
        live = [JobStatus.QUEUED.value, JobStatus.RUNNING.value]
        for job_id in session.scalars(select(Job.id).where(Job.status.in_(live))).all():
            request_cancel(session, job_id)


@pytest.fixture(scope="module")
def start_worker(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., WorkerProcess]]:
    """``start_worker(name="w1", wait=True, queues="gpu")``: a new, ready worker process."""
    started: list[WorkerProcess] = []
    logs = tmp_path_factory.mktemp("worker-logs")

    def start(name: str = "w1", *, wait: bool = True, queues: str = "gpu") -> WorkerProcess:
        log_path = logs / f"{name}-{len(started)}.log"
        log_file = log_path.open("w")
        proc = subprocess.Popen(celery_worker_argv(f"{name}@%h", queues), cwd=ROOT, env=services.process_env(),
                                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        worker = WorkerProcess(name, proc, log_path, log_file)
        started.append(worker)
        return worker.wait_ready() if wait else worker

    try:
        yield start
    finally:
        for worker in started:
            worker.kill()
            if worker._log is not None:
                worker._log.close()
        _cancel_leftovers(services.sessions)


@pytest.fixture(scope="module")
def celery_worker(start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    """One running worker on the ``gpu`` queue for the module's tests."""
    return start_worker("it-worker")


# -- the API server ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ApiServer:
    url: str
    process: subprocess.Popen
    log_path: Path

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def tail(self, lines: int = 40) -> str:
        text_ = self.log_path.read_text(errors="replace")
        return "--- last lines of the API server's log ---\n" + "\n".join(text_.splitlines()[-lines:])


@pytest.fixture(scope="module")
def api_server(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """``uvicorn api.main:app`` on a free port with the services' environment, ready to serve."""
    import importlib.util

    if importlib.util.find_spec("api.main") is None:
        _unavailable("api/main.py does not exist yet: no API to serve")
    port = _free_port()
    log_path = tmp_path_factory.mktemp("api-log") / "uvicorn.log"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=services.process_env(), stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    server = ApiServer(f"http://127.0.0.1:{port}", proc, log_path)

    def healthy() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"the API server exited with {proc.returncode}\n{server.tail()}")
        try:
            return httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(healthy, READY_TIMEOUT_S, "the API server to answer /healthz", on_timeout=server.tail)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


@dataclass
class ApiUser:
    user_id: str
    name: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture
def api_user(services: Services) -> ApiUser:
    """A new user (unique name) with an API key, committed to the test database."""
    name = f"lab-{uuid.uuid4().hex[:8]}"
    with session_scope(services.sessions) as session:
        user, key = create_user_with_key(session, name, pepper=PEPPER)
        return ApiUser(user.id, name, key)
