"""`Client(url, api_key)`: datasets, searches, retrains, jobs, history, genotypes, downloads."""

from __future__ import annotations

import collections
import itertools
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from client.download import CHUNK, DownloadProgress, ProgressFn, download_artifact
from client.errors import ApiError, NotFound, error_for

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_STATUSES = frozenset({502, 503, 504})
MAIN_ARTIFACT = {"retrain": "best.pt", "search": "last.pt"}


class Client:
    """A thin, typed wrapper over the REST API; every method returns the JSON the server sent."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None, retry_for: float = 120.0) -> None:
        """``retry_for``: how long (seconds, in all) an idempotent call keeps retrying a 502/503/504
        or a connection error, honouring ``Retry-After``; 0 never retries."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout, transport=transport)
        self.retry_for = retry_for

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call, retried while it is safe (idempotent methods, and POSTs that carry an
        ``Idempotency-Key``) on 502/503/504 and connection errors, backing off from 0.5 s to
        10 s or as ``Retry-After`` asks, for at most ``retry_for`` seconds in all."""
        safe = method.upper() in IDEMPOTENT or "Idempotency-Key" in (kwargs.get("headers") or {})
        deadline = time.monotonic() + (self.retry_for if safe else 0.0)
        delay = 0.5
        while True:
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError:
                if time.monotonic() + delay > deadline:
                    raise
                wait = delay
            else:
                if response.status_code not in RETRY_STATUSES or time.monotonic() >= deadline:
                    return response
                wait = _retry_after(response, delay)
                if time.monotonic() + wait > deadline:
                    return response
            time.sleep(wait)
            delay = min(delay * 2, 10.0)

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._send(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = response.text
            raise error_for(response.status_code, body)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    # -- service ------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self._json("GET", "/healthz")

    def ready(self) -> dict[str, Any]:
        return self._json("GET", "/readyz")

    # -- datasets -------------------------------------------------------------------
    def add_dataset(self, name: str, path: str, format: str | None = None) -> dict[str, Any]:
        body = {"name": name, "path": path, **({"format": format} if format else {})}
        return self._json("POST", "/v1/datasets", json=body)

    def upload_dataset(self, name: str, archive: str | Path, format: str | None = None) -> dict[str, Any]:
        """Upload a .zip/.tar/.tar.gz archive of a dataset; the server unpacks and verifies it."""
        archive = Path(archive)
        fields = {"name": name, **({"format": format} if format else {})}
        with archive.open("rb") as fh:
            return self._json("POST", "/v1/datasets", data=fields, files={"file": (archive.name, fh)})

    def datasets(self) -> list[dict[str, Any]]:
        return list(self._paged("/v1/datasets", {}))

    def dataset(self, dataset_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/datasets/{dataset_id}")

    # -- jobs -----------------------------------------------------------------------
    def submit_search(self, dataset_id: str, config: dict[str, Any] | None = None,
                      idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._json("POST", "/v1/searches", json={"dataset_id": dataset_id, "config": config or {}},
                          headers=headers)

    def submit_retrain(self, dataset_id: str, architecture: dict[str, Any], config: dict[str, Any] | None = None,
                       idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = {"dataset_id": dataset_id, "architecture": architecture, "config": config or {}}
        return self._json("POST", "/v1/retrains", json=body, headers=headers)

    def iter_jobs(self, kind: str | None = None, status: str | Sequence[str] | None = None,
                  limit: int = 50) -> Iterator[dict[str, Any]]:
        """Your jobs, newest first, page by page (``limit`` per page); ``status``: one or several."""
        statuses = [status] if isinstance(status, str) else list(status or [])
        params = {k: v for k, v in {"kind": kind, "status": statuses or None, "limit": limit}.items()
                  if v is not None}
        return self._paged("/v1/jobs", params)

    def jobs(self, kind: str | None = None, status: str | Sequence[str] | None = None, limit: int = 50,
             max_items: int | None = None) -> list[dict[str, Any]]:
        """All your jobs (or the ``max_items`` newest) of a kind and some statuses."""
        return list(itertools.islice(self.iter_jobs(kind, status, limit), max_items))

    def job(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{job_id}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued job (now) or a running one (within a step; ``cancel_requested`` is true)."""
        return self._json("POST", f"/v1/jobs/{job_id}/cancel")

    def logs(self, job_id: str, since: int = 0, tail: int | None = None) -> dict[str, Any]:
        """``{"lines", "next_since", "status"}``: the job's log lines after ``since`` (or the last ``tail``)."""
        params = {"since": since, **({"tail": tail} if tail else {})}
        return self._json("GET", f"/v1/jobs/{job_id}/logs", params=params)

    def follow_logs(self, job_id: str, poll: float = 1.0) -> Iterator[str]:
        """Every log line of the job as it is written, until the job has ended."""
        since = 0
        while True:
            body = self.logs(job_id, since=since)
            yield from body["lines"]
            since = body["next_since"]
            if body["status"] in TERMINAL and not body["lines"]:
                return
            if not body["lines"]:
                time.sleep(poll)

    def watch(self, job_id: str, poll: float = 1.0, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield the job each time its state changes (status, epoch, progress, ETA, metrics), the
        first one at once and the last one when it has ended; TimeoutError after ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last: tuple[Any, ...] | None = None
        while True:
            job = self.job(job_id)
            state = tuple(job.get(k) for k in ("status", "epoch", "progress", "eta_seconds", "updated_at"))
            if state != last:
                last = state
                yield job
            if job["status"] in TERMINAL:
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout:.0f}s "
                                   f"(progress {job.get('progress')})")
            time.sleep(poll)

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 1.0) -> dict[str, Any]:
        """Poll until the job ends (jobs run for hours: no limit unless ``timeout`` seconds are
        given, then TimeoutError with its last state). A 503 while polling is retried."""
        return collections.deque(self.watch(job_id, poll=poll, timeout=timeout), maxlen=1)[0]

    def alphas(self, job_id: str) -> list[dict[str, Any]]:
        """A search's architecture weights, one item per epoch (all pages)."""
        return list(self._paged(f"/v1/jobs/{job_id}/alphas", {}))

    def alpha_history(self, job_id: str, after_epoch: int | None = None) -> dict[str, Any]:
        """The whole alpha history with its edge labels: ``{job_id, edges, items}``."""
        params = {} if after_epoch is None else {"after_epoch": after_epoch}
        first = self._json("GET", f"/v1/jobs/{job_id}/alphas", params=params)
        items = list(first["items"])
        if first.get("next_cursor"):
            items += self._paged(f"/v1/jobs/{job_id}/alphas", {}, cursor=first["next_cursor"])
        return {"job_id": first["job_id"], "edges": first["edges"], "items": items}

    def metrics(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{job_id}/metrics")

    def job_genotype(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{job_id}/genotype")

    def genotype(self, genotype_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/genotypes/{genotype_id}")

    def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        body = self._json("GET", f"/v1/jobs/{job_id}/artifacts")
        return body["items"] if isinstance(body, dict) and "items" in body else body

    def artifact(self, job_id: str, name: str) -> dict[str, Any]:
        """One artefact's listing (size, sha256, download link); NotFound names the ones there are."""
        items = self.artifacts(job_id)
        meta = next((a for a in items if a["name"] == name), None)
        if meta is None:
            have = ", ".join(sorted(a["name"] for a in items)) or "none yet (they appear when it succeeds)"
            raise NotFound(404, "not_found", f"job {job_id} has no artifact {name!r}; it has: {have}",
                           {"resource": "artifact", "id": name})
        return meta

    @staticmethod
    def main_artifact(job: dict[str, Any]) -> str:
        """The checkpoint worth downloading: ``best.pt`` of a retrain, ``last.pt`` of a search."""
        return MAIN_ARTIFACT[job["kind"]]

    def download(self, job_id: str, name: str | None = None, dest: str | Path = ".", chunk: int = CHUNK,
                 progress: ProgressFn | None = None) -> Path:
        """Download an artefact (default: the job's main checkpoint) to ``dest`` (a file, or a
        folder to put it in). An interrupted download resumes with a Range request; the result
        is checked against the server's sha256 (``ChecksumMismatch``, a ValueError, when it differs)."""
        if name is None:
            name = self.main_artifact(self.job(job_id))
        meta = self.artifact(job_id, name)
        dest = Path(dest)
        if dest.is_dir():
            dest = dest / name
        return download_artifact(self.http, job_id, meta, dest, chunk, progress)

    def _paged(self, path: str, params: dict[str, Any], cursor: str | None = None) -> Iterator[dict[str, Any]]:
        while True:
            query = {**params, **({"cursor": cursor} if cursor else {})}
            body = self._json("GET", path, params=query)
            yield from body["items"]
            cursor = body.get("next_cursor")
            if not cursor:
                return


def _retry_after(response: httpx.Response, default: float) -> float:
    """Seconds the server asks to wait (``Retry-After`` in seconds), else ``default``; capped at 60."""
    value = response.headers.get("Retry-After", "").strip()
    return min(float(value), 60.0) if value.isascii() and value.isdigit() else default


__all__ = ["ApiError", "Client", "DownloadProgress"]
