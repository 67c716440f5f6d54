"""The client retries what is safe to retry on 503 and connection errors, honouring Retry-After."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from client import Client
from client.errors import ApiError


class Flaky(BaseHTTPRequestHandler):
    """Answers 503 (Retry-After: 1) to the first ``failures`` requests, then 200."""

    failures = 2
    seen: list[str] = []

    def _answer(self) -> None:
        Flaky.seen.append(self.command)
        if len(Flaky.seen) <= Flaky.failures:
            body = json.dumps({"error": {"code": "database_unavailable", "message": "down"}}).encode()
            self.send_response(503)
            self.send_header("Retry-After", "1")
        else:
            body = json.dumps({"id": "job_1", "status": "succeeded"}).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer  # noqa: N815

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Flaky.seen = []
    Flaky.failures = 2
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_an_idempotent_call_waits_out_a_503_as_retry_after_asks(server) -> None:
    t0 = time.monotonic()
    with Client(server, "key") as client:
        assert client.job("job_1")["status"] == "succeeded"
    assert Flaky.seen == ["GET"] * 3 and 1.9 <= time.monotonic() - t0 < 10


def test_a_post_is_retried_only_with_an_idempotency_key(server) -> None:
    with Client(server, "key") as client:
        with pytest.raises(ApiError) as info:
            client.cancel("job_1")  # a plain POST: sent once
        assert info.value.status == 503 and Flaky.seen == ["POST"]
        assert client.submit_search("ds_1", idempotency_key="k1")["id"] == "job_1"
    assert Flaky.seen == ["POST"] * 3


def test_retries_are_bounded_in_time(server) -> None:
    Flaky.failures = 100
    t0 = time.monotonic()
    with Client(server, "key", retry_for=1.5) as client, pytest.raises(ApiError):
        client.job("job_1")
    assert time.monotonic() - t0 < 5 and 2 <= len(Flaky.seen) <= 3


def test_connection_errors_are_retried_then_raised() -> None:
    import httpx

    t0 = time.monotonic()
    with Client("http://127.0.0.1:9", "key", retry_for=1.0) as client, pytest.raises(httpx.TransportError):
        client.job("job_1")  # nothing listens on port 9
    assert 0.4 <= time.monotonic() - t0 < 5
