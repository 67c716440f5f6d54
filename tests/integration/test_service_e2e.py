"""The whole service over HTTP: uvicorn API + real worker process + Redis + PostgreSQL.

A lab registers a dataset, searches, retrains the found genotype, downloads the checkpoint
(sha256 as listed), and cancels a running search.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from tests.integration.conftest import ApiServer, ApiUser, WorkerProcess, wait_for

pytestmark = pytest.mark.integration

SEARCH = {"epochs": 2, "warmup_epochs": 1, "image_size": 32, "batch_size": 2, "channels": 8, "k": 2, "depth": 3}
RETRAIN = {"epochs": 2, "image_size": 32, "batch_size": 2}
TIMEOUT_S = 120.0


def _ok(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: " \
                                           f"{response.status_code} {response.text}"
    return response.json()


def _wait_status(client: httpx.Client, job_id: str, statuses: set[str], server: ApiServer,
                 worker: WorkerProcess) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        job = _ok(client.get(f"/v1/jobs/{job_id}"), 200)
        return job if job["status"] in statuses else None

    return wait_for(reached, TIMEOUT_S, f"job {job_id} to reach {sorted(statuses)}", interval=0.5,
                    on_timeout=lambda: f"{worker.tail()}\n{server.tail()}")


@pytest.fixture
def client(api_server: ApiServer, api_user: ApiUser) -> Any:
    with api_server.client(headers=api_user.headers) as c:
        yield c


@pytest.fixture
def dataset_id(client: httpx.Client, phantom_dataset: Path) -> str:
    return _ok(client.post("/v1/datasets", json={"name": "phantom", "path": phantom_dataset.name}), 201)["id"]


def test_search_then_retrain_then_download_the_checkpoint(client, dataset_id, api_server, celery_worker):
    submitted = client.post("/v1/searches", json={"dataset_id": dataset_id, "config": SEARCH})
    search = _ok(submitted, 202)
    assert submitted.headers["location"] == f"/v1/jobs/{search['id']}"
    search = _wait_status(client, search["id"], {"succeeded", "failed", "cancelled"}, api_server, celery_worker)
    assert (search["status"], search["error"], search["progress"], search["epoch"]) == ("succeeded", None, 1.0, 2)
    genotype = _ok(client.get(f"/v1/jobs/{search['id']}/genotype"), 200)
    assert genotype["params"] > 0 and genotype["genotype"]["C"] == SEARCH["channels"]
    alphas = _ok(client.get(f"/v1/jobs/{search['id']}/alphas"), 200)
    assert [item["epoch"] for item in alphas["items"]] == [0, 1]

    retrain = _ok(client.post("/v1/retrains", json={"dataset_id": dataset_id, "config": RETRAIN,
                                                    "architecture": {"search_job_id": search["id"]}}), 202)
    retrain = _wait_status(client, retrain["id"], {"succeeded", "failed", "cancelled"}, api_server, celery_worker)
    assert retrain["status"] == "succeeded", retrain["error"]
    metrics = _ok(client.get(f"/v1/jobs/{retrain['id']}/metrics"), 200)
    assert {c["class_name"] for c in metrics["cases"]} == {"organ_1", "organ_2"}

    listed = {a["name"]: a for a in _ok(client.get(f"/v1/jobs/{retrain['id']}/artifacts"), 200)["items"]}
    best = client.get(listed["best.pt"]["download"])
    assert best.status_code == 200 and hashlib.sha256(best.content).hexdigest() == listed["best.pt"]["sha256"]
    state = torch.load(io.BytesIO(best.content), map_location="cpu", weights_only=False)
    assert state["architecture"] == {"genotype": genotype["genotype"]}


def test_cancel_stops_a_running_search(client, dataset_id, api_server, celery_worker):
    long_search = {**SEARCH, "epochs": 200}
    job = _ok(client.post("/v1/searches", json={"dataset_id": dataset_id, "config": long_search}), 202)
    _wait_status(client, job["id"], {"running"}, api_server, celery_worker)
    assert _ok(client.post(f"/v1/jobs/{job['id']}/cancel"), 202)["cancel_requested"] is True
    job = _wait_status(client, job["id"], {"cancelled", "succeeded", "failed"}, api_server, celery_worker)
    assert job["status"] == "cancelled" and job["epoch"] < 200
