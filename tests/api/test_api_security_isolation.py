"""Isolation walk: every OpenAPI route that names a resource answers another user 404.

The list of routes is generated from the app's own OpenAPI schema, so a route added
later is walked automatically; a route whose path (or JSON body) names an id this walk
cannot fill makes the test fail until a filler is added here.

For each route: user B calls it with user A's ids (Bearer header, and for GET also the
dashboard cookie) -> 404 with the same body as an id that never existed; then user A
calls it -> 2xx, which proves the ids were real. B goes first, so a refused cancel is
also shown to have changed nothing.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from api.deps import SESSION_COOKIE
from api.main import create_app
from nas_core.models import default_genotype
from nas_core.topology import CellType, cell_edges, num_alpha_columns
from store.artifacts import ArtifactStore, register_artifact
from store.history import record_case_scores, record_epoch, save_genotype
from store.jobs import get_job
from store.models import Job
from tests.api.support import RecordingQueue

# path parameters that name a resource owned by a user, and what fills them
OWNED_PARAMS = {"job_id": "job", "dataset_id": "dataset", "genotype_id": "genotype"}
# other path parameters: a value valid for A's resources
PLAIN_PARAMS = {"name": "model.pt", "fmt": "png"}
# routes with path parameters but no owned resource: the same answer for every user
SHARED_ROUTES = {("get", "/v1/plots/grid.{fmt}")}
# JSON body fields naming an owned resource, per operation (checked against the schema below)
BODY_IDS = {
    ("post", "/v1/searches"): {"dataset_id"},
    ("post", "/v1/retrains"): {"dataset_id", "architecture.genotype_id", "architecture.search_job_id"},
}
NEVER = {"job": "job_doesnotexist0", "dataset": "ds_doesnotexist00", "genotype": "gen_doesnotexist0"}
NODES = 2  # conftest add_job's config
GENOTYPE = default_genotype().to_dict()


def _cells(epoch: int) -> dict[str, Any]:
    def rows(t: CellType) -> list[list[float]]:
        return [[0.1 * (epoch + 1) * (i - e.index) for i in range(num_alpha_columns(t))]
                for e in cell_edges(t, NODES)]

    return {t.value: {"alphas": rows(t), "betas": [0.1] * len(cell_edges(t, NODES)), "genotype": GENOTYPE}
            for t in CellType}


@pytest.fixture
def owned(alice, add_dataset, add_job, factory, settings) -> dict[str, str]:
    """A's resources: a dataset, a running search with history, genotype, case scores and an artefact."""
    ds = add_dataset(alice[0], synthetic=True)
    job = add_job(alice[0], ds, status="running", epoch=2, progress=0.5)
    with factory() as session:
        for epoch in range(2):
            record_epoch(session, job, epoch, cells=_cells(epoch),
                         metrics={"train": {"loss": 1.0 - 0.2 * epoch}, "arch": {"dsc": 0.3 + 0.1 * epoch}})
        record_case_scores(session, job, [{"case_id": "c1", "class_index": 1, "class_name": "organ_1",
                                           "dsc": 0.9, "iou": 0.8}])
        gen = save_genotype(session, owner_id=alice[0], genotype=GENOTYPE, job_id=job, epoch=1)
        stored = ArtifactStore(settings.artifact_dir).put_bytes(job, "model.pt", b"weights", "checkpoint")
        register_artifact(session, job_id=job, owner_id=alice[0], name="model.pt", kind="checkpoint",
                          stored=stored)
        session.commit()
        return {"job": job, "dataset": ds, "genotype": gen.id}


def _openapi() -> dict[str, Any]:
    return create_app().openapi()  # reads no settings, connects nowhere


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, ops in schema["paths"].items() for method, op in ops.items()]


def _path_params(path: str) -> list[str]:
    return re.findall(r"{([^}]+)}", path)


def _fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"{([^}]+)}", lambda m: values[m.group(1)], path)


def _body_id_fields(schema: dict[str, Any], op: dict[str, Any]) -> set[str]:
    """Dotted names of every ``*_id`` property in the operation's JSON request body schema."""
    content = op.get("requestBody", {}).get("content", {}).get("application/json")
    if content is None:
        return set()
    components = schema["components"]["schemas"]

    def walk(node: dict[str, Any], prefix: str, seen: frozenset[str]) -> set[str]:
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            return set() if name in seen else walk(components[name], prefix, seen | {name})
        found: set[str] = set()
        for key in ("anyOf", "oneOf", "allOf"):
            for sub in node.get(key, []):
                found |= walk(sub, prefix, seen)
        for name, sub in node.get("properties", {}).items():
            dotted = f"{prefix}{name}"
            if name.endswith("_id"):
                found.add(dotted)
            found |= walk(sub, dotted + ".", seen)
        return found

    return walk(content["schema"], "", frozenset())


def test_the_walk_knows_every_route_and_id_field() -> None:
    """A new route or body field naming a resource fails here until the walk below covers it."""
    schema = _openapi()
    for method, path, op in _operations(schema):
        params = _path_params(path)
        unknown = [p for p in params if p not in OWNED_PARAMS and p not in PLAIN_PARAMS]
        assert not unknown, f"{method.upper()} {path}: no filler for path parameter(s) {unknown}; add one"
        if params and not any(p in OWNED_PARAMS for p in params):
            assert (method, path) in SHARED_ROUTES, f"{method.upper()} {path} has parameters but no owner"
        query_ids = [p["name"] for p in op.get("parameters", [])
                     if p["in"] == "query" and p["name"].endswith("_id")]
        assert not query_ids, f"{method.upper()} {path}: query id(s) {query_ids} are not walked; add them"
        assert _body_id_fields(schema, op) == BODY_IDS.get((method, path), set()), (method, path)


def _call(client: TestClient, method: str, url: str, headers: dict[str, str] | None = None,
          cookies: dict[str, str] | None = None):
    client.cookies.clear()
    if cookies:
        client.cookies.update(cookies)
    try:
        return client.request(method.upper(), url, headers=headers or {})
    finally:
        client.cookies.clear()


def _without_request_id(body: dict[str, Any]) -> dict[str, Any]:
    return {**body["error"], "request_id": None}


def test_every_route_with_an_id_is_404_for_another_user(client, alice, bob, owned, factory) -> None:
    schema = _openapi()
    ids = {param: owned[kind] for param, kind in OWNED_PARAMS.items()}
    never = {param: NEVER[kind] for param, kind in OWNED_PARAMS.items()}
    bob_key = bob[1]["Authorization"].removeprefix("Bearer ")
    walked: set[tuple[str, str]] = set()
    for method, path, _op in _operations(schema):
        params = _path_params(path)
        if not any(p in OWNED_PARAMS for p in params):
            continue
        url = _fill(path, {**PLAIN_PARAMS, **ids})
        with factory() as session:
            job = get_job(session, owned["job"])
            before = (job.status, job.cancel_requested)
        ways = [("header", bob[1], None)] + ([("cookie", None, {SESSION_COOKIE: bob_key})] if method == "get" else [])
        for how, headers, cookies in ways:
            response = _call(client, method, url, headers, cookies)
            assert response.status_code == 404, (method, path, how, response.status_code, response.text)
            error = response.json()["error"]
            assert error["code"] == "not_found", (method, path, how, error)
            # the same answer as for an id that never existed (names swapped): nothing tells them apart
            ghost_url = _fill(path, {**PLAIN_PARAMS, **never})
            ghost = _call(client, method, ghost_url, headers, cookies)
            assert ghost.status_code == 404
            expected = _without_request_id(ghost.json())
            for param in params:
                if param in OWNED_PARAMS:
                    expected = {k: (v.replace(never[param], ids[param]) if isinstance(v, str) else v)
                                for k, v in expected.items()}
                    if isinstance(expected.get("details"), dict):
                        expected["details"] = {k: (ids[param] if v == never[param] else v)
                                               for k, v in expected["details"].items()}
            assert _without_request_id(response.json()) == expected, (method, path, how)
        if method != "get":
            with factory() as session:  # the refused call changed nothing
                job = get_job(session, owned["job"])
                assert (job.status, job.cancel_requested) == before == ("running", before[1]), (method, path)
        owner = client.request(method.upper(), url, headers=alice[1])
        if method == "delete":  # the owned job runs and the dataset is in use: the owner is told why
            assert owner.status_code == 409, (method, path, owner.status_code, owner.text)
            assert client.get(f"/v1/jobs/{owned['job']}", headers=alice[1]).status_code == 200
        else:
            assert 200 <= owner.status_code < 300, (method, path, owner.status_code, owner.text)
        walked.add((method, path))

    expected_walk = {(m, p) for m, p, _ in _operations(schema) if any(x in OWNED_PARAMS for x in _path_params(p))}
    assert walked == expected_walk
    for must in ("/v1/datasets/{dataset_id}", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel",
                 "/v1/jobs/{job_id}/alphas", "/v1/jobs/{job_id}/metrics", "/v1/genotypes/{genotype_id}",
                 "/v1/jobs/{job_id}/artifacts", "/v1/jobs/{job_id}/artifacts/{name}",
                 "/v1/jobs/{job_id}/plots/alphas.{fmt}", "/v1/genotypes/{genotype_id}/diagram.{fmt}"):
        assert must in {p for _, p in walked}, must


def test_body_ids_of_another_user_are_404(make_client, alice, bob, owned, add_dataset, factory) -> None:
    """Submits naming A's dataset, genotype or search job are 404 for B and queue nothing."""
    recorded = RecordingQueue()
    client = make_client(queue=recorded)
    with factory() as session:
        session.execute(  # the search must have succeeded for search_job_id to be usable by A
            update(Job).where(Job.id == owned["job"]).values(status="succeeded"))
        session.commit()
    bob_ds = add_dataset(bob[0], name="bobs")
    config = {"epochs": 1, "image_size": 16, "batch_size": 2}
    bodies: dict[tuple[str, str], list[tuple[str, dict[str, Any], dict[str, Any]]]] = {
        # (field, body for B with A's id in that field, body for A)
        ("post", "/v1/searches"): [
            ("dataset_id", {"dataset_id": owned["dataset"], "config": config},
             {"dataset_id": owned["dataset"], "config": config}),
        ],
        ("post", "/v1/retrains"): [
            ("dataset_id", {"dataset_id": owned["dataset"], "architecture": {"baseline": "unet"}, "config": config},
             {"dataset_id": owned["dataset"], "architecture": {"baseline": "unet"}, "config": config}),
            ("architecture.genotype_id",
             {"dataset_id": bob_ds, "architecture": {"genotype_id": owned["genotype"]}, "config": config},
             {"dataset_id": owned["dataset"], "architecture": {"genotype_id": owned["genotype"]}, "config": config}),
            ("architecture.search_job_id",
             {"dataset_id": bob_ds, "architecture": {"search_job_id": owned["job"]}, "config": config},
             {"dataset_id": owned["dataset"], "architecture": {"search_job_id": owned["job"]}, "config": config}),
        ],
    }
    covered = {op: {field for field, _, _ in cases} for op, cases in bodies.items()}
    assert covered == BODY_IDS
    for (method, path), cases in bodies.items():
        for field, for_bob, for_alice in cases:
            response = client.request(method.upper(), path, json=for_bob, headers=bob[1])
            assert response.status_code == 404, (path, field, response.text)
            assert recorded.sent == [], (path, field)
            response = client.request(method.upper(), path, json=for_alice, headers=alice[1])
            assert response.status_code == 202, (path, field, response.text)
            recorded.sent.clear()
    assert client.get("/v1/jobs", headers=bob[1]).json()["items"] == []
