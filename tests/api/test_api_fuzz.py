"""Property-based fuzzing of the whole OpenAPI schema with schemathesis: no 5xx, every response as documented.

Every operation of the app's own schema is one test. Each runs against a fresh app on
the real PostgreSQL schema of the test session, authenticated as a real user who owns
data (a dataset, a running search with history, genotype and artefacts, a queued
retrain, a finished search). Generated path ids, artefact names and body ids are swapped
for that user's real ones two times in three, so the handlers' success paths are fuzzed
too, not only their 404s. Nothing reaches the broker (``enqueue_job`` is stubbed).

Checks on every response: not a server error; the status code, content type, headers
(``Allow`` of a 405 included) and body are the ones the schema documents for that
operation. The last test sends one realistic request to every operation (all must be
2xx and match the schema), so success paths are checked whatever the fuzzer draws.

Bounded for CI: ``THRIFTY_FUZZ_EXAMPLES`` examples per operation (default 15), fewer for
the multipart upload and the pictures; the examples are derandomized (the same on every
run) unless ``THRIFTY_FUZZ_RANDOM=1``. Schemathesis's coverage phase runs too (boundary and
type-violating values of every parameter, unsupported methods; a fixed set, not bounded by
the example count); ``THRIFTY_FUZZ_COVERAGE=0`` skips it. The whole module takes about
40 s on two busy cores.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.python.asgi import ASGIClient
from sqlalchemy import update

from api import queue
from api.main import create_app
from nas_core.models import default_genotype
from nas_core.topology import CellType, cell_edges, num_alpha_columns
from store.artifacts import ArtifactStore, register_artifact
from store.datasets import create_dataset
from store.history import record_case_scores, record_epoch, save_genotype
from store.jobs import create_job
from store.models import Job

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("THRIFTY_FUZZ_EXAMPLES", "15"))
RANDOM = os.environ.get("THRIFTY_FUZZ_RANDOM", "") == "1"
COVERAGE = os.environ.get("THRIFTY_FUZZ_COVERAGE", "1") != "0"  # schemathesis's boundary-value phase
SLOW_OPERATIONS = {  # examples per operation where each renders a picture or parses an upload
    ("POST", "/v1/datasets"): 8,
    ("GET", "/v1/jobs/{job_id}/plots/alphas.{fmt}"): 6,
    ("GET", "/v1/jobs/{job_id}/plots/curves.{fmt}"): 6,
    ("GET", "/v1/jobs/{job_id}/plots/genotype.{fmt}"): 6,
    ("GET", "/v1/genotypes/{genotype_id}/diagram.{fmt}"): 6,
    ("GET", "/v1/plots/grid.{fmt}"): 6,
}
CHECKS = ["not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance", "allow_header_conformance"]
NODES = 2
TINY = {"epochs": 1, "warmup_epochs": 0, "image_size": 16, "batch_size": 2, "channels": 4, "k": 1, "depth": 2,
        "nodes": 1}
TINY_RETRAIN = {"epochs": 1, "image_size": 16, "batch_size": 2}
GENOTYPE = default_genotype().to_dict()

schema = schemathesis.openapi.from_dict(
    create_app().openapi(),  # the schema alone: reads no settings, connects nowhere
    config=schemathesis.Config.from_dict({
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        "phases": {"coverage": {"enabled": COVERAGE}, "stateful": {"enabled": False}},
        # the user's real key on every request (tests/api/test_api_security_auth.py covers bad keys)
        "generation": {"max-examples": EXAMPLES, "deterministic": not RANDOM, "database": "none",
                       "with-security-parameters": False},
        "operations": [
            {"include-name": f"{method} {path}", "generation": {"max-examples": min(n, EXAMPLES)}}
            for (method, path), n in SLOW_OPERATIONS.items()
        ],
    }),
)

SEEN: dict[str, list[int]] = {}  # status codes per operation, over the whole module

# The current test's real values, read by the hooks while Hypothesis draws (set by the `world` fixture).
REAL: dict[str, list[str]] = {}
REAL_ARCHIVE: list[bytes] = []  # a zip of the phantom dataset


def _real(key: str, generated: Any) -> st.SearchStrategy[Any]:
    real = REAL.get(key)
    return st.sampled_from(real) if real else st.just(generated)


@schema.hook
def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """The generated ids and names, or (two times in three) the user's real ones."""
    if not path_parameters:
        return st.just(path_parameters)
    real = st.fixed_dictionaries({k: _real(k, v) for k, v in path_parameters.items()})
    return st.one_of(st.just(path_parameters), real, real)


@schema.hook
def flatmap_query(context: Any, query: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """The generated query, or (two times in three) the same without a made-up cursor."""
    if not query or "cursor" not in query:
        return st.just(query)
    without = st.just({k: v for k, v in query.items() if k != "cursor"})
    return st.one_of(st.just(query), without, without)


@schema.hook
def flatmap_body(context: Any, body: Any) -> st.SearchStrategy[Any]:
    """The generated body, or (two times in three) the same with real ids and a config that can pass."""
    if not isinstance(body, dict):
        return st.just(body)
    real: dict[str, st.SearchStrategy[Any]] = {k: st.just(v) for k, v in body.items()}
    if "dataset_id" in body:
        real["dataset_id"] = _real("dataset_id", body["dataset_id"])
        tiny = TINY_RETRAIN if "architecture" in body else TINY
        real["config"] = st.sampled_from([{}, tiny, body.get("config", {})])
    if isinstance(body.get("architecture"), dict):
        real["architecture"] = st.sampled_from(
            [{"baseline": "unet"}, {"genotype_id": REAL["genotype_id"][0]},
             {"search_job_id": REAL["search_job_id"][0]}, body["architecture"]])
    if "path" in body:  # a dataset registered from a server path
        real["path"] = _real("path", body["path"])
        real["format"] = st.sampled_from([None, "nnunet", body.get("format")])
    if "file" in body:  # an uploaded archive
        real["file"] = st.sampled_from([REAL_ARCHIVE[0], body["file"]])
        real["format"] = st.sampled_from([None, body.get("format")])
    realistic = st.fixed_dictionaries(real)
    return st.one_of(st.just(body), realistic, realistic)


def _cells(epoch: int) -> dict[str, Any]:
    def rows(t: CellType) -> list[list[float]]:
        return [[0.1 * (epoch + 1) * (i - e.index) for i in range(num_alpha_columns(t))]
                for e in cell_edges(t, NODES)]

    return {t.value: {"alphas": rows(t), "betas": [0.1] * len(cell_edges(t, NODES)), "genotype": GENOTYPE}
            for t in CellType}


@pytest.fixture
def world(alice, add_dataset, factory, settings, data_root: Path, monkeypatch) -> Iterator[dict[str, Any]]:
    """The fuzzing user's data; also published to the hooks through ``REAL``."""
    monkeypatch.setattr(queue, "enqueue_job", lambda job_id, kind: True)
    user_id, headers = alice
    ds = add_dataset(user_id, synthetic=True)
    with factory() as session:
        jobs = {}
        for name, kind, status in (("running", "search", "running"), ("done", "search", "succeeded"),
                                   ("queued", "retrain", "queued"), ("spare", "retrain", "succeeded"),
                                   ("spare_files", "retrain", "failed")):  # the DELETE cases' own
            job = create_job(session, owner_id=user_id, kind=kind, dataset_id=ds,
                             config={"nodes": NODES, "epochs": 3}, epochs=3,
                             architecture=None if kind == "search" else {"genotype": GENOTYPE}).job
            session.execute(update(Job).where(Job.id == job.id).values(status=status))
            jobs[name] = job.id
        for job_id in (jobs["running"], jobs["done"]):
            for epoch in range(2):
                record_epoch(session, job_id, epoch, cells=_cells(epoch),
                             metrics={"train": {"loss": 1.0 - 0.2 * epoch}, "val": {"dsc": 0.5}})
            record_case_scores(session, job_id, [{"case_id": "c1", "class_index": 1, "class_name": "organ_1",
                                                  "dsc": 0.9, "iou": 0.8}])
        save_genotype(session, owner_id=user_id, genotype=GENOTYPE, job_id=jobs["running"], epoch=1)
        gen = save_genotype(session, owner_id=user_id, genotype=GENOTYPE, job_id=jobs["done"])
        store = ArtifactStore(settings.artifact_dir)
        for job_id in jobs.values():
            for name, data, kind in (("model.pt", b"weights" * 100, "checkpoint"),
                                     ("genotype.json", b"{}", "genotype")):
                stored = store.put_bytes(job_id, name, data, kind)
                register_artifact(session, job_id=job_id, owner_id=user_id, name=name, kind=kind, stored=stored)
        spare_ds = create_dataset(session, owner_id=user_id, name="spare", path=str(data_root / "phantom"),
                                  format="nnunet", num_cases=3, num_classes=3).id
        session.commit()
        gen_id = gen.id
    if not REAL_ARCHIVE:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf:
            for path in sorted((data_root / "phantom").rglob("*")):
                zf.write(path, path.relative_to(data_root / "phantom").as_posix())
        REAL_ARCHIVE.append(buffer.getvalue())
    REAL.clear()
    REAL.update({
        "job_id": list(jobs.values()), "dataset_id": [ds], "genotype_id": [gen_id],
        "search_job_id": [jobs["done"]], "name": ["model.pt", "genotype.json"],
        "path": ["phantom", str(data_root / "phantom")], "fmt": ["png", "svg"],
    })
    yield {"headers": headers, "ids": {**jobs, "dataset": ds, "genotype": gen_id, "spare_dataset": spare_ds}}
    REAL.clear()


@pytest.fixture
def client_session(settings) -> Iterator[ASGIClient]:
    """A requests-style session on a new app (its state starts on the first request; closed here)."""
    app = create_app(settings)
    yield ASGIClient(app)
    app.state.api.close()


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzz_every_operation(case, world, client_session) -> None:
    """No 5xx, and every response (status, content type, headers, body) matches the schema."""
    response = case.call(session=client_session, headers=world["headers"])
    SEEN.setdefault(case.operation.label, []).append(response.status_code)
    case.validate_response(response)


def test_the_fuzzing_reached_the_success_paths() -> None:
    """The real-id hooks work: most fuzzed operations answered 2xx at least once, not only 4xx."""
    if len(SEEN) < len(list(schema.get_all_operations())):
        pytest.skip("run with the fuzz tests above (the whole module)")
    print({op: (len(codes), sorted(set(codes))) for op, codes in sorted(SEEN.items())})
    reached = [op for op, codes in SEEN.items() if any(200 <= c < 300 for c in codes)]
    assert len(reached) >= 2 * len(SEEN) // 3, SEEN


def _success_cases(world: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per operation label, requests that must succeed (one per response media type or picture format)."""
    ids = world["ids"]
    plots = [{"path_parameters": {"job_id": ids["done"], "fmt": fmt}} for fmt in ("png", "svg")]
    return {
        "POST /v1/datasets": [
            {"body": {"name": "by-path", "path": "phantom"}, "media_type": "application/json"},
            {"body": {"file": REAL_ARCHIVE[0], "name": "uploaded"}, "media_type": "multipart/form-data"}],
        "GET /v1/datasets": [{}],
        "GET /v1/datasets/{dataset_id}": [{"path_parameters": {"dataset_id": ids["dataset"]}}],
        "POST /v1/searches": [{"body": {"dataset_id": ids["dataset"], "config": TINY}}],
        "POST /v1/retrains": [
            {"body": {"dataset_id": ids["dataset"], "architecture": arch, "config": TINY_RETRAIN}}
            for arch in ({"baseline": "unet"}, {"genotype_id": ids["genotype"]}, {"search_job_id": ids["done"]})],
        "GET /v1/jobs": [{"query": {"kind": "search", "status": ["running", "succeeded"], "limit": 2}}],
        "GET /v1/jobs/{job_id}": [{"path_parameters": {"job_id": ids["running"]}}],
        "POST /v1/jobs/{job_id}/cancel": [{"path_parameters": {"job_id": ids[j]}} for j in ("queued", "running")],
        "GET /v1/jobs/{job_id}/alphas": [{"path_parameters": {"job_id": ids["done"]}, "query": {"limit": 1}}],
        "GET /v1/jobs/{job_id}/metrics": [{"path_parameters": {"job_id": ids["done"]}}],
        "GET /v1/genotypes/{genotype_id}": [{"path_parameters": {"genotype_id": ids["genotype"]}}],
        "GET /v1/jobs/{job_id}/genotype": [{"path_parameters": {"job_id": ids["done"]}}],
        "GET /v1/jobs/{job_id}/artifacts": [{"path_parameters": {"job_id": ids["done"]}}],
        "GET /v1/jobs/{job_id}/artifacts/{name}": [
            {"path_parameters": {"job_id": ids["done"], "name": "model.pt"}},
            {"path_parameters": {"job_id": ids["done"], "name": "genotype.json"}},
            {"path_parameters": {"job_id": ids["done"], "name": "model.pt"}, "headers": {"Range": "bytes=0-9"}}],
        "GET /healthz": [{}], "GET /readyz": [{}], "GET /metrics": [{}],
        "GET /v1/jobs/{job_id}/plots/alphas.{fmt}": plots,
        "GET /v1/jobs/{job_id}/plots/curves.{fmt}": plots,
        "GET /v1/jobs/{job_id}/plots/genotype.{fmt}": plots,
        "GET /v1/genotypes/{genotype_id}/diagram.{fmt}": [
            {"path_parameters": {"genotype_id": ids["genotype"], "fmt": fmt}} for fmt in ("png", "svg")],
        "GET /v1/plots/grid.{fmt}": [{"path_parameters": {"fmt": "svg"}, "query": {"depth": 2}}],
        "GET /v1/me": [{}],
        "GET /v1/jobs/{job_id}/logs": [{"path_parameters": {"job_id": ids["running"]}, "query": {"tail": 5}}],
        "DELETE /v1/jobs/{job_id}": [{"path_parameters": {"job_id": ids["spare"]}}],
        "DELETE /v1/jobs/{job_id}/artifacts/{name}": [
            {"path_parameters": {"job_id": ids["spare_files"], "name": "model.pt"}}],
        "DELETE /v1/datasets/{dataset_id}": [{"path_parameters": {"dataset_id": ids["spare_dataset"]}}],
    }


def test_every_operation_succeeds_as_documented(world, client_session) -> None:
    """A realistic request to every operation is 2xx and its response matches the schema (no luck needed)."""
    cases = _success_cases(world)
    labels = [result.ok().label for result in schema.get_all_operations()]
    assert sorted(cases) == sorted(labels), "add a realistic request for each new operation here"
    for result in schema.get_all_operations():
        operation = result.ok()
        for kwargs in cases[operation.label]:
            kwargs = dict(kwargs)
            headers = {**world["headers"], **kwargs.pop("headers", {})}
            case = operation.Case(**kwargs)
            response = case.call(session=client_session, headers=headers)
            assert 200 <= response.status_code < 300, (operation.label, kwargs, response.status_code, response.text)
            case.validate_response(response)
