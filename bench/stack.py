"""The throwaway service stack that bench/service.py and bench/load.py measure: one copy of it.

``service_stack`` brings up what tests/integration/conftest.py does: a fresh PostgreSQL database
``thrifty_<label>_<random>`` migrated with ``store.migrate.upgrade`` (dropped at the end), a Redis
database (7 first; claimed with the integration tests' ``thrifty-integration-claim`` key with NX,
so neither side takes the other's; flushed at start and end), a temp home (artefacts, a SYNTHETIC
phantom dataset, logs; removed at the end), one ``uvicorn`` API process, one real ``celery -A
worker.app worker --pool solo -Q gpu`` process, a user with a key and the phantom registered
through the API. Everything is torn down in reverse order on success, on error and on Ctrl-C, and
on SIGTERM / SIGHUP once ``install_signal_handlers`` has run.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("THRIFTY_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_BASE = os.environ.get("THRIFTY_BENCH_REDIS_BASE", "redis://127.0.0.1:6379")
# 7 first; never 0 (others' default) nor 10 (the API tests'). The claim key is the one the
# integration fixture sets with NX, so a test session never takes a database we hold (and we
# never take one it holds).
REDIS_DBS = (7, 8, 6, 5, 4, 3, 2, 1)
CLAIM_KEY = "thrifty-integration-claim"
CLAIM_TTL_S = 3 * 3600  # longer than any run (a load run's drain may take an hour)
QUEUE = "gpu"
READY_TIMEOUT_S = 120.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    pass


class Terminated(BaseException):
    """SIGTERM / SIGHUP: unwind like Ctrl-C, so every cleanup runs."""


def _on_signal(signum: int, _frame: Any) -> None:
    raise Terminated(f"signal {signal.Signals(signum).name}")


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP raise ``Terminated``, so the stack's cleanups run as on Ctrl-C."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2,
             on_timeout: Callable[[], str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{on_timeout()}" if on_timeout else ""
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(interval)


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(p / 100 * len(ordered)))) - 1]


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of process ``pid`` in seconds (its threads included), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(parent: int) -> list[int]:
    """Processes whose parent is ``parent`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    found.append(int(entry.name))
    return sorted(found)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Child:
    name: str
    process: subprocess.Popen
    log_path: Path

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return f"(no log for {self.name})"
        return f"--- last lines of {self.name}'s log ---\n" + "\n".join(text.splitlines()[-lines:])

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM to its own process group, SIGKILL after ``grace_s`` (only processes this script started)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # a grandchild left in its group


@dataclass
class Stack:
    home: Path
    database_url: str
    redis_db: int
    env: dict[str, str]
    sessions: Any
    api_url: str = ""
    children: dict[str, Child] = field(default_factory=dict)
    user_id: str = ""
    key: str = ""
    dataset_id: str = ""
    redis: Any = None  # the claimed database's client (None in embedded mode)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    @property
    def api(self) -> Child | None:
        return self.children.get("uvicorn")

    @property
    def worker(self) -> Child | None:
        return self.children.get("worker")

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, headers=self.headers, timeout=30, **kwargs)

    def process_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("THRIFTY_")}
        return {**env, **self.env, "PYTHONUNBUFFERED": "1"}

    def tails(self) -> str:
        return "\n".join(child.tail() for child in self.children.values())

    def pids(self) -> dict[str, int | None]:
        """The API's and the worker's process ids (embedded: ``up`` serves the API and started the worker)."""
        if "up" in self.children:
            up = self.children["up"].process.pid
            return {"api": up, "worker": next(iter(child_pids(up)), None)}
        return {name: child.process.pid if child else None for name, child in (("api", self.api),
                                                                                ("worker", self.worker))}

    def start(self, name: str, argv: list[str]) -> Child:
        """Start ``argv`` in a session of its own (so its whole group can be stopped), logging to logs/NAME.log."""
        log_path = self.home / "logs" / f"{name}.log"
        with log_path.open("w") as out:
            proc = subprocess.Popen(argv, cwd=ROOT, env=self.process_env(), stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        child = Child(name, proc, log_path)
        self.children[name] = child
        return child


@contextlib.contextmanager
def redis_database() -> Iterator[tuple[int, Any]]:
    """A Redis database of this run alone (claimed with NX), flushed at start and end: (number, client)."""
    import redis

    try:
        redis.Redis.from_url(f"{REDIS_BASE}/0", socket_connect_timeout=3).ping()
    except Exception as exc:  # any failure to connect means "no server here"
        raise BenchError(f"Redis at {REDIS_BASE} is unreachable: {exc.__class__.__name__}: {exc}") from None
    token = uuid.uuid4().hex
    for number in REDIS_DBS:
        client = redis.Redis.from_url(f"{REDIS_BASE}/{number}", socket_connect_timeout=3)
        if client.set(CLAIM_KEY, token, nx=True, ex=CLAIM_TTL_S):
            break
        client.close()
    else:
        raise BenchError(f"every Redis database in {REDIS_DBS} is claimed ({CLAIM_KEY}); try again later")
    client.flushdb()
    client.set(CLAIM_KEY, token, ex=CLAIM_TTL_S)
    log(f"Redis database {number} claimed and flushed")
    try:
        yield number, client
    finally:
        with contextlib.suppress(Exception):
            client.flushdb()  # drops the claim too
        client.close()
        log(f"Redis database {number} flushed and released")


@contextlib.contextmanager
def postgres_database(prefix: str) -> Iterator[str]:
    """A new database ``<prefix><random>`` migrated to head; dropped (its connections too) at the end."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from store import migrate

    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to connect means "no server here"
        admin.dispose()
        raise BenchError(f"PostgreSQL at {make_url(PG_URL).render_as_string()} is unreachable: "
                         f"{exc.__class__.__name__}: {exc}") from None
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    log(f"PostgreSQL database {name} created")
    try:
        url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
        migrate.upgrade(url)
        yield url
    finally:
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            log(f"PostgreSQL database {name} dropped")
        finally:
            admin.dispose()


def wait_healthy(stack: Stack, child: Child, what: str) -> None:
    """Wait until ``stack.api_url`` answers /healthz; fail at once (with its log) if ``child`` exits."""

    def healthy() -> bool:
        if child.process.poll() is not None:
            raise BenchError(f"{what} exited with {child.process.returncode}\n{child.tail()}")
        try:
            return httpx.get(f"{stack.api_url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(healthy, READY_TIMEOUT_S, f"{what} to answer /healthz", on_timeout=child.tail)


def start_api(stack: Stack, app: str = "api.main:app", uvicorn_args: Sequence[str] = ()) -> None:
    port = free_port()
    stack.api_url = f"http://127.0.0.1:{port}"
    api = stack.start("uvicorn", [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
                                  *uvicorn_args])
    wait_healthy(stack, api, "the API server")
    log(f"API up at {stack.api_url} (pid {api.process.pid})")


def start_worker(stack: Stack, hostname: str) -> None:
    from cli.service import celery_worker_argv

    worker = stack.start("worker", celery_worker_argv(hostname, QUEUE))

    def ready() -> bool:
        if worker.process.poll() is not None:
            raise BenchError(f"the worker exited with {worker.process.returncode}\n{worker.tail()}")
        return " ready." in worker.log_path.read_text(errors="replace")

    wait_for(ready, READY_TIMEOUT_S, "the worker to be ready", on_timeout=worker.tail)
    log(f"worker ready (pid {worker.process.pid})")


def register_phantom(stack: Stack) -> None:
    """Register the phantom under the home's data root through the API, as a user would."""
    answer = httpx.post(f"{stack.api_url}/v1/datasets", json={"name": "phantom", "path": "phantom"},
                        headers=stack.headers, timeout=60)
    if answer.status_code != 201:
        raise BenchError(f"registering the phantom dataset: {answer.status_code} {answer.text}")
    stack.dataset_id = answer.json()["id"]


def cancel_live_jobs(stack: Stack) -> None:
    """Jobs left queued or running (an interrupted run) are cancelled before the worker stops."""
    from sqlalchemy import select

    from store.db import session_scope
    from store.jobs import request_cancel
    from store.models import Job, JobStatus

    with contextlib.suppress(Exception), session_scope(stack.sessions) as session:
        live = [JobStatus.QUEUED.value, JobStatus.RUNNING.value]
        for job_id in session.scalars(select(Job.id).where(Job.status.in_(live))).all():
            request_cancel(session, job_id)


def stop_children(stack: Stack) -> None:
    """Every process this script started, the last started first; each checked gone."""
    for child in reversed(list(stack.children.values())):
        child.stop()
        log(f"{child.name} stopped (exit {child.process.returncode})")


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    log(f"removed {path}")


def make_home(prefix: str) -> Path:
    home = Path(tempfile.mkdtemp(prefix=prefix))
    for folder in ("artifacts", "data", "logs", "src"):
        (home / folder).mkdir()
    return home


@contextlib.contextmanager
def service_stack(label: str, pepper: str, *, phantom_cases: int, phantom_size: int, app: str = "api.main:app",
                  uvicorn_args: Sequence[str] = ()) -> Iterator[Stack]:
    """The whole stack (see the module doc), named after ``label``; torn down in reverse order whatever happens."""
    from nas_core.data import make_phantom_dataset
    from store.db import make_engine, make_sessionmaker, session_scope
    from store.users import create_user_with_key

    stack: Stack | None = None
    with contextlib.ExitStack() as cleanup:
        try:
            home = make_home(f"thrifty-{label}-")
            cleanup.callback(remove_tree, home)
            redis_db, redis_client = cleanup.enter_context(redis_database())
            database_url = cleanup.enter_context(postgres_database(f"thrifty_{label}_"))
            env = {
                "THRIFTY_HOME": str(home),
                "THRIFTY_DATABASE_URL": database_url,
                "THRIFTY_BROKER_URL": f"{REDIS_BASE}/{redis_db}",
                "THRIFTY_ARTIFACT_DIR": str(home / "artifacts"),
                "THRIFTY_DATA_ROOTS": str(home / "data"),
                "THRIFTY_API_KEY_PEPPER": pepper,
            }
            engine = make_engine(database_url)
            cleanup.callback(engine.dispose)
            stack = Stack(home, database_url, redis_db, env, make_sessionmaker(engine), redis=redis_client)
            with session_scope(stack.sessions) as session:
                user, stack.key = create_user_with_key(session, f"{label}-{uuid.uuid4().hex[:8]}", pepper=pepper)
                stack.user_id = user.id
            make_phantom_dataset(home / "data" / "phantom", num_cases=phantom_cases, image_size=phantom_size,
                                 depth=1, num_classes=3, seed=0)
            cleanup.callback(stop_children, stack)  # after the jobs are cancelled (LIFO)
            cleanup.callback(cancel_live_jobs, stack)
            start_api(stack, app, uvicorn_args)
            start_worker(stack, f"{label}@%h")
            register_phantom(stack)
            yield stack
        except BaseException:
            if stack is not None:
                log("the benchmark stopped early; logs:\n" + stack.tails())
            raise
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
            log("cleaning up (jobs, processes, database, Redis, temp dir)")
