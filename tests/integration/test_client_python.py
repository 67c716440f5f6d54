"""The Python client against the real service: uvicorn API, a Celery worker, Redis and PostgreSQL.

Every method once, typed errors carrying the server's own message (401, 404, 409, 422 with
field details), and downloads that resume with Range and check the sha256.
"""

from __future__ import annotations

import hashlib
import tarfile
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from client import (
    ApiError,
    AuthError,
    ChecksumMismatch,
    Client,
    ConflictError,
    DownloadProgress,
    NotFound,
    ValidationFailed,
)
from store.artifacts import ArtifactStore
from store.db import session_scope
from store.users import create_user_with_key
from tests.integration.conftest import PEPPER, ApiServer, ApiUser, Services

pytestmark = pytest.mark.integration

SEARCH = {"epochs": 2, "warmup_epochs": 1, "image_size": 32, "batch_size": 2, "channels": 8, "k": 2, "depth": 3}
RETRAIN = {"epochs": 2, "image_size": 32, "batch_size": 2}
TIMEOUT_S = 150.0


@pytest.fixture(scope="module")
def lab(services: Services) -> ApiUser:
    name = f"client-{uuid.uuid4().hex[:8]}"
    with session_scope(services.sessions) as session:
        user, key = create_user_with_key(session, name, pepper=PEPPER)
        return ApiUser(user.id, name, key)


@pytest.fixture(scope="module")
def client(api_server: ApiServer, lab: ApiUser) -> Any:
    with Client(api_server.url, lab.key) as c:
        yield c


@pytest.fixture(scope="module")
def dataset(client: Client, phantom_dataset: Path) -> dict[str, Any]:
    return client.add_dataset("phantom", phantom_dataset.name, format="nnunet")


@pytest.fixture(scope="module")
def search(client: Client, dataset: dict[str, Any], celery_worker: Any) -> dict[str, Any]:
    """A tiny search, followed with ``watch``: ``{"job": final, "states": [...]}``."""
    job = client.submit_search(dataset["id"], SEARCH)
    states = list(client.watch(job["id"], poll=0.3, timeout=TIMEOUT_S))
    assert states[-1]["status"] == "succeeded", f"{states[-1]['error']}\n{celery_worker.tail()}"
    return {"job": states[-1], "states": states}


@pytest.fixture(scope="module")
def retrain(client: Client, dataset: dict[str, Any], search: dict[str, Any]) -> dict[str, Any]:
    genotype = client.job_genotype(search["job"]["id"])
    job = client.submit_retrain(dataset["id"], {"genotype_id": genotype["id"]}, RETRAIN)
    job = client.wait(job["id"], timeout=TIMEOUT_S, poll=0.3)
    assert job["status"] == "succeeded", job["error"]
    return job


def _server_error(server: ApiServer, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    """What the server itself answers, to compare with what the typed error carries."""
    with server.client() as raw:
        response = raw.request(method, path, **kwargs)
    return response.status_code, response.json()["error"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- service and datasets ------------------------------------------------------------------------


def test_health_ready_and_datasets(client, dataset, api_server, phantom_dataset, tmp_path):
    assert client.health() == {"status": "ok"}
    assert client.ready()["status"] == "ready"
    assert (dataset["status"], dataset["format"], dataset["num_cases"], dataset["synthetic"]) == \
        ("ready", "nnunet", 6, True)
    assert client.dataset(dataset["id"])["report"]["ok"] is True
    archive = tmp_path / "phantom.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(phantom_dataset, arcname="phantom")
    uploaded = client.upload_dataset("uploaded", archive, format="nnunet")
    assert (uploaded["name"], uploaded["status"], uploaded["num_cases"]) == ("uploaded", "ready", 6)
    assert [d["id"] for d in client.datasets()] == [uploaded["id"], dataset["id"]]  # newest first


# -- typed errors carry the server's message --------------------------------------------------------


def test_auth_errors_carry_the_servers_message(api_server):
    for key in (None, "tn_not-a-real-key"):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        status, server = _server_error(api_server, "GET", "/v1/datasets", headers=headers)
        with Client(api_server.url, key) as anonymous, pytest.raises(AuthError) as caught:
            anonymous.datasets()
        error = caught.value
        assert isinstance(error, ApiError) and error.message
        assert (error.status, error.code, error.message) == (status, server["code"], server["message"])
        assert error.status == 401 and str(error) == f"401 {server['code']}: {server['message']}"


def test_not_found_and_conflict_carry_the_servers_message(client, dataset, api_server, lab, phantom_dataset):
    with pytest.raises(NotFound) as caught:
        client.dataset("ds_nope")
    assert caught.value.message == _server_error(api_server, "GET", "/v1/datasets/ds_nope",
                                                 headers=lab.headers)[1]["message"]
    assert "'ds_nope' not found" in caught.value.message
    with pytest.raises(NotFound, match="job_nope"):
        client.job("job_nope")
    with pytest.raises(NotFound, match="'ds_nope' not found"):
        client.submit_search("ds_nope", SEARCH)
    with pytest.raises(ConflictError) as conflict:
        client.add_dataset("phantom", phantom_dataset.name)
    assert conflict.value.status == 409 and "already have a dataset named 'phantom'" in conflict.value.message


def test_validation_errors_carry_field_details(client, dataset, api_server, lab):
    bad = {"dataset_id": dataset["id"], "config": {"epochs": 0, "bogus": 1}}
    status, server = _server_error(api_server, "POST", "/v1/searches", json=bad, headers=lab.headers)
    with pytest.raises(ValidationFailed) as caught:
        client.submit_search(dataset["id"], bad["config"])
    error = caught.value
    assert (error.status, error.code, error.message, error.details) == \
        (status, server["code"], server["message"], server["details"])
    assert "config.bogus" in error.details["fields"]
    with pytest.raises(ValidationFailed, match="exactly one of genotype_id, search_job_id or baseline"):
        client.submit_retrain(dataset["id"], {"baseline": "unet", "genotype_id": "g"}, RETRAIN)


# -- jobs, history, genotypes -------------------------------------------------------------------------


def test_watch_yields_each_change_until_the_search_ends(client, search):
    states = search["states"]
    assert states[0]["status"] in ("queued", "running", "succeeded")
    progress = [s["progress"] for s in states]
    assert progress == sorted(progress) and progress[-1] == 1.0
    keys = ("status", "epoch", "progress", "eta_seconds", "updated_at")
    assert len({tuple(s[k] for k in keys) for s in states}) == len(states)  # each one a change
    assert list(client.watch(search["job"]["id"])) == [client.job(search["job"]["id"])]  # ended: one state


def test_jobs_filters_and_search_history(client, search, retrain):
    sid, rid = search["job"]["id"], retrain["id"]
    assert [j["id"] for j in client.jobs()] == [rid, sid]
    assert [j["id"] for j in client.jobs(kind="search")] == [sid]
    assert [j["id"] for j in client.jobs(status=["succeeded", "failed"], limit=1)] == [rid, sid]  # two pages
    assert [j["id"] for j in client.jobs(max_items=1)] == [rid]
    assert client.jobs(status="queued") == []
    assert [a["epoch"] for a in client.alphas(sid)] == [0, 1]
    history = client.alpha_history(sid)
    assert [a["epoch"] for a in history["items"]] == [0, 1] and set(history["edges"]) == {"dn", "up"}
    assert [a["epoch"] for a in client.alpha_history(sid, after_epoch=0)["items"]] == [1]
    assert [e["epoch"] for e in client.metrics(sid)["epochs"]] == [0, 1]
    genotype = client.job_genotype(sid)
    assert client.genotype(genotype["id"]) == genotype and genotype["genotype"]["C"] == SEARCH["channels"]
    with pytest.raises(ConflictError, match="genotypes come from search jobs"):
        client.job_genotype(rid)


def test_retrain_metrics_and_artifacts(client, retrain, search):
    assert retrain["architecture"]["genotype_id"] == client.job_genotype(search["job"]["id"])["id"]
    assert {c["class_name"] for c in client.metrics(retrain["id"])["cases"]} == {"organ_1", "organ_2"}
    names = {a["name"] for a in client.artifacts(retrain["id"])}
    assert {"best.pt", "final.pt", "metrics.json"} <= names
    assert (Client.main_artifact(retrain), Client.main_artifact(search["job"])) == ("best.pt", "last.pt")
    with pytest.raises(NotFound, match="has no artifact 'nope.pt'; it has: ") as caught:
        client.artifact(retrain["id"], "nope.pt")
    assert caught.value.message.endswith(", ".join(sorted(names)))


# -- downloads --------------------------------------------------------------------------------------


def _requests_of(client: Client) -> list[httpx.Request]:
    seen: list[httpx.Request] = []
    client.http.event_hooks["request"] = [seen.append]
    return seen


def test_download_main_checkpoint_then_resume_with_range(client, retrain, tmp_path):
    meta = client.artifact(retrain["id"], "best.pt")
    whole = client.download(retrain["id"], dest=tmp_path)  # no name: a retrain's best.pt
    assert whole == tmp_path / "best.pt" and _sha(whole) == meta["sha256"]
    data = whole.read_bytes()

    resumed = tmp_path / "resumed.pt"
    (tmp_path / "resumed.pt.part").write_bytes(data[: len(data) // 3])
    seen, events = _requests_of(client), []
    try:
        client.download(retrain["id"], "best.pt", resumed, progress=events.append)
    finally:
        client.http.event_hooks["request"] = []
    ranged = [r for r in seen if "artifacts/best.pt" in str(r.url)]
    assert [r.headers.get("range") for r in ranged] == [f"bytes={len(data) // 3}-"]
    assert ranged[0].headers["if-range"] == f'"{meta["sha256"]}"'
    assert _sha(resumed) == meta["sha256"] and not (tmp_path / "resumed.pt.part").exists()
    assert events[0] == DownloadProgress("best.pt", len(data), len(data) // 3, len(data) // 3, False)
    assert events[-1].done == len(data)


@pytest.mark.parametrize("garbage_size", ["half", "whole"])
def test_a_corrupt_partial_file_is_detected_and_fetched_again(client, retrain, tmp_path, garbage_size):
    meta = client.artifact(retrain["id"], "final.pt")
    size = meta["size"] // 2 if garbage_size == "half" else meta["size"]
    (tmp_path / "final.pt.part").write_bytes(b"\0" * size)
    events: list[DownloadProgress] = []
    path = client.download(retrain["id"], "final.pt", tmp_path, progress=events.append)
    assert _sha(path) == meta["sha256"]
    assert any(e.restarted for e in events) and events[-1] == DownloadProgress(
        "final.pt", meta["size"], meta["size"], 0, True)


def test_bytes_that_do_not_match_the_listed_sha256_are_refused(client, search, services, tmp_path):
    sid = search["job"]["id"]
    meta = client.artifact(sid, "alphas.jsonl")
    stored = ArtifactStore(services.artifact_dir).job_dir(sid) / "alphas.jsonl"
    original = stored.read_bytes()
    stored.write_bytes(original.replace(b"0", b"1"))  # same size, other bytes
    try:
        with pytest.raises(ChecksumMismatch, match=meta["sha256"]) as caught:
            client.download(sid, "alphas.jsonl", tmp_path)
        assert isinstance(caught.value, ValueError)
        assert not (tmp_path / "alphas.jsonl").exists() and not (tmp_path / "alphas.jsonl.part").exists()
    finally:
        stored.write_bytes(original)
    assert _sha(client.download(sid, "alphas.jsonl", tmp_path)) == meta["sha256"]


# -- cancel ------------------------------------------------------------------------------------------


def test_cancel_then_cancel_again_is_a_conflict(client, dataset, retrain):
    job = client.submit_search(dataset["id"], {**SEARCH, "epochs": 200})
    answer = client.cancel(job["id"])
    assert answer["status"] == "cancelled" or answer["cancel_requested"] is True
    final = client.wait(job["id"], timeout=TIMEOUT_S, poll=0.3)
    assert final["status"] == "cancelled" and final["epoch"] < 200
    with pytest.raises(ConflictError, match="already cancelled") as caught:
        client.cancel(job["id"])
    assert caught.value.details == {"status": "cancelled"}
    assert [j["id"] for j in client.jobs(status="cancelled")] == [job["id"]]
