"""Submitting searches and retrains, listing, showing and cancelling jobs."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.queue import CeleryQueue, dispatch_installed
from nas_core.models import default_genotype
from store.history import save_genotype
from store.models import Dataset, Job
from tests.api.support import RecordingQueue

SMALL = {"epochs": 2, "image_size": 32, "batch_size": 2, "channels": 8, "nodes": 2, "k": 2, "seed": 1}


@pytest.fixture
def ds(alice, add_dataset) -> str:
    return add_dataset(alice[0])


def _search(client: TestClient, headers: dict, dataset_id: str, config: dict | None = None, **kw: Any):
    return client.post("/v1/searches", json={"dataset_id": dataset_id, "config": config or SMALL},
                       headers=headers, **kw)


def test_search_is_accepted_committed_then_enqueued(make_client, alice, ds, factory) -> None:
    seen: list[tuple[str, str, str | None]] = []

    def spy(job_id: str, kind: str) -> None:
        with factory() as other:  # another connection: the row must already be committed
            status = other.scalar(select(Job.status).where(Job.id == job_id))
        seen.append((job_id, kind, status))

    client = make_client(queue=RecordingQueue(forward_to=CeleryQueue(), on_send=spy))  # then the real send
    broker = redis.Redis.from_url("redis://127.0.0.1:6379/10")
    broker.flushdb()

    response = _search(client, alice[1], ds)

    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert "Idempotent-Replayed" not in response.headers
    assert job["kind"] == "search" and job["status"] == "queued" and job["epochs"] == 2
    assert job["max_attempts"] == 4 and job["attempt"] == 0 and job["dataset_id"] == ds
    assert job["config"]["k"] == 2 and job["config"]["w_lr"] == 0.025  # defaults filled in
    assert job["links"]["alphas"] == f"/v1/jobs/{job['id']}/alphas"
    assert seen == [(job["id"], "search", "queued")]
    assert dispatch_installed()
    assert broker.llen("gpu") == 1


@pytest.mark.parametrize(
    ("config", "fields"),
    [
        ({"channels": 8, "k": 3}, ["config.k"]),
        ({"epochs": -1}, ["config.epochs"]),
        ({"image_size": 10**6}, ["config.image_size"]),
        ({"batch_size": 0, "nodes": 9}, ["config.batch_size", "config.nodes"]),
        ({"epochz": 3}, ["config.epochz"]),
        ({"epochs": "many"}, ["config.epochs"]),
        ({"epochs": True}, ["config.epochs"]),
    ],
)
def test_search_config_errors_name_each_field(client, alice, ds, config, fields) -> None:
    response = _search(client, alice[1], ds, config)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert sorted(error["details"]["fields"]) == sorted(fields)
    for field in fields:
        assert field in error["message"]


def test_bad_top_level_body_is_422_with_fields(client, alice, ds) -> None:
    response = client.post("/v1/searches", json={"config": SMALL, "colour": "red"}, headers=alice[1])
    assert response.status_code == 422
    fields = response.json()["error"]["details"]["fields"]
    assert set(fields) == {"dataset_id", "colour"}
    assert response.json()["error"]["code"] == "validation_error"


def test_unknown_dataset_is_404(client, alice) -> None:
    response = _search(client, alice[1], "ds_nope")
    assert response.status_code == 404
    assert "dataset 'ds_nope' not found" in response.json()["error"]["message"]


def test_idempotency_key_replays_the_same_job(make_client, alice, ds, factory) -> None:
    recorded = RecordingQueue()
    client = make_client(queue=recorded)
    headers = {**alice[1], "Idempotency-Key": "submit-1"}
    first = _search(client, headers, ds)
    again = _search(client, headers, ds)
    assert first.status_code == again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    other = _search(client, headers, ds, {**SMALL, "seed": 2})
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_conflict"
    with factory() as session:
        assert len(session.scalars(select(Job)).all()) == 1
    assert recorded.sent == [first.json()["id"]]  # the replay sent no second message


def test_dataset_must_be_ready(client, alice, add_dataset) -> None:
    invalid = add_dataset(alice[0], name="bad", status="invalid")
    response = _search(client, alice[1], invalid)
    assert response.status_code == 409 and response.json()["error"]["code"] == "dataset_not_ready"


def test_invalid_idempotency_key_is_422(client, alice, ds) -> None:
    response = _search(client, {**alice[1], "Idempotency-Key": "x" * 300}, ds)
    assert response.status_code == 422
    assert "header.Idempotency-Key" in response.json()["error"]["details"]["fields"]


# --- retrains ---------------------------------------------------------------------------------


def _retrain(client: TestClient, headers: dict, dataset_id: str, architecture: dict, **config: Any):
    body = {"dataset_id": dataset_id, "architecture": architecture, "config": {"epochs": 3, **config}}
    return client.post("/v1/retrains", json=body, headers=headers)


def _genotype(factory: sessionmaker[Session], owner_id: str, genotype: dict | None = None,
              job_id: str | None = None) -> str:
    with factory() as session:
        row = save_genotype(session, owner_id=owner_id, genotype=genotype or default_genotype().to_dict(),
                            job_id=job_id)
        session.commit()
        return row.id


def test_retrain_of_a_baseline(client, alice, ds) -> None:
    response = _retrain(client, alice[1], ds, {"baseline": "unetpp"})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["kind"] == "retrain" and job["architecture"] == {"baseline": "unetpp"} and job["epochs"] == 3
    assert job["links"]["alphas"] is None


def test_retrain_of_a_genotype_id(client, alice, ds, factory) -> None:
    gen = _genotype(factory, alice[0])
    response = _retrain(client, alice[1], ds, {"genotype_id": gen})
    assert response.status_code == 202, response.text
    arch = response.json()["architecture"]
    assert arch["genotype_id"] == gen and arch["genotype"] == default_genotype().to_dict()


def test_retrain_of_a_search_job(client, alice, ds, factory, add_job) -> None:
    running = add_job(alice[0], ds, status="running")
    response = _retrain(client, alice[1], ds, {"search_job_id": running})
    assert response.status_code == 409
    assert "has no final genotype yet (status running)" in response.json()["error"]["message"]

    done = add_job(alice[0], ds, status="succeeded")
    assert _retrain(client, alice[1], ds, {"search_job_id": done}).status_code == 409  # no genotype row
    gen = _genotype(factory, alice[0], job_id=done)
    response = _retrain(client, alice[1], ds, {"search_job_id": done})
    assert response.status_code == 202, response.text
    assert response.json()["architecture"]["search_job_id"] == done
    assert response.json()["architecture"]["genotype_id"] == gen

    retrain = response.json()["id"]
    response = _retrain(client, alice[1], ds, {"search_job_id": retrain})
    assert response.status_code == 422 and "is a retrain job" in response.json()["error"]["message"]


def test_retrain_refuses_foreign_invalid_or_unfit_genotypes(client, alice, bob, ds, factory) -> None:
    foreign = _genotype(factory, bob[0])
    response = _retrain(client, alice[1], ds, {"genotype_id": foreign})
    assert response.status_code == 404 and "genotype" in response.json()["error"]["message"]

    bad_op = default_genotype().to_dict()
    bad_op["dn"][0] = ["teleport", 0]
    response = _retrain(client, alice[1], ds, {"genotype_id": _genotype(factory, alice[0], bad_op)})
    assert response.status_code == 422 and "'teleport'" in response.json()["error"]["message"]

    tiny = {**default_genotype().to_dict(), "C": 2}
    response = _retrain(client, alice[1], ds, {"genotype_id": _genotype(factory, alice[0], tiny)})
    assert response.status_code == 422
    assert "its C is 2, outside 4..256" in response.json()["error"]["message"]


def test_retrain_architecture_needs_exactly_one_source(client, alice, ds) -> None:
    response = _retrain(client, alice[1], ds, {"baseline": "unet", "genotype_id": "gen_x"})
    assert response.status_code == 422
    assert "architecture" in response.json()["error"]["details"]["fields"]
    response = _retrain(client, alice[1], ds, {"baseline": "resnet"})
    assert "architecture.baseline" in response.json()["error"]["details"]["fields"]
    response = _retrain(client, alice[1], ds, {"baseline": "unet"}, lr=-1, val_fraction=2)
    assert set(response.json()["error"]["details"]["fields"]) == {"config.lr", "config.val_fraction"}


# --- list, show, cancel -----------------------------------------------------------------------


def test_list_pages_and_filters(client, alice, ds, add_job) -> None:
    ids = [add_job(alice[0], ds) for _ in range(3)]
    retrain = add_job(alice[0], ds, kind="retrain", status="failed", error="out of memory")
    first = client.get("/v1/jobs?limit=2", headers=alice[1]).json()
    second = client.get(f"/v1/jobs?limit=2&cursor={first['next_cursor']}", headers=alice[1]).json()
    assert second["next_cursor"] is None
    seen = [j["id"] for j in first["items"] + second["items"]]
    assert sorted(seen) == sorted([*ids, retrain]) and len(seen) == 4

    only = client.get("/v1/jobs?kind=retrain", headers=alice[1]).json()["items"]
    assert [j["id"] for j in only] == [retrain] and only[0]["error"] == "out of memory"
    queued = client.get("/v1/jobs?status=queued&status=running", headers=alice[1]).json()["items"]
    assert sorted(j["id"] for j in queued) == sorted(ids)

    bad = client.get("/v1/jobs?status=sleeping", headers=alice[1])
    assert bad.status_code == 422 and "query.status.0" in bad.json()["error"]["details"]["fields"]
    bad = client.get("/v1/jobs?cursor=garbage!", headers=alice[1])
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_cursor"
    assert client.get("/v1/jobs?limit=0", headers=alice[1]).status_code == 422


def test_get_job_shows_progress(client, alice, ds, add_job) -> None:
    job_id = add_job(alice[0], ds, status="running", epoch=1, progress=0.5, eta_seconds=12.0,
                     latest_metrics={"val_dsc": 0.4}, attempt=1)
    job = client.get(f"/v1/jobs/{job_id}", headers=alice[1]).json()
    assert (job["status"], job["epoch"], job["progress"], job["eta_seconds"]) == ("running", 1, 0.5, 12.0)
    assert job["latest_metrics"] == {"val_dsc": 0.4} and job["attempt"] == 1


def test_cancel(client, alice, ds, add_job) -> None:
    queued = add_job(alice[0], ds)
    response = client.post(f"/v1/jobs/{queued}/cancel", headers=alice[1])
    assert response.status_code == 200 and response.json()["status"] == "cancelled"

    running = add_job(alice[0], ds, status="running")
    response = client.post(f"/v1/jobs/{running}/cancel", headers=alice[1])
    assert response.status_code == 202
    assert response.json()["status"] == "running" and response.json()["cancel_requested"] is True

    for status in ("succeeded", "cancelled"):
        finished = add_job(alice[0], ds, status=status)
        response = client.post(f"/v1/jobs/{finished}/cancel", headers=alice[1])
        assert response.status_code == 409
        assert f"already {status}" in response.json()["error"]["message"]


def test_retrain_refuses_validation_cases_the_search_chose_with(client, alice, ds, factory, add_job) -> None:
    from nas_core.data import open_dataset
    from nas_core.data.splits import plan_split

    search = add_job(alice[0], ds, status="succeeded")
    _genotype(factory, alice[0], job_id=search)
    with factory() as session:
        dataset = session.get(Dataset, ds)
        ids = [c.case_id for c in open_dataset(dataset.path).cases]
    searched = plan_split(ids, val_fraction=0.2, seed=0).train  # the search's default split
    unseen = sorted(set(ids) - set(searched))

    response = _retrain(client, alice[1], ds, {"search_job_id": search}, val_cases=[searched[0]])
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "data_leak" and error["details"]["cases"] == [searched[0]]
    assert searched[0] in error["message"] and "val_cases" in error["message"]
    # the same leak through the genotype's id, and through a test case
    gen = _genotype(factory, alice[0], job_id=search)
    assert _retrain(client, alice[1], ds, {"genotype_id": gen}, val_cases=unseen,
                    test_cases=[searched[-1]]).json()["error"]["code"] == "data_leak"
    # cases the search never saw are accepted
    response = _retrain(client, alice[1], ds, {"search_job_id": search}, val_cases=unseen)
    assert response.status_code == 202, response.text
    assert response.json()["config"]["val_cases"] == unseen
