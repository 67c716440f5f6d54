"""Byte-level fuzz of the request line and headers over a real uvicorn (raw sockets, no HTTP client).

What a TestClient cannot send: bytes that are not ASCII, not UTF-8 or not HTTP at all, in
the method, the target, the version, and the headers the API reads (``Range`` and
``If-Range``, ``Authorization``, ``Content-Type``, ``Idempotency-Key``, ``X-Request-ID``,
cursors in the query). At least 5,000 cases, drawn from a fixed seed (the same on every
run; ``THRIFTY_HTTP_FUZZ_SEED`` picks another), each on a keep-alive connection (a new one
when the server closes it). Every answer must be below 500, and afterwards the server
still answers ``/healthz`` and an ordinary authenticated request.

A case that breaks HTTP itself (a bad request line, a header without a colon) is answered
by uvicorn's parser (400) or by closing the connection; both count as handled, and the
number of each is printed.
"""

from __future__ import annotations

import os
import random
import select
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import update

from store.artifacts import ArtifactStore, register_artifact
from store.datasets import create_dataset
from store.db import session_scope
from store.jobs import create_job
from store.models import Job
from tests.integration.conftest import ApiServer, Services

pytestmark = pytest.mark.integration

CASES = 6_000
SEED = int(os.environ.get("THRIFTY_HTTP_FUZZ_SEED", "14"))
TIME_LIMIT_S = 120.0  # the module's own budget; about 30 s on two busy cores
ARTIFACT = bytes(range(256)) * 40  # 10,240 bytes

# Bytes that have broken parsers: separators, controls, Latin-1 and UTF-8 digits and spaces, lone
# UTF-8 lead bytes, percent signs, the characters of the grammars themselves.
NASTY = [b"\x00", b"\r", b"\n", b"\t", b" ", b"\x7f", b"\xff", b"\xb2", b"\xc2\xb2", b"\xd9\xa3", b"\xe2\x80\xa8",
         b"\xef\xbc\x91", b"\xc0", b"\xe0\x80", b"%", b"%00", b"%ff", b"%C2%B2", b"\\", b"/", b"..", b";", b",",
         b"=", b"-", b"\"", b"'", b"*", b"?", b"#", b"&", b"+", b"0", b"9", b"1" * 30, b"-1", b"1e9", b"\xa0"]
MEDIA_TYPES = [b"application/json", b"multipart/form-data", b"text/plain", b"application/problem+json",
               b"application/jsonx", b"application/x-www-form-urlencoded", b"*/*", b""]


@dataclass
class World:
    host: str
    port: int
    key: str
    job_id: str
    dataset_id: str


@pytest.fixture(scope="module")
def world(api_server: ApiServer, services: Services, phantom_dataset) -> World:
    """A user with a dataset, a succeeded job and a 10 KiB artefact to ask byte ranges of."""
    from store.users import create_user_with_key
    from tests.integration.conftest import PEPPER

    with session_scope(services.sessions) as session:
        user, key = create_user_with_key(session, f"fuzz-{uuid.uuid4().hex[:8]}", pepper=PEPPER)
        dataset = create_dataset(session, owner_id=user.id, name="fuzz", path=str(phantom_dataset), format="nnunet",
                                 num_cases=6, num_classes=3)
        job = create_job(session, owner_id=user.id, kind="retrain", dataset_id=dataset.id,
                         config={"epochs": 1}, epochs=1, architecture={"baseline": "unet"}).job
        session.execute(update(Job).where(Job.id == job.id).values(status="succeeded"))
        stored = ArtifactStore(services.artifact_dir).put_bytes(job.id, "model.pt", ARTIFACT, "checkpoint")
        register_artifact(session, job_id=job.id, owner_id=user.id, name="model.pt", kind="checkpoint",
                          stored=stored)
        ids = (user.id, key, job.id, dataset.id)
    host, port = api_server.url.removeprefix("http://").split(":")
    return World(host, int(port), ids[1], ids[2], ids[3])


# --- drawing cases ------------------------------------------------------------------------------------


def _noise(rng: random.Random, most: int = 24) -> bytes:
    """A short run of nasty and random bytes."""
    parts = [rng.choice(NASTY) if rng.random() < 0.6 else bytes([rng.randrange(256)]) for _ in range(rng.randrange(most))]
    return b"".join(parts)


def _mutate(rng: random.Random, value: bytes) -> bytes:
    """``value`` with a few bytes inserted, replaced or removed, or wholly replaced by noise."""
    roll = rng.random()
    if roll < 0.15:
        return _noise(rng)
    data = bytearray(value)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(data) + 1)
        action = rng.random()
        if action < 0.5:
            data[at:at] = rng.choice(NASTY)
        elif action < 0.8 and data:
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif data:
            del data[min(at, len(data) - 1)]
    return bytes(data)


def _request(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b"",
             version: bytes = b"HTTP/1.1") -> bytes:
    lines = [method + b" " + target + b" " + version, b"Host: fuzz", *(n + b": " + v for n, v in headers)]
    if body or method == b"POST":
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _auth(w: World) -> tuple[bytes, bytes]:
    return b"Authorization", b"Bearer " + w.key.encode()


def _request_line(rng: random.Random, w: World) -> bytes:
    # (no DELETE: the artefact the Range cases ask for must stay)
    method = rng.choice([b"GET", b"POST", b"OPTIONS", b"PUT", b"PATCH", b"G\xc9T", b"get", b"", b"GET GET"])
    target = rng.choice([b"/v1/jobs", f"/v1/jobs/{w.job_id}".encode(), b"/v1/datasets?limit=2", b"/healthz",
                         f"/v1/jobs/{w.job_id}/artifacts/model.pt".encode(), b"/", b"*", b"http://fuzz/v1/jobs"])
    version = rng.choice([b"HTTP/1.1"] * 6 + [b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1x", b"HTTP/\xb9.1", b""])
    roll = rng.random()
    if roll < 0.45:
        target = _mutate(rng, target)
    elif roll < 0.6:
        method = _mutate(rng, method)
    elif roll < 0.7:
        version = _mutate(rng, version)
    elif roll < 0.75:
        target = b"/v1/jobs/" + b"a" * rng.choice([65, 1000, 9000])
    return _request(method, target, [_auth(w)], version=version)


def _range(rng: random.Random, w: World) -> bytes:
    spec = rng.choice([b"bytes=0-9", b"bytes=-5", b"bytes=5-", b"bytes=0-0,2-3", b"bytes=10239-", b"bytes=9-0",
                       b"bytes=\xb2-", b"bytes=99999999999999999999999-", b"items=0-1", b"bytes=", b"bytes=--"])
    headers = [_auth(w), (b"Range", _mutate(rng, spec) if rng.random() < 0.8 else spec)]
    if rng.random() < 0.3:
        headers.append((b"If-Range", _mutate(rng, b'"etag"')))
    return _request(b"GET", f"/v1/jobs/{w.job_id}/artifacts/model.pt".encode(), headers)


def _authorization(rng: random.Random, w: World) -> bytes:
    value = rng.choice([b"Bearer " + w.key.encode(), b"Bearer tnas_x", b"Basic YTpi", b"Bearer", b"bearer  k",
                        b"Bearer " + b"k" * 15_000])
    value = _mutate(rng, value) if rng.random() < 0.85 else value
    return _request(b"GET", rng.choice([b"/v1/jobs", b"/v1/me", f"/v1/jobs/{w.job_id}".encode()]),
                    [(b"Authorization", value)])


def _content_type(rng: random.Random, w: World) -> bytes:
    kind = rng.choice(MEDIA_TYPES)
    params = rng.choice([b"", b"; charset=utf-8", b"; charset=latin-1", b"; boundary=x", b";;;", b"; charset=\xff"])
    value = _mutate(rng, kind + params) if rng.random() < 0.7 else kind + params
    route = rng.choice([b"/v1/searches", b"/v1/datasets", b"/v1/retrains"])
    body = rng.choice([b'{"dataset_id": "ds_fuzz0000", "config": {"epochs": 1}}', b'{"name": "x", "path": "nope"}',
                       b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.zip\"\r\n\r\nPK\r\n--x--\r\n",
                       _noise(rng, 40)])
    return _request(b"POST", route, [_auth(w), (b"Content-Type", value)], body)


def _idempotency_key(rng: random.Random, w: World) -> bytes:
    key = _mutate(rng, rng.choice([b"abc-123", uuid.uuid4().hex.encode(), b"k" * 200, b"k" * 201, b""]))
    body = b'{"dataset_id": "ds_fuzz0000", "config": {"epochs": 1}}'  # no such dataset: nothing is queued
    return _request(b"POST", b"/v1/searches", [_auth(w), (b"Content-Type", b"application/json"),
                                                (b"Idempotency-Key", key)], body)


def _cursor(rng: random.Random, w: World) -> bytes:
    cursor = _mutate(rng, rng.choice([b"MjAyNi0wMS0wMVQwMDowMDowMCswMDowMHxqb2JfMQ", b"5", b"-1", b"", b"%00"]))
    path = rng.choice([b"/v1/jobs", b"/v1/datasets", f"/v1/jobs/{w.job_id}/alphas".encode()])
    return _request(b"GET", path + b"?cursor=" + cursor + rng.choice([b"", b"&limit=1", b"&cursor=x"]), [_auth(w)])


def _other_headers(rng: random.Random, w: World) -> bytes:
    # (not Content-Length nor Transfer-Encoding: a server rightly waiting for a body it was promised
    # would only make the case slow)
    name = rng.choice([b"X-Request-ID", b"Accept", b"Cookie", b"If-None-Match", b"X-Forwarded-For", b"Host",
                       b"Expect", b"Connection", b"Accept-Encoding"])
    value = _mutate(rng, rng.choice([b"abc", b"thrifty_key=x", b"*", b"gzip", b"100-continue", b"keep-alive"]))
    if rng.random() < 0.2:
        name = _mutate(rng, name)  # a header name with spaces, colons, controls...
    return _request(b"GET", f"/v1/jobs/{w.job_id}/artifacts/model.pt".encode(), [_auth(w), (name, value)])


KINDS: dict[str, tuple[float, Callable[[random.Random, World], bytes]]] = {
    "request line": (0.22, _request_line), "Range": (0.18, _range), "Authorization": (0.15, _authorization),
    "Content-Type": (0.15, _content_type), "Idempotency-Key": (0.10, _idempotency_key), "cursor": (0.10, _cursor),
    "other headers": (0.10, _other_headers),
}


def draw_cases(rng: random.Random, w: World, n: int) -> Iterator[tuple[str, bytes]]:
    names, weights = list(KINDS), [share for share, _ in KINDS.values()]
    for _ in range(n):
        kind = rng.choices(names, weights)[0]
        yield kind, KINDS[kind][1](rng, w)


# --- the wire --------------------------------------------------------------------------------------


class Wire:
    """One keep-alive connection, reopened when the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.opened = 0

    def _recv(self) -> bytes:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        return chunk

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            self.buffer += self._recv()
        head, self.buffer = self.buffer.split(marker, 1)
        return head

    def _read_exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self.buffer += self._recv()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def exchange(self, request: bytes, head_only: bool) -> int | None:
        """The response's status, or None if the server closed the connection without one.

        A kept-alive connection the server has closed meanwhile (after an HTTP/1.0 answer...) is
        reopened and the request sent again, once.
        """
        for attempt in (1, 2):
            fresh = self.sock is None
            if fresh:
                self.sock = socket.create_connection(self.address, timeout=15)
                self.opened += 1
                self.buffer = b""
            try:
                self.sock.sendall(request)
                head = self._read_until(b"\r\n\r\n")
                while head.split(b" ", 2)[1].startswith(b"1"):  # 100 Continue: the answer follows
                    head = self._read_until(b"\r\n\r\n")
                break
            except (ConnectionError, OSError):
                self.close()
                if fresh or attempt == 2:
                    return None
        return self._finish(head, head_only)

    def _finish(self, head: bytes, head_only: bool) -> int:
        """Read the body of the response whose head is ``head``; its status."""
        status_line, *header_lines = head.split(b"\r\n")
        status = int(status_line.split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(b":") for h in header_lines)}
        try:
            if head_only or status in (204, 304):
                pass
            elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                while size := int(self._read_until(b"\r\n").split(b";")[0], 16):
                    self._read_exactly(size + 2)
                self._read_until(b"\r\n")
            else:
                self._read_exactly(int(headers.get(b"content-length", b"0")))
        except (ConnectionError, OSError):
            self.close()
        if headers.get(b"connection", b"").lower() == b"close":
            self.close()
        return status

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def test_five_thousand_hostile_requests_get_no_5xx_and_the_server_stays_up(world: World, api_server: ApiServer) -> None:
    rng = random.Random(SEED)
    wire = Wire(world.host, world.port)
    statuses: Counter[int | None] = Counter()
    by_kind: dict[str, Counter[int | None]] = {kind: Counter() for kind in KINDS}
    failures: list[tuple[str, bytes, int | None]] = []
    started = time.monotonic()
    for kind, request in draw_cases(rng, world, CASES):
        head_only = request.startswith(b"HEAD ")
        status = wire.exchange(request, head_only)
        statuses[status] += 1
        by_kind[kind][status] += 1
        if status is not None and status >= 500:
            failures.append((kind, request[:300], status))
        assert time.monotonic() - started < TIME_LIMIT_S, f"too slow: {sum(statuses.values())} cases"
    wire.close()
    elapsed = time.monotonic() - started
    print(f"{CASES} cases in {elapsed:.1f} s over {wire.opened} connections; statuses {dict(statuses)}")
    for kind, counts in by_kind.items():
        print(f"  {kind}: {dict(counts)}")
    assert sum(statuses.values()) >= 5_000
    assert failures == [], f"{len(failures)} answers were 5xx, e.g. {failures[:5]}\n{api_server.tail()}"
    assert statuses[None] < CASES // 4, statuses  # most cases get an answer, not a closed connection
    assert sum(n for s, n in statuses.items() if s is not None and 200 <= s < 300) > 100  # some were fine requests
    with api_server.client() as client:
        assert client.get("/healthz").status_code == 200
        response = client.get(f"/v1/jobs/{world.job_id}/artifacts/model.pt", headers={
            "Authorization": f"Bearer {world.key}", "Range": "bytes=0-9"})
        assert response.status_code == 206 and response.content == ARTIFACT[:10]
    assert api_server.process.poll() is None, "the server exited"


def test_an_announced_oversized_json_body_is_413_before_it_is_sent(world: World) -> None:
    """Content-Length of 1 GB on a JSON route: refused after the headers, none of the body read."""
    request = (b"POST /v1/searches HTTP/1.1\r\nHost: fuzz\r\nAuthorization: Bearer " + world.key.encode()
               + b"\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n{")
    wire = Wire(world.host, world.port)
    started = time.monotonic()
    assert wire.exchange(request, head_only=False) == 413
    assert time.monotonic() - started < 5
    wire.close()


def test_a_streamed_oversized_json_body_is_413_while_it_streams(world: World) -> None:
    """No Content-Length (chunked), and a body that never ends: the JSON reader counts the bytes and
    answers 413 at its limit (the kernel's buffers hold a few MB more than the server has read)."""
    from api.body import MAX_JSON_BYTES

    chunk = b" " * 65536
    answer = b""
    with socket.create_connection((world.host, world.port), timeout=15) as sock:
        sock.sendall(b"POST /v1/searches HTTP/1.1\r\nHost: fuzz\r\nAuthorization: Bearer " + world.key.encode()
                     + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        sent = 0
        try:
            while sent < 16 * MAX_JSON_BYTES and not answer:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sent += len(chunk)
                if select.select([sock], [], [], 0)[0]:
                    answer = sock.recv(4096)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = answer or sock.recv(4096)
        while b"}}" not in answer and (more := sock.recv(4096)):
            answer += more
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"payload_too_large" in answer
    assert sent < 16 * MAX_JSON_BYTES, "no answer while the body streamed"
