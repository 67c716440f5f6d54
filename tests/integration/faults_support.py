"""What the fault tests break and mend: their own Redis, a TCP proxy to PostgreSQL, processes.

Nothing here touches the machine's shared Redis (6379) or PostgreSQL server: a fault test
starts its own throwaway ``redis-server`` (no persistence) and reaches PostgreSQL through
a :class:`TcpProxy` it can cut. Every process started here is registered with a
:class:`Processes` and killed by its ``close()`` (the fixtures call it).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from cli.service import celery_worker_argv
from store.datasets import create_dataset
from store.db import session_scope
from store.jobs import create_job, get_job
from store.models import Job
from store.users import create_user_with_key
from tests.integration.conftest import (
    PEPPER,
    READY_TIMEOUT_S,
    ROOT,
    ApiServer,
    ApiUser,
    Services,
    WorkerProcess,
    wait_for,
)

SEARCH = {"epochs": 3, "warmup_epochs": 1, "image_size": 32, "batch_size": 2, "channels": 8, "k": 2, "depth": 3}
RETRAIN = {"epochs": 2, "image_size": 32, "batch_size": 2}
FINISHED = ("succeeded", "failed", "cancelled")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- a Redis server of our own ------------------------------------------------------------------


class RedisServer:
    """``redis-server`` on a free port, without persistence: a restart loses every message."""

    def __init__(self, log_dir: Path) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed: no throwaway broker to break")
        self.port = free_port()
        self.log_dir = log_dir
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.starts += 1
        log = (self.log_dir / f"redis-{self.starts}.log").open("w")
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_for(self.ping, 20, f"redis-server on port {self.port} to answer")
        return self

    def ping(self) -> bool:
        import redis

        try:
            client = redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except redis.RedisError:
            return False

    def llen(self, key: str) -> int:
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=1)
        try:
            return int(client.llen(key))
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: as a crash; with no persistence every queued and unacknowledged message is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


# -- a TCP proxy we can cut ---------------------------------------------------------------------


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target``; ``stop()`` refuses new connections and cuts
    the open ones (the database is "unreachable"), ``start()`` serves again on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._running = threading.Event()

    def url_for(self, database_url: str) -> str:
        """``database_url`` with its host and port replaced by this proxy's."""
        return make_url(database_url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    def start(self) -> TcpProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.2)
        self._listener = listener
        self._running.set()
        self._thread = threading.Thread(target=self._accept, name=f"proxy-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._running.clear()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            with contextlib.suppress(OSError):
                conn.close()  # with linger 0: a reset, as when the server's host vanished

    @property
    def running(self) -> bool:
        return self._running.is_set()

    def _accept(self) -> None:
        assert self._listener is not None
        while self._running.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        try:
            for sock in (a, b):
                sock.setblocking(False)
                sel.register(sock, selectors.EVENT_READ)
            while True:
                for key, _ in sel.select(timeout=0.5):
                    src = key.fileobj
                    dst = b if src is a else a
                    data = src.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    dst.setblocking(True)
                    dst.sendall(data)
                    dst.setblocking(False)
        except (OSError, ValueError):
            return
        finally:
            sel.close()
            with self._lock:
                self._conns.discard(a)
                self._conns.discard(b)
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.close()


# -- processes ------------------------------------------------------------------------------------


class Processes:
    """Workers and API servers started with extra environment; ``close()`` kills them all."""

    def __init__(self, services: Services, log_dir: Path) -> None:
        self.services, self.log_dir = services, log_dir
        self.workers: list[WorkerProcess] = []
        self.apis: list[ApiServer] = []

    def worker(self, name: str, *, wait: bool = True, **env: str) -> WorkerProcess:
        log_path = self.log_dir / f"{name}-{len(self.workers)}.log"
        log_file = log_path.open("w")
        proc = subprocess.Popen(celery_worker_argv(f"{name}@%h", "gpu"), cwd=ROOT,
                                env=self.services.process_env(**env), stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)
        worker = WorkerProcess(name, proc, log_path, log_file)
        self.workers.append(worker)
        return worker.wait_ready() if wait else worker

    def api(self, *, port: int | None = None, **env: str) -> ApiServer:
        port = port or free_port()
        log_path = self.log_dir / f"api-{len(self.apis)}.log"
        with log_path.open("w") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port)],
                cwd=ROOT, env=self.services.process_env(**env), stdout=log_file, stderr=subprocess.STDOUT,
                start_new_session=True)
        server = ApiServer(f"http://127.0.0.1:{port}", proc, log_path)
        self.apis.append(server)

        def healthy() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"the API server exited with {proc.returncode}\n{server.tail()}")
            try:
                return httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(healthy, READY_TIMEOUT_S, "the API server to answer /healthz", on_timeout=server.tail)
        return server

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
            if worker._log is not None:
                worker._log.close()
        for server in self.apis:
            kill_api(server)


def kill_api(server: ApiServer) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGKILL)
    server.process.wait(timeout=15)


@contextlib.contextmanager
def processes(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    procs = Processes(services, tmp_path_factory.mktemp("fault-logs"))
    try:
        yield procs
    finally:
        procs.close()


# -- jobs -------------------------------------------------------------------------------------------


def new_user(sessions: sessionmaker[Session]) -> ApiUser:
    name = f"faults-{uuid.uuid4().hex[:8]}"
    with session_scope(sessions) as session:
        user, key = create_user_with_key(session, name, pepper=PEPPER)
        return ApiUser(user.id, name, key)


def new_dataset(sessions: sessionmaker[Session], owner_id: str, path: Path) -> str:
    with session_scope(sessions) as session:
        return create_dataset(session, owner_id=owner_id, name=f"{path.name}-{uuid.uuid4().hex[:6]}",
                              path=str(path), format="nnunet", num_cases=6, num_classes=3, synthetic=True).id


def add_job(sessions: sessionmaker[Session], owner_id: str, dataset_id: str, kind: str, config: dict[str, Any],
            architecture: dict[str, Any] | None = None) -> str:
    """A committed queued job (its message is the caller's business)."""
    with session_scope(sessions) as session:
        return create_job(session, owner_id=owner_id, kind=kind, dataset_id=dataset_id, config=config,
                          epochs=config["epochs"], architecture=architecture).job.id


def job_row(sessions: sessionmaker[Session], job_id: str) -> Job:
    with session_scope(sessions) as session:
        job = get_job(session, job_id)
        assert job is not None
        return job


def wait_finished(sessions: sessionmaker[Session], job_ids: list[str], timeout: float, *logs: Any) -> list[Job]:
    def finished() -> list[Job] | None:
        jobs = [job_row(sessions, job_id) for job_id in job_ids]
        return jobs if all(job.status in FINISHED for job in jobs) else None

    def tails() -> str:
        states = [(j.id, j.status, j.attempt, j.epoch) for j in (job_row(sessions, i) for i in job_ids)]
        return f"jobs: {states}\n" + "\n".join(item.tail() for item in logs)

    return wait_for(finished, timeout, f"jobs {job_ids} to finish", interval=0.3, on_timeout=tails)


def env_without(*keys: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in keys}


def elapsed(t0: float) -> str:
    return f"{time.monotonic() - t0:.1f}s"
