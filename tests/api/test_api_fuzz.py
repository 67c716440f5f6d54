"""Property-based fuzzing of the whole OpenAPI schema with schemathesis, in both of its modes.

Every operation of the app's own schema is one test per mode:

* **positive** (requests the schema calls valid): no 5xx, every response as documented
  (status, content type, headers, body), and no refusal that contradicts the schema:
  ``positive_data_acceptance`` allows only 2xx and the documented business answers,
  and ``only_business_refusals`` narrows a 400/416/422/507 to the codes that depend on
  data no schema can describe (a cursor this service did not issue, a path or archive
  that is not a dataset, options that conflict such as K and channels...). A 422
  ``validation_error`` for a schema-valid request fails: the schema was looser than the
  server.
* **negative** (requests the schema calls invalid): no 5xx, and each is refused
  (``negative_data_rejection``): a 2xx means the schema was stricter than the server.

Positive requests run against a fresh app on the real PostgreSQL schema of the test
session, authenticated as a real user who owns data (a dataset, a running search with
history, genotype and artefacts, a queued retrain, a finished search). Generated path ids,
artefact names and body ids are swapped for that user's real ones two times in three,
so the handlers' success paths are fuzzed too, not only their 404s; the swapped values
are schema-valid, so the mode's promise holds. Negative requests are sent as generated
(a swap could make them valid). Nothing reaches the broker (the app's queue is a ``RecordingQueue``).

Each test sets up its own data, so the tests pass alone, in any order or subset. The last
two send realistic requests to every operation: one that must succeed (2xx, matching the
schema), and a short positive draw per operation that must reach 2xx for most of them.

Bounded for CI: ``THRIFTY_FUZZ_EXAMPLES`` examples per operation and mode (default 6),
fewer for the multipart upload and the pictures; the examples are derandomized (the same
on every run) unless ``THRIFTY_FUZZ_RANDOM=1``. Schemathesis's coverage phase runs too
(boundary and type-violating values of every parameter, unsupported methods; a fixed set,
not bounded by the example count); ``THRIFTY_FUZZ_COVERAGE=0`` skips it. The whole module
takes about a minute on two busy cores.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.python.asgi import ASGIClient
from sqlalchemy import update

from api.deps import ID_PATTERN
from api.main import create_app
from api.services.configs import CROSS_FIELD
from nas_core.models import default_genotype
from nas_core.topology import CellType, cell_edges, num_alpha_columns
from store.artifacts import ArtifactStore, register_artifact
from store.datasets import create_dataset
from store.history import record_case_scores, record_epoch, save_genotype
from store.jobs import create_job
from store.models import Job
from tests.api.support import RecordingQueue

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("THRIFTY_FUZZ_EXAMPLES", "6"))
RANDOM = os.environ.get("THRIFTY_FUZZ_RANDOM", "") == "1"
COVERAGE = os.environ.get("THRIFTY_FUZZ_COVERAGE", "1") != "0"  # schemathesis's boundary-value phase
SLOW_OPERATIONS = {  # examples per operation where each renders a picture or parses an upload
    ("POST", "/v1/datasets"): 4,
    ("GET", "/v1/jobs/{job_id}/plots/alphas.{fmt}"): 3,
    ("GET", "/v1/jobs/{job_id}/plots/curves.{fmt}"): 3,
    ("GET", "/v1/jobs/{job_id}/plots/genotype.{fmt}"): 3,
    ("GET", "/v1/genotypes/{genotype_id}/diagram.{fmt}"): 3,
    ("GET", "/v1/plots/grid.{fmt}"): 3,
}
CHECKS = ["not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance", "allow_header_conformance"]
# Besides 2xx and the defaults (401, 404, 409, 429): statuses a valid request may get for reasons of
# data, each narrowed to its codes by `only_business_refusals`.
BUSINESS_CODES: dict[int, set[str]] = {
    400: {"invalid_cursor", "not_an_archive", "bad_archive", "unsafe_archive", "archive_bomb",
          "too_many_members", "conflicting_members"},
    416: {"range_not_satisfiable"},
    422: {"invalid_path", "dataset_invalid", "invalid_genotype", "data_leak", "job_too_large", "not_a_search",
          "invalid_cases", "invalid_config"},
    507: {"insufficient_storage"},
}
ACCEPTED = ["2xx", "401", "404", "409", "429", *map(str, BUSINESS_CODES)]
NODES = 2
TINY = {"epochs": 1, "warmup_epochs": 0, "image_size": 16, "batch_size": 2, "channels": 4, "k": 1, "depth": 2,
        "nodes": 1}
TINY_RETRAIN = {"epochs": 1, "image_size": 16, "batch_size": 2}
GENOTYPE = default_genotype().to_dict()
VALID_ID = re.compile(ID_PATTERN)
APP_SCHEMA = create_app().openapi()  # the schema alone: reads no settings, connects nowhere


def _load(mode: str, checks: dict[str, Any]) -> Any:
    """The app's schema for one generation mode, with these checks on top of ``CHECKS``."""
    return schemathesis.openapi.from_dict(APP_SCHEMA, config=schemathesis.Config.from_dict({
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}, **checks},
        "phases": {"coverage": {"enabled": COVERAGE}, "stateful": {"enabled": False}},
        # the user's real key on every request (tests/api/test_api_security_auth.py covers bad keys)
        "generation": {"mode": mode, "max-examples": EXAMPLES, "deterministic": not RANDOM, "database": "none",
                       "with-security-parameters": False},
        "operations": [
            {"include-name": f"{method} {path}", "generation": {"max-examples": min(n, EXAMPLES)}}
            for (method, path), n in SLOW_OPERATIONS.items()
        ],
    }))


schema = _load("positive", {"positive_data_acceptance": {"enabled": True, "expected-statuses": ACCEPTED}})
negative = _load("negative", {"negative_data_rejection": {"enabled": True}})

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
    if "file" in body:  # a form field is text or absent, never null
        realistic = realistic.map(lambda form: {k: v for k, v in form.items() if v is not None})
    return st.one_of(st.just(body), realistic, realistic)


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= 64 and VALID_ID.fullmatch(value) is not None


def _real_if_valid(key: str, generated: Any) -> Any:
    """The user's real id in place of a schema-valid generated one: the request stays as invalid as it
    was (its fault lies elsewhere), but now reaches the checks past the 404 of a made-up id."""
    return REAL[key][0] if _valid_id(generated) and REAL.get(key) else generated


@negative.hook("flatmap_path_parameters")
def real_ids_in_negative_paths(context: Any, path_parameters: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.just({k: _real_if_valid(k, v) if k.endswith("_id") else v for k, v in (path_parameters or {}).items()})


@negative.hook("flatmap_body")
def real_ids_in_negative_bodies(context: Any, body: Any) -> st.SearchStrategy[Any]:
    if not isinstance(body, dict):
        return st.just(body)
    body = {**body, **({"dataset_id": _real_if_valid("dataset_id", body["dataset_id"])} if "dataset_id" in body else {})}
    arch = body.get("architecture")
    if isinstance(arch, dict):
        body["architecture"] = {k: _real_if_valid(k, v) if k in ("genotype_id", "search_job_id") else v
                                for k, v in arch.items()}
    return st.just(body)


def _cells(epoch: int) -> dict[str, Any]:
    def rows(t: CellType) -> list[list[float]]:
        return [[0.1 * (epoch + 1) * (i - e.index) for i in range(num_alpha_columns(t))]
                for e in cell_edges(t, NODES)]

    return {t.value: {"alphas": rows(t), "betas": [0.1] * len(cell_edges(t, NODES)), "genotype": GENOTYPE}
            for t in CellType}


@pytest.fixture
def world(alice, add_dataset, factory, settings, data_root: Path) -> Iterator[dict[str, Any]]:
    """The fuzzing user's data; also published to the hooks through ``REAL``."""
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
    app = create_app(settings, queue=RecordingQueue())  # submits are recorded, not sent
    yield ASGIClient(app)
    app.state.api.close()


def only_business_refusals(ctx: Any, response: Any, case: Any) -> bool | None:
    """A schema-valid request refused with 400/416/422/507 must name a refusal that depends on data.

    ``invalid_config`` counts only for the options that conflict with each other (K must divide
    channels, w_lr_min at most w_lr): every single option's range is in the schema.
    """
    if case.meta is None or not case.meta.generation.mode.is_positive or response.status_code not in BUSINESS_CODES:
        return None
    error = response.json().get("error", {})
    code, fields = error.get("code"), set((error.get("details") or {}).get("fields", {}))
    assert code in BUSINESS_CODES[response.status_code], (
        f"a request the schema calls valid was refused: {response.status_code} {code}: {error.get('message')}")
    if code == "invalid_config":
        assert fields <= {f"config.{name}" for name in CROSS_FIELD}, f"the schema allows {fields}: {error}"
    return True


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzz_positive(case, world, client_session) -> None:
    """No 5xx, every response as documented, and a schema-valid request is never refused as invalid."""
    response = case.call(session=client_session, headers=world["headers"])
    case.validate_response(response, additional_checks=[only_business_refusals])


@negative.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzz_negative(case, world, client_session) -> None:
    """No 5xx, and every request the schema calls invalid is refused (a 4xx), never served."""
    response = case.call(session=client_session, headers=world["headers"])
    case.validate_response(response)


REACH_EXAMPLES = 4


def _draw(operation: Any, session: ASGIClient, headers: dict[str, str]) -> list[int]:
    """Statuses of ``REACH_EXAMPLES`` positive requests drawn for one operation, with the hooks."""
    statuses: list[int] = []

    @settings(max_examples=REACH_EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(GenerationMode.POSITIVE, hooks=schema.hooks))
    def draw(case: Any) -> None:
        statuses.append(case.call(session=session, headers=headers).status_code)

    draw()
    return statuses


def test_the_fuzzing_reaches_the_success_paths(world, client_session) -> None:
    """The real-id hooks work: drawn as the positive fuzz draws, most operations answer 2xx at least once."""
    seen = {result.ok().label: _draw(result.ok(), client_session, world["headers"])
            for result in schema.get_all_operations()}
    print({op: sorted(set(codes)) for op, codes in sorted(seen.items())})
    reached = [op for op, codes in seen.items() if any(200 <= c < 300 for c in codes)]
    assert all(c < 500 for codes in seen.values() for c in codes), seen
    assert len(reached) >= 2 * len(seen) // 3, seen


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
