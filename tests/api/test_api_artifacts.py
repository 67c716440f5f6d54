"""Artefacts: listing with size and sha256, downloads with Range, ETag and If-None-Match."""

from __future__ import annotations

import hashlib

import pytest

from api.errors import RangeNotSatisfiable
from api.services.ranges import parse_range
from store.artifacts import ArtifactStore, register_artifact

DATA = bytes(range(256)) * 1200  # 307200 bytes, more than one streaming chunk


@pytest.fixture
def job(alice, add_dataset, add_job, factory, settings) -> str:
    job_id = add_job(alice[0], add_dataset(alice[0]), kind="retrain", status="succeeded")
    store = ArtifactStore(settings.artifact_dir)
    with factory() as session:
        for name, kind, data in (("final.pt", "checkpoint", DATA), ("metrics.json", "metrics", b'{"dsc": 1}')):
            stored = store.put_bytes(job_id, name, data, kind)
            register_artifact(session, job_id=job_id, owner_id=alice[0], name=name, kind=kind, stored=stored)
        session.commit()
    return job_id


def test_list(client, alice, job) -> None:
    items = client.get(f"/v1/jobs/{job}/artifacts", headers=alice[1]).json()["items"]
    assert [(a["name"], a["kind"], a["size"]) for a in items] == [
        ("final.pt", "checkpoint", len(DATA)), ("metrics.json", "metrics", 10)
    ]
    assert items[0]["sha256"] == hashlib.sha256(DATA).hexdigest()
    assert items[0]["download"] == f"/v1/jobs/{job}/artifacts/final.pt"


def test_full_download(client, alice, job) -> None:
    response = client.get(f"/v1/jobs/{job}/artifacts/final.pt", headers=alice[1])
    assert response.status_code == 200 and response.content == DATA
    assert response.headers["ETag"] == f'"{hashlib.sha256(DATA).hexdigest()}"'
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["Content-Length"] == str(len(DATA))
    assert response.headers["Content-Disposition"] == 'attachment; filename="final.pt"'
    assert client.get(f"/v1/jobs/{job}/artifacts/metrics.json", headers=alice[1]).json() == {"dsc": 1}


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [("bytes=0-99", 0, 100), ("bytes=1000-", 1000, len(DATA)), ("bytes=-10", len(DATA) - 10, len(DATA)),
     ("bytes=300000-999999999", 300000, len(DATA))],
)
def test_range_download(client, alice, job, header, start, end) -> None:
    response = client.get(f"/v1/jobs/{job}/artifacts/final.pt", headers={**alice[1], "Range": header})
    assert response.status_code == 206
    assert response.content == DATA[start:end]
    assert response.headers["Content-Range"] == f"bytes {start}-{end - 1}/{len(DATA)}"
    assert response.headers["Content-Length"] == str(end - start)


@pytest.mark.parametrize("header", ["bytes=999999-", "bytes=50-10", "bytes=abc-def", "bytes=-0", "bytes=-"])
def test_bad_range_is_416(client, alice, job, header) -> None:
    response = client.get(f"/v1/jobs/{job}/artifacts/final.pt", headers={**alice[1], "Range": header})
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{len(DATA)}"
    assert response.json()["error"]["code"] == "range_not_satisfiable"


def test_ignored_ranges_serve_the_whole_file(client, alice, job) -> None:
    etag = client.get(f"/v1/jobs/{job}/artifacts/final.pt", headers=alice[1]).headers["ETag"]
    for extra in ({"Range": "bytes=0-1,5-6"}, {"Range": "items=0-1"}, {"Range": "bytes=0-1", "If-Range": '"old"'}):
        response = client.get(f"/v1/jobs/{job}/artifacts/final.pt", headers={**alice[1], **extra})
        assert response.status_code == 200 and response.content == DATA, extra
    response = client.get(f"/v1/jobs/{job}/artifacts/final.pt",
                          headers={**alice[1], "Range": "bytes=0-1", "If-Range": etag})
    assert response.status_code == 206 and response.content == DATA[:2]


def test_if_none_match_is_304(client, alice, job) -> None:
    etag = f'"{hashlib.sha256(DATA).hexdigest()}"'
    for value in (etag, f'W/{etag}', f'"other", {etag}', "*"):
        response = client.get(f"/v1/jobs/{job}/artifacts/final.pt", headers={**alice[1], "If-None-Match": value})
        assert response.status_code == 304 and response.content == b"" and response.headers["ETag"] == etag
    response = client.get(f"/v1/jobs/{job}/artifacts/final.pt", headers={**alice[1], "If-None-Match": '"x"'})
    assert response.status_code == 200


def test_missing_artifact_and_missing_file(client, alice, job, settings) -> None:
    response = client.get(f"/v1/jobs/{job}/artifacts/nope.pt", headers=alice[1])
    assert response.status_code == 404 and "'nope.pt' not found" in response.json()["error"]["message"]
    (settings.artifact_dir / job / "final.pt").unlink()
    response = client.get(f"/v1/jobs/{job}/artifacts/final.pt", headers=alice[1])
    assert response.status_code == 404 and response.json()["error"]["code"] == "artifact_missing"


def test_parse_range_edges() -> None:
    assert parse_range(None, 10) is None
    assert parse_range("bytes=0-0", 10) == (0, 1)
    assert parse_range("bytes=-20", 10) == (0, 10)
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=0-", 0)


@pytest.mark.parametrize("header", [b"bytes=\xb2-", b"bytes=-\xb2", b"bytes=0-\xb9", b"bytes=\xd9\xa3-"])
def test_non_ascii_digits_in_a_range_are_416_not_500(client, alice, job, header) -> None:
    response = client.get(f"/v1/jobs/{job}/artifacts/final.pt", headers={**alice[1], "Range": header})
    assert response.status_code == 416, response.text
    assert response.json()["error"]["code"] == "range_not_satisfiable"


# -- served by Starlette's FileResponse (api.routes.artifacts.ArtifactFileResponse) ------------------

BIG = bytes(range(251)) * 10_000  # 2,510,000 bytes: more than two of the response's 1 MiB reads


@pytest.fixture
def big(alice, job, factory, settings) -> str:
    """A checkpoint over two read chunks, so chunk boundaries are crossed."""
    stored = ArtifactStore(settings.artifact_dir).put_bytes(job, "big.pt", BIG, "checkpoint")
    with factory() as session:
        register_artifact(session, job_id=job, owner_id=alice[0], name="big.pt", kind="checkpoint", stored=stored)
        session.commit()
    return f"/v1/jobs/{job}/artifacts/big.pt"


def test_whole_file_over_several_chunks(client, alice, big) -> None:
    response = client.get(big, headers=alice[1])
    assert response.status_code == 200 and response.content == BIG
    assert response.headers["Content-Length"] == str(len(BIG))
    assert "Content-Range" not in response.headers
    assert response.headers["Cache-Control"] == "private, no-cache"


@pytest.mark.parametrize(("header", "start", "end"), [
    ("bytes=1048570-1048585", 1048570, 1048586),  # across the first chunk boundary
    ("bytes=5-2200000", 5, 2200001),  # spans three reads
    ("bytes=-3", len(BIG) - 3, len(BIG)),
])
def test_range_206_has_the_right_bytes_and_headers(client, alice, big, header, start, end) -> None:
    response = client.get(big, headers={**alice[1], "Range": header})
    assert response.status_code == 206
    assert response.content == BIG[start:end]
    assert response.headers["Content-Range"] == f"bytes {start}-{end - 1}/{len(BIG)}"
    assert response.headers["Content-Length"] == str(end - start)
    assert response.headers["ETag"] == f'"{hashlib.sha256(BIG).hexdigest()}"'
    assert response.headers["Content-Disposition"] == 'attachment; filename="big.pt"'
    assert response.headers["Cache-Control"] == "private, no-cache"


def test_if_range_that_is_stale_serves_the_whole_file(client, alice, big) -> None:
    fresh = client.get(big, headers=alice[1])
    etag = fresh.headers["ETag"]
    # stale ETag, weak ETag, and the Last-Modified date (Starlette would honour it; the API's validator is the ETag)
    for stale in ('"0123"', f"W/{etag}", fresh.headers["Last-Modified"]):
        response = client.get(big, headers={**alice[1], "Range": "bytes=10-19", "If-Range": stale})
        assert response.status_code == 200, stale
        assert response.content == BIG and "Content-Range" not in response.headers
        assert response.headers["Content-Length"] == str(len(BIG))
    response = client.get(big, headers={**alice[1], "Range": "bytes=10-19", "If-Range": etag})
    assert response.status_code == 206 and response.content == BIG[10:20]


@pytest.mark.parametrize("header", [f"bytes={len(BIG)}-", f"bytes={len(BIG) + 5}-{len(BIG) + 9}", "bytes=-0"])
def test_unsatisfiable_range_is_416(client, alice, big, header) -> None:
    response = client.get(big, headers={**alice[1], "Range": header})
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{len(BIG)}"
    assert response.json()["error"]["code"] == "range_not_satisfiable"


@pytest.mark.parametrize("header", [b"bytes=\xb2-", b"bytes=1-\xb2\xb3", b"bytes=0-1,\xb2-", b"\xb2ytes=0-1",
                                    b"bytes=\xc2\xb2-\xc2\xb2", b"bytes=\xff", b"bytes=1_0-2_0"])
def test_raw_non_ascii_range_bytes_are_never_a_500(client, alice, big, header) -> None:
    for if_range in (None, b'"\xb2"'):
        extra = {"If-Range": if_range} if if_range is not None else {}
        response = client.get(big, headers={**alice[1], "Range": header, **extra})
        assert response.status_code in (200, 416), (header, if_range, response.status_code)
        if response.status_code == 200:
            assert response.content == BIG
        else:
            assert response.json()["error"]["code"] == "range_not_satisfiable"


def test_304_wins_over_a_range_and_has_no_body(client, alice, big) -> None:
    etag = f'"{hashlib.sha256(BIG).hexdigest()}"'
    response = client.get(big, headers={**alice[1], "If-None-Match": etag, "Range": "bytes=0-9"})
    assert response.status_code == 304 and response.content == b""
    assert response.headers["ETag"] == etag and "Content-Range" not in response.headers


def test_another_users_artifact_is_404_with_or_without_a_range(client, bob, big) -> None:
    for extra in ({}, {"Range": "bytes=0-9"}, {"Range": "bytes=999999999-"}):
        response = client.get(big, headers={**bob[1], **extra})
        assert response.status_code == 404, extra
        assert "ETag" not in response.headers
