"""Download edge cases the real server rarely shows (a fake transport, no services): a file replaced
since the partial download (If-Range no longer matches: it comes whole), bytes that never match the
ETag (one retry from byte 0, then ChecksumMismatch), a zero-byte artefact, an unknown name."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from client import ChecksumMismatch, Client, NotFound

JOB = "job_1"


def _server(content: bytes, listed_sha: str | None = None, served: bytes | None = None) -> tuple[Client, list]:
    """A fake API with one artefact ``a.bin`` (sending ``served`` instead when given); the requests it saw."""
    sha = hashlib.sha256(content).hexdigest()
    body = content if served is None else served
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == f"/v1/jobs/{JOB}/artifacts":
            return httpx.Response(200, json={"items": [{"name": "a.bin", "size": len(content),
                                                        "sha256": listed_sha or sha}]})
        if request.url.path == f"/v1/jobs/{JOB}/artifacts/a.bin":
            etag, wanted = f'"{sha}"', request.headers.get("range")
            if wanted and request.headers.get("if-range") in (None, etag):
                start = int(wanted.removeprefix("bytes=").rstrip("-"))
                return httpx.Response(206, content=body[start:], headers={"ETag": etag})
            return httpx.Response(200, content=body, headers={"ETag": etag})
        return httpx.Response(404, json={"error": {"code": "not_found", "message": f"no {request.url.path}"}})

    return Client("http://test", "k", transport=httpx.MockTransport(handle)), seen


def test_a_partial_of_an_older_file_is_replaced_when_if_range_does_not_match(tmp_path: Path) -> None:
    new = b"new contents of the file" * 100
    client, seen = _server(new, listed_sha="0" * 64)  # the listing still names the old version
    (tmp_path / "a.bin.part").write_bytes(b"old" * 10)
    path = client.download(JOB, "a.bin", tmp_path)
    assert path.read_bytes() == new  # the ETag of the 200 answer is what the bytes are checked against
    assert seen[-1].headers["range"] == "bytes=30-" and seen[-1].headers["if-range"] == f'"{"0" * 64}"'


def test_bytes_that_do_not_hash_to_the_etag_are_fetched_once_more_then_refused(tmp_path: Path) -> None:
    content = b"x" * 100
    client, seen = _server(content, served=b"z" * 100)
    (tmp_path / "a.bin.part").write_bytes(content[:10])
    with pytest.raises(ChecksumMismatch, match=hashlib.sha256(content).hexdigest()):
        client.download(JOB, "a.bin", tmp_path)
    assert [r.headers.get("range") for r in seen if r.url.path.endswith("a.bin")] == ["bytes=10-", None]
    assert not (tmp_path / "a.bin.part").exists() and not (tmp_path / "a.bin").exists()


def test_zero_byte_artifact_and_unknown_names(tmp_path: Path) -> None:
    client, _ = _server(b"")
    assert client.download(JOB, "a.bin", tmp_path / "empty.bin").read_bytes() == b""
    with pytest.raises(NotFound, match="has no artifact 'b.bin'; it has: a.bin"):
        client.download(JOB, "b.bin", tmp_path)
