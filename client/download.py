"""Resumable, sha256-checked artefact downloads.

The bytes go to ``DEST.part`` as they arrive, so an interrupted download leaves what it
got; the next call asks for the rest with ``Range: bytes=N-`` (and ``If-Range`` with the
listed ETag, so a file replaced on the server comes back whole). The finished file must
hash to the server's sha256; when a *resumed* file does not, the kept prefix was bad, so
it is fetched once more from byte 0 before ``ChecksumMismatch`` is raised.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from client.errors import ChecksumMismatch, error_for

CHUNK = 1 << 20


@dataclass(frozen=True)
class DownloadProgress:
    """One report to a ``progress`` callback: ``done`` of ``total`` bytes are in the partial file."""

    name: str
    total: int
    done: int
    resumed_from: int = 0  # bytes kept from an earlier, interrupted download (0: from the start)
    restarted: bool = False  # a resumed file failed the sha256 check and is fetched again whole


ProgressFn = Callable[[DownloadProgress], None]


def sha256_of(path: Path, chunk: int = CHUNK) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def partial_path(dest: Path) -> Path:
    """Where the bytes of ``dest`` collect until they are complete and checked."""
    return dest.with_name(dest.name + ".part")


def _fetch(http: httpx.Client, url: str, meta: dict[str, Any], partial: Path, chunk: int,
           progress: ProgressFn | None, restarted: bool) -> str:
    """Fill ``partial`` up to the artefact's size; returns the sha256 the server vouched for."""
    size, expected = meta["size"], meta["sha256"]
    have = partial.stat().st_size if partial.exists() else 0
    if have > size:
        partial.unlink()
        have = 0
    if have == size:
        partial.touch()  # a zero-byte artefact
        if progress:
            progress(DownloadProgress(meta["name"], size, size, have, restarted))
        return expected
    headers = {"Range": f"bytes={have}-", "If-Range": f'"{expected}"'} if have else {}
    with http.stream("GET", url, headers=headers) as response:
        if response.status_code >= 400:
            response.read()
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text
            raise error_for(response.status_code, body)
        resumed = response.status_code == 206
        etag = response.headers.get("etag", "").removeprefix("W/").strip('"')
        done = have if resumed else 0
        if progress:
            progress(DownloadProgress(meta["name"], size, done, done, restarted))
        with partial.open("ab" if resumed else "wb") as fh:
            for block in response.iter_bytes(chunk):
                fh.write(block)
                done += len(block)
                if progress:
                    progress(DownloadProgress(meta["name"], size, done, have if resumed else 0, restarted))
    return etag or expected


def download_artifact(http: httpx.Client, job_id: str, meta: dict[str, Any], dest: Path, chunk: int = CHUNK,
                      progress: ProgressFn | None = None) -> Path:
    """Download the artefact described by ``meta`` (an item of the artefact list) to ``dest``."""
    url = f"/v1/jobs/{job_id}/artifacts/{meta['name']}"
    partial = partial_path(dest)
    resuming = partial.exists() and partial.stat().st_size > 0
    expected = _fetch(http, url, meta, partial, chunk, progress, restarted=False)
    digest = sha256_of(partial)
    if digest != expected and resuming:
        partial.unlink()  # the bytes kept from before were not this file's: start over once
        expected = _fetch(http, url, meta, partial, chunk, progress, restarted=True)
        digest = sha256_of(partial)
    if digest != expected:
        partial.unlink()
        raise ChecksumMismatch(meta["name"], digest, expected)
    partial.replace(dest)
    return dest
