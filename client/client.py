"""`Client(url, api_key)`: datasets, searches, retrains, jobs, history, genotypes, downloads."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from client.errors import ApiError, error_for

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


class Client:
    """A thin, typed wrapper over the REST API; every method returns the JSON the server sent."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.http.request(method, path, **kwargs)
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

    def upload_dataset(self, name: str, archive: str | Path) -> dict[str, Any]:
        archive = Path(archive)
        with archive.open("rb") as fh:
            return self._json("POST", "/v1/datasets", data={"name": name}, files={"file": (archive.name, fh)})

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

    def jobs(self, kind: str | None = None, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        params = {k: v for k, v in {"kind": kind, "status": status, "limit": limit}.items() if v is not None}
        return list(self._paged("/v1/jobs", params))

    def job(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{job_id}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/jobs/{job_id}/cancel")

    def wait(self, job_id: str, timeout: float = 3600.0, poll: float = 1.0) -> dict[str, Any]:
        """Poll until the job ends; raises TimeoutError with its last state."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in TERMINAL:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout:.0f}s "
                                   f"(progress {job.get('progress')})")
            time.sleep(poll)

    def alphas(self, job_id: str) -> list[dict[str, Any]]:
        return list(self._paged(f"/v1/jobs/{job_id}/alphas", {}))

    def metrics(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{job_id}/metrics")

    def job_genotype(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{job_id}/genotype")

    def genotype(self, genotype_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/genotypes/{genotype_id}")

    def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        body = self._json("GET", f"/v1/jobs/{job_id}/artifacts")
        return body["items"] if isinstance(body, dict) and "items" in body else body

    def download(self, job_id: str, name: str, dest: str | Path, chunk: int = 1 << 20) -> Path:
        """Download an artefact; an interrupted download resumes with a Range request, and
        the result is checked against the server's sha256 (ValueError when it differs)."""
        meta = next((a for a in self.artifacts(job_id) if a["name"] == name), None)
        if meta is None:
            raise error_for(404, {"error": {"code": "not_found", "message": f"job {job_id} has no artifact {name!r}"}})
        dest = Path(dest)
        if dest.is_dir():
            dest = dest / name
        partial = dest.with_name(dest.name + ".part")
        have = partial.stat().st_size if partial.exists() else 0
        if have > meta["size"]:
            partial.unlink()
            have = 0
        headers = {"Range": f"bytes={have}-"} if 0 < have < meta["size"] else {}
        if have < meta["size"]:
            with self.http.stream("GET", f"/v1/jobs/{job_id}/artifacts/{name}", headers=headers) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_for(response.status_code, response.json())
                mode = "ab" if response.status_code == 206 else "wb"
                with partial.open(mode) as fh:
                    for block in response.iter_bytes(chunk):
                        fh.write(block)
        digest = hashlib.sha256(partial.read_bytes()).hexdigest()
        if digest != meta["sha256"]:
            partial.unlink()
            raise ValueError(f"{name}: sha256 {digest} does not match the server's {meta['sha256']}; download again")
        partial.replace(dest)
        return dest

    def _paged(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        cursor = None
        while True:
            query = {**params, **({"cursor": cursor} if cursor else {})}
            body = self._json("GET", path, params=query)
            yield from body["items"]
            cursor = body.get("next_cursor")
            if not cursor:
                return


__all__ = ["ApiError", "Client"]
