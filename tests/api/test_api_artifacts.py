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
