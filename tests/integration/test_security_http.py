"""Security over real HTTP: uvicorn + PostgreSQL, what a TestClient cannot show.

* an upload larger than the limit is refused while it streams, without Content-Length
  (chunked) and with a Content-Length that announces it (refused before the body);
* a revoked key is refused on the very next request of an open keep-alive connection;
* encoded ``..`` and NUL in URLs never reach a file (404/422), whatever the decoding;
* user B gets 404 for every route naming user A's dataset or job, over the wire.

This module starts its own uvicorn (a small upload limit) on the session's services.
"""

from __future__ import annotations

import select
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from store.db import session_scope
from store.users import create_user_with_key, list_keys, revoke_key
from tests.integration.conftest import PEPPER, READY_TIMEOUT_S, ROOT, Services, _free_port, wait_for

pytestmark = pytest.mark.integration

LIMIT = 200_000
TINY = {"epochs": 1, "warmup_epochs": 0, "image_size": 16, "batch_size": 2, "channels": 4, "k": 1, "depth": 2,
        "nodes": 1}


class Server:
    def __init__(self, url: str, process: subprocess.Popen, log: Path, upload_dir: Path) -> None:
        self.url, self.process, self.log, self.upload_dir = url, process, log, upload_dir

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])


@pytest.fixture(scope="module")
def server(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = _free_port()
    log = tmp_path_factory.mktemp("security-api") / "uvicorn.log"
    upload_dir = services.home / "uploads-security"
    env = services.process_env(THRIFTY_MAX_UPLOAD_BYTES=str(LIMIT), THRIFTY_UPLOAD_DIR=str(upload_dir))
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    srv = Server(f"http://127.0.0.1:{port}", proc, log, upload_dir)

    def healthy() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"the API server exited with {proc.returncode}\n{srv.tail()}")
        try:
            return httpx.get(f"{srv.url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(healthy, READY_TIMEOUT_S, "the API server to answer /healthz", on_timeout=srv.tail)
        yield srv
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def _user(services: Services) -> tuple[str, str]:
    with session_scope(services.sessions) as session:
        user, key = create_user_with_key(session, f"sec-{uuid.uuid4().hex[:8]}", pepper=PEPPER)
        return user.id, key


def _leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def _raw_upload_head(server: Server, key: str, length_header: str) -> tuple[str, int, bytes]:
    host, port = server.url.removeprefix("http://").split(":")
    head = (f"POST /v1/datasets HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: multipart/form-data; boundary=x\r\n{length_header}\r\n\r\n").encode()
    return host, int(port), head


def _answer(sock: socket.socket) -> bytes:
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    return answer


def test_a_chunked_upload_over_the_limit_is_stopped_while_it_streams(server, services) -> None:
    """No Content-Length: the server counts the body as it arrives and answers 413 long before its end."""
    _, key = _user(services)
    host, port, head = _raw_upload_head(server, key, "Transfer-Encoding: chunked")
    part = b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.zip"\r\n\r\n'
    chunk = b"\0" * 65536
    total = 200 * len(chunk)  # 12.8 MB offered, 64 times the limit
    sent = 0
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(head + f"{len(part):x}\r\n".encode() + part + b"\r\n")
        answer = b""
        try:
            while sent < total:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sent += len(chunk)
                readable, _, _ = select.select([sock], [], [], 0.02)  # a client on a slower link
                if readable:
                    answer = _answer(sock)
                    break
            if not answer:
                sock.sendall(b"0\r\n\r\n")
                answer = _answer(sock)
        except (BrokenPipeError, ConnectionResetError):  # the server stopped reading: its answer is there
            answer = answer or _answer(sock)
    assert answer.startswith(b"HTTP/1.1 413"), (answer[:300], server.tail())
    print(f"413 after {sent} of {total} bytes sent")
    assert sent < total // 4, f"the 413 came only after {sent} of {total} bytes"
    assert _leftovers(server.upload_dir) == []


def test_an_announced_oversize_is_refused_before_the_body(server, services) -> None:
    """Content-Length says 10 GB; the server answers 413 after the headers, reading none of it."""
    _, key = _user(services)
    host, port, head = _raw_upload_head(server, key, f"Content-Length: {10 * 1024**3}")
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(head + b"--x\r\n")  # a few bytes of the promised 10 GB, then wait
        started = time.monotonic()
        answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert time.monotonic() - started < 5
    assert _leftovers(server.upload_dir) == []


def test_a_revoked_key_is_refused_on_the_same_open_connection(server, services) -> None:
    user_id, key = _user(services)
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as client:
        for _ in range(3):
            assert client.get("/v1/jobs").status_code == 200
        with session_scope(services.sessions) as session:
            assert revoke_key(session, list_keys(session, user_id)[0].id)
        response = client.get("/v1/jobs")  # the same keep-alive connection, the next request
        assert response.status_code == 401, response.text
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
        assert client.get("/v1/datasets").status_code == 401


@pytest.fixture
def two_users(server, services, phantom_dataset) -> Iterator[tuple[httpx.Client, httpx.Client, dict[str, str]]]:
    """A (with a dataset and a queued tiny search, cancelled at the end) and B, as HTTP clients."""
    _, key_a = _user(services)
    _, key_b = _user(services)
    a = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key_a}"}, timeout=30)
    b = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key_b}"}, timeout=30)
    ds = a.post("/v1/datasets", json={"name": "mine", "path": phantom_dataset.name})
    assert ds.status_code == 201, ds.text
    job = a.post("/v1/searches", json={"dataset_id": ds.json()["id"], "config": TINY})
    assert job.status_code == 202, job.text
    ids = {"dataset_id": ds.json()["id"], "job_id": job.json()["id"]}
    try:
        yield a, b, ids
    finally:
        a.post(f"/v1/jobs/{ids['job_id']}/cancel")  # no later module's worker runs it
        a.close()
        b.close()


def test_encoded_traversal_and_nul_in_urls_never_reach_a_file(two_users) -> None:
    a, _, ids = two_users
    job = ids["job_id"]
    urls = [
        "/v1/jobs/..%2F..%2F..%2Fetc%2Fpasswd", "/v1/jobs/%2e%2e", "/v1/jobs/%00",
        f"/v1/jobs/{job}/artifacts/..%2F..%2Fthrifty.db", f"/v1/jobs/{job}/artifacts/%2e%2e%2fx",
        f"/v1/jobs/{job}/artifacts/%2e%2e", f"/v1/jobs/{job}/artifacts/a%00b", f"/v1/jobs/{job}/artifacts/.env",
        "/v1/datasets/..%2f..%2f", "/static/..%2f..%2fapi%2fmain.py", "/static/%2e%2e/%2e%2e/etc/passwd",
        "/v1/genotypes/..%5c..%5cx",
    ]
    for url in urls:
        response = a.get(url)
        assert response.status_code in (404, 422), (url, response.status_code, response.text[:200])
        assert b"root:" not in response.content and b"import " not in response.content, url


def test_another_user_gets_404_for_every_route_naming_a_resource(two_users) -> None:
    """The walk over the live schema: B calls every route with A's ids; A's own call is not 404."""
    a, b, ids = two_users
    schema = a.get("/openapi.json").json()
    walked = 0
    for path, operations in schema["paths"].items():
        if "{dataset_id}" not in path and "{job_id}" not in path:
            continue
        url = path.format(**ids, fmt="png", name="model.pt") if "{" in path else path
        for method in operations:
            response = b.request(method.upper(), url)
            assert response.status_code == 404, (method, path, response.status_code, response.text)
            assert response.json()["error"]["code"] == "not_found"
            assert a.request("GET", f"/v1/jobs/{ids['job_id']}").json()["status"] == "queued"  # B changed nothing
            walked += 1
    assert walked >= 11  # dataset, job, cancel, alphas, metrics, genotype, artefacts (2), pictures (3)
