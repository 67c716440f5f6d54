"""Hostile inputs: out-of-range configs, non-finite numbers, bad genotypes, NUL characters, malformed ids.

Every one is a 4xx naming the field where there is one, never a 500, and nothing is queued.
(``tests/api/test_api_jobs.py`` covers the search config's K, epochs, image size, batch and
unknown keys; here: the same for retrains, the numbers JSON allows but no range check
refuses, genotypes with unknown ops, and characters PostgreSQL cannot store.)
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import Depends
from fastapi.testclient import TestClient

from api.deps import SESSION_COOKIE, SessionDep, current_user
from api.main import create_app
from nas_core.models import default_genotype
from store.datasets import get_dataset_by_name
from store.history import save_genotype
from store.models import Job
from tests.api.support import RecordingQueue


@pytest.fixture
def ds(alice, add_dataset) -> str:
    return add_dataset(alice[0])


@pytest.fixture
def job_queue() -> RecordingQueue:
    return RecordingQueue()  # the clients' submits are recorded, not sent


@pytest.fixture
def no_queue(job_queue: RecordingQueue) -> list[str]:
    return job_queue.sent


def _raw(client: TestClient, path: str, body: str, headers: dict[str, str]):
    """POST a JSON text as is (NaN and Infinity are not JSON, but Python's parser takes them)."""
    return client.post(path, content=body.encode(), headers={**headers, "Content-Type": "application/json"})


def _fields(response) -> dict[str, str]:
    assert response.status_code == 422, response.text
    return response.json()["error"]["details"]["fields"]


@pytest.mark.parametrize(
    ("config", "fields"),
    [
        ({"image_size": 10**6}, {"config.image_size"}),
        ({"epochs": -1}, {"config.epochs"}),
        ({"batch_size": 0}, {"config.batch_size"}),
        ({"epochs": 10**30, "lr": 0}, {"config.epochs", "config.lr"}),
        ({"val_fraction": 1.0, "weight_decay": -0.1}, {"config.val_fraction", "config.weight_decay"}),
        ({"steps_per_epoch": 0, "cpu_threads": 0}, {"config.steps_per_epoch", "config.cpu_threads"}),
        ({"device": "tpu"}, {"config.device"}),
        ({"flip": "yes"}, {"config.flip"}),
        ({"warmup_epochs": 3}, {"config.warmup_epochs"}),  # a search option, unknown to a retrain
    ],
)
def test_retrain_config_errors_name_each_field(client, alice, ds, no_queue, config, fields) -> None:
    body = {"dataset_id": ds, "architecture": {"baseline": "unet"}, "config": config}
    response = client.post("/v1/retrains", json=body, headers=alice[1])
    assert set(_fields(response)) == fields
    assert no_queue == []


@pytest.mark.parametrize(
    ("path", "field", "value"),
    [("/v1/searches", "grad_clip", "Infinity"), ("/v1/searches", "w_lr_min", "NaN"),
     ("/v1/searches", "w_momentum", "-Infinity"), ("/v1/searches", "arch_betas", "[NaN, 0.9]"),
     ("/v1/searches", "val_fraction", "NaN"), ("/v1/retrains", "lr", "Infinity"),
     ("/v1/retrains", "weight_decay", "NaN"), ("/v1/retrains", "val_fraction", "-Infinity")],
)
def test_non_finite_numbers_are_422_not_500(client, alice, ds, factory, no_queue, path, field, value) -> None:
    """NaN/Infinity passed some range checks (Infinity > 0) and then broke the JSONB insert: a 500."""
    arch = ', "architecture": {"baseline": "unet"}' if path == "/v1/retrains" else ""
    response = _raw(client, path, f'{{"dataset_id": "{ds}"{arch}, "config": {{"{field}": {value}}}}}', alice[1])
    fields = _fields(response)
    assert any(name.startswith(f"config.{field}") for name in fields), fields
    assert "finite" in json.dumps(fields)
    with factory() as session:
        assert session.query(Job).count() == 0
    assert no_queue == []


def test_genotypes_with_unknown_ops_or_bad_shapes_are_422_with_the_field(client, alice, ds, factory,
                                                                         no_queue) -> None:
    good = default_genotype().to_dict()
    bad: dict[str, dict[str, Any]] = {
        "unknown op": {**good, "dn": [["teleport", 0], *good["dn"][1:]]},
        "unknown op upstream": {**good, "up": [["conv_99x99", 1], *good["up"][1:]]},
        "source out of range": {**good, "dn": [[good["dn"][0][0], 99], *good["dn"][1:]]},
        "C outside the search space": {**good, "C": 1000},
        "not a genotype at all": {"hello": "world"},
    }
    for what, genotype in bad.items():
        with factory() as session:
            gen = save_genotype(session, owner_id=alice[0], genotype=genotype).id
            session.commit()
        body = {"dataset_id": ds, "architecture": {"genotype_id": gen}, "config": {"epochs": 1}}
        response = client.post("/v1/retrains", json=body, headers=alice[1])
        assert response.status_code == 422, (what, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_genotype", (what, error)
        assert error["details"]["fields"] == {"architecture.genotype_id": error["message"]}, (what, error)
    assert no_queue == []


# --- characters and ids ---------------------------------------------------------------------------


def test_nul_characters_anywhere_are_4xx_not_500(client, alice, ds, add_job, data_root, factory) -> None:
    """PostgreSQL text cannot hold NUL: each place a client can put one is refused, never a 500."""
    job = add_job(alice[0], ds)
    key = alice[1]["Authorization"].removeprefix("Bearer ")
    gets = [f"/v1/jobs/{job}%00", "/v1/jobs/%00", "/v1/datasets/ds%00x", "/v1/genotypes/%00",
            f"/v1/jobs/{job}/artifacts/model%00.pt", f"/v1/jobs/{job}/plots/curves.png%00",
            "/v1/jobs?cursor=%00", "/v1/datasets?cursor=a%00b", "/v1/genotypes/%00/diagram.svg"]
    for url in gets:
        response = client.get(url, headers=alice[1])
        assert 400 <= response.status_code < 500 and response.status_code != 401, (url, response.text)
    for url in ("/jobs/%00", f"/jobs/{job}%00", "/datasets/%00"):  # the dashboard's pages
        client.cookies.set(SESSION_COOKIE, key)
        try:
            response = client.get(url)
        finally:
            client.cookies.clear()
        assert 400 <= response.status_code < 500, (url, response.status_code)
    posts = [
        ("/v1/searches", {"dataset_id": "ds\u0000x"}),
        ("/v1/searches", {"dataset_id": ds, "config": {"device": "cpu\u0000"}}),
        ("/v1/retrains", {"dataset_id": ds, "architecture": {"genotype_id": "gen\u0000"}}),
        ("/v1/retrains", {"dataset_id": ds, "architecture": {"search_job_id": "\u0000"}}),
        ("/v1/datasets", {"name": "x\u0000y", "path": "phantom"}),
        ("/v1/datasets", {"name": "x", "path": "phantom\u0000"}),
        ("/v1/datasets", {"name": "x", "path": "phantom", "format": "nnunet\u0000"}),
    ]
    for path, body in posts:
        response = client.post(path, json=body, headers=alice[1])
        assert response.status_code == 422, (path, body, response.text)
    response = client.post("/v1/datasets", files={"file": ("a.zip", b"PK")}, data={"name": "up\u0000"},
                           headers=alice[1])
    assert 400 <= response.status_code < 500, response.text
    response = client.post("/v1/searches", json={"dataset_id": ds}, headers={**alice[1], "Idempotency-Key": "a\tb"})
    assert response.status_code == 422
    with factory() as session:
        assert session.query(Job).count() == 1


def test_the_nul_backstop_answers_422_for_any_route(settings, alice) -> None:
    """A text value reaching PostgreSQL with a NUL, on a route with no validation of its own."""
    app = create_app(settings)

    @app.get("/probe", dependencies=[Depends(current_user)])
    def probe(session: SessionDep, name: str) -> dict:
        get_dataset_by_name(session, "usr_x", name)
        return {}

    with TestClient(app, raise_server_exceptions=False) as raw:
        response = raw.get("/probe", params={"name": "a\u0000b"}, headers=alice[1])
    assert response.status_code == 422, response.text
    assert "NUL" in response.json()["error"]["message"]


def test_ids_and_names_have_a_shape(client, alice, ds, add_job) -> None:
    """Malformed ids are refused by the schema (422 naming the field)."""
    job = add_job(alice[0], ds)
    for url, field in [("/v1/jobs/job%20x", "path.job_id"), ("/v1/datasets/%C3%A9", "path.dataset_id"),
                       ("/v1/genotypes/gen.x", "path.genotype_id"), (f"/v1/jobs/{job}/artifacts/.hidden", "path.name"),
                       (f"/v1/jobs/{job}/artifacts/a%20b", "path.name")]:
        response = client.get(url, headers=alice[1])
        assert field in _fields(response), url
    response = client.post("/v1/datasets", json={"name": "two\nlines", "path": "phantom"}, headers=alice[1])
    assert "name" in _fields(response)
    schema = client.get("/openapi.json").json()
    assert schema["paths"]["/v1/jobs/{job_id}"]["get"]["parameters"][0]["schema"]["pattern"] == "^[A-Za-z0-9_-]+$"


@pytest.mark.parametrize(
    "config",
    [{"w_momentum": -1.0}, {"arch_betas": [5.0, -3.0]}, {"seed": 10**30}, {"device": "cuda:abc"},
     {"w_weight_decay": -1.0}, {"arch_weight_decay": -1.0}],
    ids=["momentum", "betas", "seed", "device", "w_weight_decay", "arch_weight_decay"],
)
def test_every_numeric_option_is_range_checked(client, alice, ds, config) -> None:
    response = client.post("/v1/searches", json={"dataset_id": ds, "config": config}, headers=alice[1])
    assert response.status_code == 422, response.text


def test_numbers_beyond_the_database_columns_are_4xx(client, alice, ds, add_job) -> None:
    """Found by the fuzzer: ``after_epoch`` beyond PostgreSQL's INTEGER was a 500 (also as a cursor)."""
    job = add_job(alice[0], ds)
    for query, status in ((f"after_epoch={2**31}", 422), ("after_epoch=71268583724188085976943883714560", 422),
                          (f"cursor={2**31}", 400), ("cursor=%C2%B2", 400), ("cursor=-2", 400)):
        response = client.get(f"/v1/jobs/{job}/alphas?{query}", headers=alice[1])
        assert response.status_code == status, (query, response.text)
    assert client.get(f"/v1/jobs/{job}/alphas?after_epoch={2**31 - 1}", headers=alice[1]).json()["items"] == []


@pytest.mark.parametrize(
    ("config", "fields"),
    [
        ({"warmup_epochs": 10**30}, {"config.warmup_epochs"}),
        ({"steps_per_epoch": 10**30}, {"config.steps_per_epoch"}),
        ({"early_stop_patience": 10**30}, {"config.early_stop_patience"}),
        ({"grad_clip": 1e308}, {"config.grad_clip"}),
        ({"device": "cuda:99999999999999999999"}, {"config.device"}),
        ({"time_budget_minutes": 0.0, "eval_every": 0}, {"config.time_budget_minutes", "config.eval_every"}),
        ({"val_cases": ["a", "a"], "foreground_oversampling": 1.5},
         {"config.val_cases", "config.foreground_oversampling"}),
    ],
)
def test_search_config_fields_have_upper_bounds(client, alice, ds, no_queue, config, fields) -> None:
    response = client.post("/v1/searches", json={"dataset_id": ds, "config": config}, headers=alice[1])
    assert set(_fields(response)) == fields
    assert no_queue == []
