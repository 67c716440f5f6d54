"""Service benchmark: the real stack (uvicorn API + Celery worker + Redis + PostgreSQL) on this machine.

Run from the repository root::

    .venv/bin/python bench/service.py                 # readable (markdown) table on stdout
    .venv/bin/python bench/service.py --json          # one JSON object on stdout
    .venv/bin/python bench/service.py --seconds 10 --concurrency 8 --jobs 15 --artifact-mb 64

It brings up a throwaway stack of its own (``bench.stack``, which bench/load.py shares), as
tests/integration/conftest.py does: a fresh
PostgreSQL database ``thrifty_bench_<random>`` migrated with ``store.migrate.upgrade``
(dropped at the end), a Redis database (7 by default; claimed with the integration tests'
``thrifty-integration-claim`` key so their fixture skips it, flushed at start and end), a
temp home (artefacts, a SYNTHETIC phantom dataset, logs; removed at the end), one real
``celery -A worker.app worker --pool solo -Q gpu`` process and ``uvicorn api.main:app``.
Everything is torn down on success, on error and on Ctrl-C / SIGTERM.

Measured, in one run (progress on stderr):

1. ``GET /v1/jobs/{id}`` throughput as a ratio to ``GET /healthz`` of the same server, with
   ``--concurrency`` httpx.AsyncClient clients (keep-alive) in one event loop. The two
   endpoints alternate in short windows (``--rounds`` windows of ``--seconds / --rounds``
   each, the order flipped every round, after a warm-up window of each), so a change in the
   machine's load hits both. Reported: requests/s, p50/p99 latency, the API server's CPU
   time per request (utime+stime of the uvicorn process over the windows) and this
   process's (the clients') CPU per request. Goal: ratio >= 0.5.
2. Submit-to-running latency with an idle worker: ``--jobs`` tiny searches (plus one
   warm-up), ONE AT A TIME: POST /v1/searches, poll GET /v1/jobs/{id} every 20 ms until it
   reads ``running`` (time from the POST's 202 to that poll's answer), cancel it, wait
   until it is cancelled and the worker is idle again. Also from the job row: ``created_at``
   (set by the API) to ``started_at`` (set by the worker's claim). Goal: p50 < 1 s.
3. Artefact download throughput: a ``--artifact-mb`` MiB random file stored with
   ``ArtifactStore.put_file`` + ``register_artifact`` for a job of the benchmark user,
   downloaded through the API (httpx streaming, raw bytes counted), rotated with the same
   download read by a hand-written GET and ``recv_into`` (the server's speed without httpx's
   parsing), plain reads of the same file (256 KiB ``read()`` calls; all from the page cache)
   and the file sent by ``socket.sendfile`` over plain loopback TCP to ``recv_into``, and
   the file from a bare HTTP server (a fixed head, then ``sendfile``) read by httpx: what the
   httpx client alone can reach. Reported: MB/s of each and the ratios. Goal: the httpx
   download >= 0.8x plain TCP.

Percentiles are nearest-rank; with fewer than 100 samples p99 is the maximum.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.stack import (  # noqa: E402
    BenchError,
    Stack,
    Terminated,
    install_signal_handlers,
    log,
    percentile,
    proc_cpu_s,
    service_stack,
    wait_for,
)

PEPPER = "bench-service-pepper"
JOB_STEP_TIMEOUT_S = 90.0
POLL_S = 0.020
READ_CHUNK = 256 * 1024  # the clients' read size for the disk, plain TCP and recv_into transfers
MIB = 1024 * 1024
SEARCH = {"epochs": 200, "warmup_epochs": 1, "image_size": 32, "batch_size": 2, "channels": 8, "k": 2,
          "depth": 3}
GOAL_GET_RATIO = 0.5
GOAL_SUBMIT_P50_S = 1.0
GOAL_DOWNLOAD_TCP_RATIO = 0.8  # the API download (httpx) over plain loopback TCP
MAX_REQUESTS_PER_WINDOW = 2_000_000
MAX_ERRORS_PER_WINDOW = 200


def bench_stack(app: str = "api.main:app") -> contextlib.AbstractContextManager[Stack]:
    """bench.stack's throwaway stack: database ``thrifty_bench_<random>``, a 6-case 32x32 phantom, uvicorn
    with its default logging (access log included)."""
    return service_stack("bench", PEPPER, phantom_cases=6, phantom_size=32, app=app)


# -- 2. submit to running ------------------------------------------------------------------------


TERMINAL = {"succeeded", "failed", "cancelled"}


def _poll_status(client: httpx.Client, job_id: str, wanted: set[str], interval: float, timeout: float,
                 stack: Stack) -> tuple[dict[str, Any], float]:
    """Poll until the job's status is in ``wanted`` (or terminal); (job, perf_counter at that answer)."""
    deadline = time.perf_counter() + timeout
    for _ in range(int(timeout / interval) + 10):
        answer = client.get(f"/v1/jobs/{job_id}")
        seen = time.perf_counter()
        if answer.status_code != 200:
            raise BenchError(f"GET /v1/jobs/{job_id}: {answer.status_code} {answer.text}")
        job = answer.json()
        if job["status"] in wanted or job["status"] in TERMINAL:
            return job, seen
        if seen > deadline:
            break
        time.sleep(interval)
    raise BenchError(f"job {job_id} did not reach {sorted(wanted)} in {timeout:.0f}s\n{stack.tails()}")


def _wait_worker_idle(stack: Stack, job_id: str) -> None:
    """Until the worker has returned from this job's task (worker.app.ThriftyTask.after_return logs
    ``task thrifty.run_job[<job_id>.<hex>] <state> in <s>s``), then a moment for the ack and the next poll."""
    assert stack.worker is not None
    done = re.compile(rf"run_job\[{re.escape(job_id)}\.\w+\] \w+ in ")
    wait_for(lambda: done.search(stack.worker.log_path.read_text(errors="replace")), JOB_STEP_TIMEOUT_S,
             f"the worker to finish the task of {job_id}", interval=0.05, on_timeout=stack.worker.tail)
    time.sleep(0.2)


def submit_to_running(stack: Stack, jobs: int) -> dict[str, Any]:
    from store.db import session_scope
    from store.models import Job

    poll_s: list[float] = []
    db_s: list[float] = []
    post_s: list[float] = []
    cancel_s: list[float] = []
    job_ids: list[str] = []
    with stack.client() as client:
        for index in range(jobs + 1):  # the first one warms up (the API's broker connection, the worker)
            sent = time.perf_counter()
            answer = client.post("/v1/searches", json={"dataset_id": stack.dataset_id, "config": SEARCH})
            accepted = time.perf_counter()
            if answer.status_code != 202:
                raise BenchError(f"POST /v1/searches: {answer.status_code} {answer.text}")
            job_id = answer.json()["id"]
            job, seen = _poll_status(client, job_id, {"running"}, POLL_S, JOB_STEP_TIMEOUT_S, stack)
            if job["status"] != "running":
                raise BenchError(f"job {job_id} went {job['status']} before running: {job['error']}\n"
                                 f"{stack.tails()}")
            cancel_at = time.perf_counter()
            cancelled = client.post(f"/v1/jobs/{job_id}/cancel")
            if cancelled.status_code not in (200, 202):
                raise BenchError(f"cancel {job_id}: {cancelled.status_code} {cancelled.text}")
            job, done = _poll_status(client, job_id, TERMINAL, 0.05, JOB_STEP_TIMEOUT_S, stack)
            with session_scope(stack.sessions) as session:
                row = session.get(Job, job_id)
                assert row is not None and row.started_at is not None
                created, started = row.created_at, row.started_at
            _wait_worker_idle(stack, job_id)
            if index == 0:
                log(f"warm-up job {job_id}: running {seen - accepted:.3f}s after the 202, ended {job['status']}")
                job_ids.append(job_id)
                continue
            job_ids.append(job_id)
            poll_s.append(seen - accepted)
            post_s.append(accepted - sent)
            db_s.append((started - created).total_seconds())
            cancel_s.append(done - cancel_at)
            log(f"job {index}/{jobs}: running {poll_s[-1]:.3f}s after the 202 (row: created->started "
                f"{db_s[-1]:.3f}s), {job['status']} {cancel_s[-1]:.2f}s after the cancel")
    return {
        "jobs": jobs,
        "config": SEARCH,
        "poll_interval_s": POLL_S,
        "poll_s": poll_s,
        "db_s": db_s,
        "poll_p50_s": percentile(poll_s, 50),
        "poll_p99_s": percentile(poll_s, 99),
        "db_p50_s": percentile(db_s, 50),
        "db_p99_s": percentile(db_s, 99),
        "post_p50_s": percentile(post_s, 50),
        "cancel_to_terminal_p50_s": percentile(cancel_s, 50),
        "job_ids": job_ids,
    }


# -- 1. GET /v1/jobs/{id} vs /healthz ------------------------------------------------------------


@dataclass
class Window:
    path: str
    requests: int
    errors: int
    elapsed_s: float
    server_cpu_s: float | None
    client_cpu_s: float
    latencies: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s > 0 else 0.0


async def _window(clients: list[httpx.AsyncClient], path: str, seconds: float, server_pid: int) -> Window:
    latencies: list[float] = []
    state = {"requests": 0, "errors": 0}
    end = time.perf_counter() + seconds

    async def one(client: httpx.AsyncClient) -> None:
        while (time.perf_counter() < end and state["requests"] < MAX_REQUESTS_PER_WINDOW
               and state["errors"] < MAX_ERRORS_PER_WINDOW):
            started = time.perf_counter()
            try:
                answer = await client.get(path)
                ok = answer.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - started)
                state["requests"] += 1
            else:
                state["errors"] += 1

    cpu0, client0, t0 = proc_cpu_s(server_pid), time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(c) for c in clients))
    elapsed = time.perf_counter() - t0
    cpu1, client1 = proc_cpu_s(server_pid), time.process_time()
    server_cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    return Window(path, state["requests"], state["errors"], elapsed, server_cpu, client1 - client0, latencies)


async def _get_rounds(stack: Stack, job_id: str, seconds: float, rounds: int, concurrency: int
                      ) -> list[tuple[Window, Window]]:
    assert stack.api is not None
    pid = stack.api.process.pid
    paths = ("/healthz", f"/v1/jobs/{job_id}")
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    clients = [httpx.AsyncClient(base_url=stack.api_url, headers=stack.headers, timeout=30, limits=limits)
               for _ in range(concurrency)]
    try:
        for path in paths:  # warm-up: connections, the server's pools and caches
            warm = await _window(clients, path, 1.0, pid)
            if warm.errors or not warm.requests:
                raise BenchError(f"warm-up of {path}: {warm.requests} ok, {warm.errors} errors\n{stack.tails()}")
        out: list[tuple[Window, Window]] = []
        for index in range(rounds):
            order = paths if index % 2 == 0 else paths[::-1]
            got = {path: await _window(clients, path, seconds / rounds, pid) for path in order}
            health, job = got[paths[0]], got[paths[1]]
            log(f"round {index + 1}/{rounds}: /healthz {health.rps:.0f} req/s, /v1/jobs/{{id}} {job.rps:.0f} "
                f"req/s, ratio {job.rps / health.rps:.3f}; load {os.getloadavg()[0]:.2f}")
            out.append((health, job))
        return out
    finally:
        for client in clients:
            await client.aclose()


def _summary(windows: list[Window]) -> dict[str, Any]:
    requests = sum(w.requests for w in windows)
    elapsed = sum(w.elapsed_s for w in windows)
    latencies = [x for w in windows for x in w.latencies]
    server = [w.server_cpu_s for w in windows]
    return {
        "requests": requests,
        "errors": sum(w.errors for w in windows),
        "seconds": elapsed,
        "rps": requests / elapsed if elapsed else 0.0,
        "p50_ms": 1000 * (percentile(latencies, 50) or 0.0),
        "p99_ms": 1000 * (percentile(latencies, 99) or 0.0),
        "server_cpu_ms_per_request": (1000 * sum(server) / requests  # type: ignore[arg-type]
                                      if requests and None not in server else None),
        "client_cpu_ms_per_request": 1000 * sum(w.client_cpu_s for w in windows) / requests if requests else None,
    }


def get_throughput(stack: Stack, job_id: str, seconds: float, rounds: int, concurrency: int) -> dict[str, Any]:
    pairs = asyncio.run(_get_rounds(stack, job_id, seconds, rounds, concurrency))
    health = _summary([h for h, _ in pairs])
    job = _summary([j for _, j in pairs])
    per_round = [j.rps / h.rps for h, j in pairs if h.rps]
    cpu_ratio = (health["server_cpu_ms_per_request"] / job["server_cpu_ms_per_request"]
                 if health["server_cpu_ms_per_request"] and job["server_cpu_ms_per_request"] else None)
    return {
        "concurrency": concurrency,
        "rounds": rounds,
        "window_s": seconds / rounds,
        "healthz": health,
        "job": job,
        "ratio": job["rps"] / health["rps"] if health["rps"] else 0.0,
        "ratio_per_round": per_round,
        "ratio_median_of_rounds": statistics.median(per_round) if per_round else None,
        "server_cpu_ratio": cpu_ratio,  # healthz CPU/request over job CPU/request: less sensitive to others' load
    }


# -- 3. artefact download ------------------------------------------------------------------------


def _make_artifact(stack: Stack, job_id: str, size_mb: int) -> tuple[str, Path, int, str]:
    from store.artifacts import ArtifactStore, register_artifact
    from store.db import session_scope
    from store.models import ArtifactKind

    src = stack.home / "src" / "payload.bin"
    with src.open("wb") as out:
        for _ in range(size_mb):
            out.write(os.urandom(MIB))
    name = f"bench-{size_mb}MiB.bin"
    store = ArtifactStore(stack.home / "artifacts")
    stored = store.put_file(job_id, name, src, ArtifactKind.BUNDLE)
    with session_scope(stack.sessions) as session:
        register_artifact(session, job_id=job_id, owner_id=stack.user_id, name=name, kind=ArtifactKind.BUNDLE,
                          stored=stored)
    src.unlink()
    return name, store.path_of(stored.location), stored.size, stored.sha256


def _download(client: httpx.Client, url: str, verify: bool = False) -> tuple[int, float, str | None]:
    digest = hashlib.sha256() if verify else None
    received = 0
    started = time.perf_counter()
    with client.stream("GET", url) as answer:
        if answer.status_code != 200:
            answer.read()
            raise BenchError(f"GET {url}: {answer.status_code} {answer.text}")
        for chunk in answer.iter_raw():
            received += len(chunk)
            if digest is not None:
                digest.update(chunk)
    return received, time.perf_counter() - started, digest.hexdigest() if digest else None


def _read_file(path: Path) -> tuple[int, float]:
    received = 0
    started = time.perf_counter()
    with path.open("rb", buffering=0) as f:
        for _ in range(path.stat().st_size // READ_CHUNK + 2):
            chunk = f.read(READ_CHUNK)
            if not chunk:
                break
            received += len(chunk)
    return received, time.perf_counter() - started


class SendfileServer:
    """Plain loopback TCP: each connection gets the file by ``socket.sendfile``, then EOF. With ``http``, the
    request's head is read first and a minimal 200 head sent: the fastest HTTP server an httpx client can meet."""

    def __init__(self, path: Path, connections: int, http: bool = False) -> None:
        self.path = path
        self.http = http
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(60)
        self.port = int(self.sock.getsockname()[1])
        self.thread = threading.Thread(target=self._serve, args=(connections,), daemon=True)
        self.thread.start()

    def _serve(self, connections: int) -> None:
        for _ in range(connections):
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed, or no client within the timeout
                return
            with conn, self.path.open("rb") as f, contextlib.suppress(OSError):
                if self.http:
                    request = b""
                    while b"\r\n\r\n" not in request and len(request) < 65536:
                        request += conn.recv(65536) or b"\r\n\r\n"
                    conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: "
                                 f"{self.path.stat().st_size}\r\nConnection: close\r\n\r\n".encode())
                conn.sendfile(f)

    def close(self) -> None:
        self.sock.close()
        self.thread.join(timeout=10)


def _drain(sock: socket.socket, buffer: memoryview, size: int) -> int:
    """Bytes received until EOF, by ``recv_into`` of one buffer (no copy, no parsing)."""
    received = 0
    for _ in range(size // 512 + 1000):
        count = sock.recv_into(buffer)
        if not count:
            break
        received += count
    return received


def _read_tcp(port: int, size: int) -> tuple[int, float]:
    buffer = memoryview(bytearray(READ_CHUNK))
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        received = _drain(sock, buffer, size)
    return received, time.perf_counter() - started


def _read_http(stack: Stack, url: str, size: int) -> tuple[int, float]:
    """The API's download read like the plain TCP reference: a GET written by hand (Connection: close),
    the head parsed, then the body counted by ``recv_into`` until EOF. The server's speed, without httpx's."""
    target = httpx.URL(stack.api_url)
    lines = [f"GET {url} HTTP/1.1", f"Host: {target.host}:{target.port}", "Connection: close",
             *(f"{k}: {v}" for k, v in stack.headers.items())]
    buffer = memoryview(bytearray(READ_CHUNK))
    started = time.perf_counter()
    with socket.create_connection((target.host, target.port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head = b""
        while b"\r\n\r\n" not in head:
            count = sock.recv_into(buffer)
            if not count:
                raise BenchError(f"GET {url}: the connection closed before the response's head")
            head += bytes(buffer[:count])
        head, _, body = head.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200 ") or f"content-length: {size}\r\n".encode() not in head.lower() + b"\r\n":
            raise BenchError(f"GET {url}: unexpected head {head[:300]!r}")
        received = len(body) + _drain(sock, buffer, size)
    return received, time.perf_counter() - started


def download_throughput(stack: Stack, job_id: str, size_mb: int, rounds: int) -> dict[str, Any]:
    assert stack.api is not None
    pid = stack.api.process.pid
    name, path, size, sha256 = _make_artifact(stack, job_id, size_mb)
    url = f"/v1/jobs/{job_id}/artifacts/{name}"
    server_cpu: list[float] = []
    client_cpu: list[float] = []
    tcp = SendfileServer(path, rounds + 1)
    bare = SendfileServer(path, rounds + 1, http=True)
    bare_url = f"http://127.0.0.1:{bare.port}/{name}"
    with stack.client() as client, contextlib.closing(tcp), contextlib.closing(bare):

        def api() -> tuple[int, float]:
            cpu0, mine0 = proc_cpu_s(pid), time.process_time()
            got, seconds = _download(client, url)[:2]
            cpu1, mine1 = proc_cpu_s(pid), time.process_time()
            client_cpu.append(mine1 - mine0)
            if cpu0 is not None and cpu1 is not None:
                server_cpu.append(cpu1 - cpu0)
            return got, seconds

        transfers: dict[str, Callable[[], tuple[int, float]]] = {
            "api": api,  # the API, read by httpx
            "raw": lambda: _read_http(stack, url, size),  # the API, read by recv_into
            "disk": lambda: _read_file(path),
            "tcp": lambda: _read_tcp(tcp.port, size),  # sendfile -> recv_into, no HTTP
            "bare": lambda: _download(client, bare_url)[:2],  # a bare sendfile HTTP server, read by httpx
        }
        received, _, digest = _download(client, url, verify=True)  # untimed: correctness, warm page cache
        if received != size or digest != sha256:
            raise BenchError(f"download of {name}: {received} bytes, sha256 {digest}; expected {size}, {sha256}")
        for transfer in list(transfers.values())[1:]:
            transfer()  # untimed: connections, caches
        client_cpu.clear()
        server_cpu.clear()
        order = list(transfers)
        times: dict[str, list[float]] = {step: [] for step in order}
        for index in range(rounds):
            for step in order[index % len(order):] + order[:index % len(order)]:
                got, seconds = transfers[step]()
                if got != size:
                    raise BenchError(f"{step} read {got} bytes of {size}")
                times[step].append(seconds)
            log(f"download round {index + 1}/{rounds}: " + ", ".join(
                f"{step} {size / 1e6 / times[step][-1]:.0f} MB/s" for step in order))
    api_s, raw_s, disk_s, tcp_s, bare_s = (times[step] for step in ("api", "raw", "disk", "tcp", "bare"))
    api_mbps = [size / 1e6 / s for s in api_s]
    disk_mbps = [size / 1e6 / s for s in disk_s]
    return {
        "size_bytes": size,
        "rounds": rounds,
        "api_mb_s": size * rounds / 1e6 / sum(api_s),
        "disk_mb_s": size * rounds / 1e6 / sum(disk_s),
        "tcp_mb_s": size * rounds / 1e6 / sum(tcp_s),  # reference: loopback TCP, sendfile -> recv_into
        "ratio_to_tcp": sum(tcp_s) / sum(api_s),
        # the same API download read by _read_http (the TCP reference's client loop): the server's share
        "api_raw_mb_s": size * rounds / 1e6 / sum(raw_s),
        "raw_ratio_to_tcp": sum(tcp_s) / sum(raw_s),
        "raw_ratio_to_disk": sum(disk_s) / sum(raw_s),
        # httpx reading the file from a bare sendfile HTTP server: the client's ceiling on this machine
        "bare_httpx_mb_s": size * rounds / 1e6 / sum(bare_s),
        "bare_ratio_to_tcp": sum(tcp_s) / sum(bare_s),
        "ratio_to_bare": sum(bare_s) / sum(api_s),
        "api_mb_s_per_round": api_mbps,
        "disk_mb_s_per_round": disk_mbps,
        "ratio": sum(disk_s) / sum(api_s),
        # CPU seconds per downloaded GB: where the time goes (the API process vs this process's httpx client)
        "server_cpu_s_per_gb": sum(server_cpu) / (size * len(server_cpu) / 1e9) if server_cpu else None,
        "client_cpu_s_per_gb": sum(client_cpu) / (size * rounds / 1e9),
        "api_wall_s_per_gb": sum(api_s) / (size * rounds / 1e9),
        "ratio_median_of_rounds": statistics.median(a / d for a, d in zip(api_mbps, disk_mbps, strict=True)),
        "read_chunk_bytes": READ_CHUNK,
    }


# -- report --------------------------------------------------------------------------------------


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


def _code_state() -> dict[str, Any]:
    """The commit measured and any uncommitted change to the service's code (others may edit the tree)."""
    def git(*argv: str) -> str:
        try:
            return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = git("status", "--porcelain", "--", "api", "worker", "store", "cli", "nas_core")
    return {"commit": git("rev-parse", "--short", "HEAD").strip() or None,
            "uncommitted": [line[3:] for line in dirty.splitlines() if line.strip()]}


def verdict(report: dict[str, Any]) -> dict[str, Any]:
    get, sub, down = report["get_job"], report["submit"], report["download"]
    checks = {
        "get_job_ratio": {"value": get["ratio"], "goal": f">= {GOAL_GET_RATIO}",
                          "pass": get["ratio"] >= GOAL_GET_RATIO},
        "submit_to_running_p50_poll_s": {"value": sub["poll_p50_s"], "goal": f"< {GOAL_SUBMIT_P50_S}",
                                         "pass": sub["poll_p50_s"] is not None
                                         and sub["poll_p50_s"] < GOAL_SUBMIT_P50_S},
        "submit_to_running_p50_db_s": {"value": sub["db_p50_s"], "goal": f"< {GOAL_SUBMIT_P50_S}",
                                       "pass": sub["db_p50_s"] is not None and sub["db_p50_s"] < GOAL_SUBMIT_P50_S},
        "download_ratio_to_tcp": {"value": down["ratio_to_tcp"], "goal": f">= {GOAL_DOWNLOAD_TCP_RATIO}",
                                  "pass": down["ratio_to_tcp"] >= GOAL_DOWNLOAD_TCP_RATIO},
    }
    return {"checks": checks, "all_pass": all(c["pass"] for c in checks.values())}


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    machine = {"platform": platform.platform(), "python": platform.python_version(), "cpu_model": _cpu_model(),
               "cpus": os.cpu_count(), "loadavg_before": list(os.getloadavg())}
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "config": {"app": args.app, "seconds": args.seconds, "concurrency": args.concurrency, "rounds": args.rounds,
                   "jobs": args.jobs, "artifact_mb": args.artifact_mb, "download_rounds": args.download_rounds},
        "machine": machine,
        "code": _code_state(),
    }
    with bench_stack(args.app) as stack:
        report["config"]["redis_db"] = stack.redis_db
        log(f"2. submit-to-running: {args.jobs} tiny searches one at a time (+1 warm-up)")
        report["submit"] = submit_to_running(stack, args.jobs)
        job_id = report["submit"]["job_ids"][0]
        log(f"1. GET /v1/jobs/{{id}} vs /healthz: {args.rounds} rounds, {args.seconds:.0f}s per endpoint, "
            f"{args.concurrency} clients")
        report["get_job"] = get_throughput(stack, job_id, args.seconds, args.rounds, args.concurrency)
        log(f"3. artefact download: {args.artifact_mb} MiB, {args.download_rounds} rounds")
        report["download"] = download_throughput(stack, job_id, args.artifact_mb, args.download_rounds)
    machine["loadavg_after"] = list(os.getloadavg())
    report["wall_s"] = time.perf_counter() - started
    report["verdict"] = verdict(report)
    return report


def _f(value: Any, fmt: str) -> str:  # noqa: ANN401
    return "n/a" if value is None else fmt.format(value)


def render(report: dict[str, Any]) -> str:
    get, sub, down, checks = report["get_job"], report["submit"], report["download"], report["verdict"]["checks"]
    h, j = get["healthz"], get["job"]

    def mark(key: str) -> str:
        return "PASS" if checks[key]["pass"] else "FAIL"

    rows = [
        ("`GET /healthz` throughput", f"{h['rps']:.0f} req/s", "", ""),
        ("`GET /v1/jobs/{id}` throughput", f"{j['rps']:.0f} req/s", "", ""),
        ("Throughput ratio jobs / healthz (pooled)", f"{get['ratio']:.3f}", f">= {GOAL_GET_RATIO}",
         mark("get_job_ratio")),
        ("Ratio per round (min / median / max)",
         f"{min(get['ratio_per_round']):.3f} / {get['ratio_median_of_rounds']:.3f} / "
         f"{max(get['ratio_per_round']):.3f}", "", ""),
        ("`/healthz` latency p50 / p99", f"{h['p50_ms']:.1f} / {h['p99_ms']:.1f} ms", "", ""),
        ("`/v1/jobs/{id}` latency p50 / p99", f"{j['p50_ms']:.1f} / {j['p99_ms']:.1f} ms", "", ""),
        ("API server CPU per request, healthz / jobs",
         f"{_f(h['server_cpu_ms_per_request'], '{:.2f}')} / {_f(j['server_cpu_ms_per_request'], '{:.2f}')} ms",
         "", ""),
        ("Server CPU ratio healthz / jobs (throughput ratio if only the server's CPU counted)", _f(get["server_cpu_ratio"], "{:.3f}"), "", ""),
        ("Client CPU per request, healthz / jobs",
         f"{_f(h['client_cpu_ms_per_request'], '{:.2f}')} / {_f(j['client_cpu_ms_per_request'], '{:.2f}')} ms",
         "", ""),
        ("Errors healthz / jobs", f"{h['errors']} / {j['errors']}", "", ""),
        (f"Submit -> running, 202 to poll (n={sub['jobs']}) p50", _f(sub["poll_p50_s"], "{:.3f} s"),
         f"< {GOAL_SUBMIT_P50_S:.0f} s", mark("submit_to_running_p50_poll_s")),
        ("Submit -> running, 202 to poll p99 (= max)", _f(sub["poll_p99_s"], "{:.3f} s"), "", ""),
        ("created_at -> started_at (row) p50", _f(sub["db_p50_s"], "{:.3f} s"), f"< {GOAL_SUBMIT_P50_S:.0f} s",
         mark("submit_to_running_p50_db_s")),
        ("created_at -> started_at (row) p99 (= max)", _f(sub["db_p99_s"], "{:.3f} s"), "", ""),
        ("POST /v1/searches latency p50", _f(sub["post_p50_s"], "{:.3f} s"), "", ""),
        ("Cancel -> cancelled p50", _f(sub["cancel_to_terminal_p50_s"], "{:.3f} s"), "", ""),
        (f"Artefact download via API ({down['size_bytes'] / MIB:.0f} MiB)", f"{down['api_mb_s']:.0f} MB/s", "", ""),
        ("Same file read from disk (page cache)", f"{down['disk_mb_s']:.0f} MB/s", "", ""),
        ("Download ratio API / disk (pooled; median of rounds)",
         f"{down['ratio']:.3f}; {down['ratio_median_of_rounds']:.3f}", "none set", ""),
        ("Same file over plain loopback TCP (sendfile, no HTTP)", f"{down['tcp_mb_s']:.0f} MB/s", "", ""),
        ("Download ratio API / plain TCP", f"{down['ratio_to_tcp']:.3f}", f">= {GOAL_DOWNLOAD_TCP_RATIO}",
         mark("download_ratio_to_tcp")),
        ("The API download read by recv_into (no httpx)", f"{down['api_raw_mb_s']:.0f} MB/s", "", ""),
        ("Its ratio to plain TCP / to disk",
         f"{down['raw_ratio_to_tcp']:.3f} / {down['raw_ratio_to_disk']:.3f}", "", ""),
        ("httpx from a bare sendfile HTTP server (the client's ceiling); its ratio to plain TCP",
         f"{down['bare_httpx_mb_s']:.0f} MB/s; {down['bare_ratio_to_tcp']:.3f}", "", ""),
        ("Download ratio API / that ceiling (both httpx)", f"{down['ratio_to_bare']:.3f}", "", ""),
        ("Download per GB: wall / API server CPU / client CPU",
         f"{down['api_wall_s_per_gb']:.2f} / {_f(down['server_cpu_s_per_gb'], '{:.2f}')} / "
         f"{down['client_cpu_s_per_gb']:.2f} s", "", ""),
    ]
    lines = ["| Metric | Value | Goal | Result |", "|---|---:|---:|:---:|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    m = report["machine"]
    lines += ["", f"date {report['date']}; {m['cpus']} CPUs ({m['cpu_model']}); load average (1/5/15 min) "
              f"before {'/'.join(f'{x:.2f}' for x in m['loadavg_before'])}, after "
              f"{'/'.join(f'{x:.2f}' for x in m['loadavg_after'])}; Redis db {report['config']['redis_db']}; "
              f"code {report['code']['commit']}"
              f"{' + uncommitted ' + ', '.join(report['code']['uncommitted']) if report['code']['uncommitted'] else ''}; "
              f"wall {report['wall_s']:.0f} s; all goals {'PASS' if report['verdict']['all_pass'] else 'not met'}"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--seconds", type=float, default=10.0,
                   help="measured seconds per endpoint for the GET throughput (split into --rounds windows)")
    p.add_argument("--concurrency", type=int, default=8, help="concurrent HTTP clients for the GET throughput")
    p.add_argument("--rounds", type=int, default=5, help="alternating windows per endpoint")
    p.add_argument("--jobs", type=int, default=15, help="searches for the submit-to-running latency")
    p.add_argument("--artifact-mb", type=int, default=64, help="artefact size in MiB")
    p.add_argument("--download-rounds", type=int, default=6,
                   help="API downloads (and as many disk reads and plain TCP transfers)")
    p.add_argument("--app", default="api.main:app",
                   help="the ASGI app uvicorn serves (to try a variant of the app without editing api/)")
    args = p.parse_args(argv)
    if not (0.5 <= args.seconds <= 600 and 1 <= args.concurrency <= 256 and 1 <= args.rounds <= 100
            and 1 <= args.jobs <= 200 and 1 <= args.artifact_mb <= 4096 and 1 <= args.download_rounds <= 100):
        p.error("out of range: --seconds 0.5..600, --concurrency 1..256, --rounds 1..100, --jobs 1..200, "
                "--artifact-mb 1..4096, --download-rounds 1..100")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    try:
        report = run(args)
    except BenchError as exc:
        log(f"error: {exc}")
        return 2
    except (KeyboardInterrupt, Terminated) as exc:
        log(f"interrupted ({exc.__class__.__name__} {exc}); cleaned up")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    print(json.dumps(report, indent=2, default=str) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
