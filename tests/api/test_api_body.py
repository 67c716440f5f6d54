"""One body-parsing path: every route that accepts JSON refuses the same broken body the same way.

The routes are taken from the live OpenAPI schema (every operation with an
``application/json`` request body), so a route added later is covered without being
listed here. Each hostile body gets a 4xx in the API's error shape, with the same
status and code on every route, and a message saying what to fix; never a 500 (the
``client`` fixture fails any 500 it sees).
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from api.body import MAX_JSON_BYTES, MAX_JSON_DEPTH, JsonBodyRoute
from api.main import create_app
from tests.api.support import RecordingQueue


def _json_routes() -> list[str]:
    schema = create_app().openapi()
    return sorted(path for path, operations in schema["paths"].items() for op in operations.values()
                  if "application/json" in op.get("requestBody", {}).get("content", {}))


ROUTES = _json_routes()
JSON = {"Content-Type": "application/json"}


def _nested(depth: int) -> bytes:
    return b'{"a": ' * depth + b"1" + b"}" * depth


# body -> (status, error code, a phrase the message must hold)
BROKEN: dict[str, tuple[bytes, dict[str, str], int, str, str]] = {
    "arrays 100,000 deep": (b"[" * 100_000 + b"]" * 100_000, JSON, 400, "invalid_json", "nested deeper"),
    "objects 50,000 deep": (_nested(50_000), JSON, 400, "invalid_json", "nested deeper"),
    "objects one level too deep": (_nested(MAX_JSON_DEPTH + 1), JSON, 400, "invalid_json", "nested deeper"),
    "invalid UTF-8": (b'{"name": "caf\xe9", "path": "\xff\xfe"}', JSON, 400, "invalid_json", "not UTF-8"),
    "UTF-16": ('{"name": "x"}'.encode("utf-16"), JSON, 400, "invalid_json", "not UTF-8"),
    "a byte order mark": (b'\xef\xbb\xbf{"name": "x"}', JSON, 400, "invalid_json", "byte order mark"),
    "an unpaired surrogate escape": (b'{"name": "a\\ud800b", "path": "p"}', JSON, 400, "invalid_json",
                                     "surrogate"),
    "a 5,000-digit number": (b'{"dataset_id": ' + b"9" * 5000 + b"}", JSON, 400, "invalid_json",
                             "shorter numbers"),
    "truncated JSON": (b'{"name": "x", ', JSON, 400, "invalid_json", "line 1, column"),
    "not JSON at all": (b"name=x&path=y", JSON, 400, "invalid_json", "Expecting value"),
    "one byte over the limit": (b'{"name": "' + b"x" * (MAX_JSON_BYTES - 11) + b'"}', JSON, 413,
                                "payload_too_large", "larger than"),
    "an empty body": (b"", JSON, 422, "validation_error", "empty"),
    "a +json media type": (b'{"name": "x"}', {"Content-Type": "application/problem+json"}, 415,
                           "unsupported_media_type", "application/json"),
    "no Content-Type": (b'{"name": "x"}', {}, 415, "unsupported_media_type", "application/json"),
    "text/plain": (b'{"name": "x"}', {"Content-Type": "text/plain"}, 415, "unsupported_media_type",
                   "application/json"),
    "a Latin-1 charset": (b'{"name": "x"}', {"Content-Type": "application/json; charset=latin-1"}, 415,
                          "unsupported_media_type", "UTF-8"),
}


@pytest.fixture
def job_queue() -> RecordingQueue:
    return RecordingQueue()  # the clients' submits are recorded, not sent


def test_the_schema_has_json_routes_to_check() -> None:
    assert {"/v1/datasets", "/v1/searches", "/v1/retrains"} <= set(ROUTES), ROUTES


@pytest.mark.parametrize("what", sorted(BROKEN))
def test_a_broken_body_is_the_same_4xx_on_every_json_route(client: TestClient, alice, what: str) -> None:
    body, headers, status, code, phrase = BROKEN[what]
    for route in ROUTES:
        response = client.post(route, content=body, headers={**alice[1], **headers})
        assert response.status_code == status, (route, response.status_code, response.text[:300])
        error = response.json()["error"]
        assert error["code"] == code, (route, error)
        assert phrase in error["message"], (route, error["message"])


def test_a_body_at_the_depth_limit_reaches_the_schema_checks(client: TestClient, alice) -> None:
    """Depth 32 is parsed (then refused by the schema, naming the field); 33 is refused as JSON."""
    inner = _nested(MAX_JSON_DEPTH - 1).decode()
    for route in ROUTES:
        response = client.post(route, content=f'{{"zzz": {inner}}}'.encode(), headers={**alice[1], **JSON})
        assert response.status_code == 422, (route, response.text[:300])
        assert "zzz" in response.json()["error"]["details"]["fields"], route


def test_a_valid_body_still_works_through_the_one_path(client: TestClient, alice, add_dataset) -> None:
    dataset = add_dataset(alice[0])
    body = {"dataset_id": dataset, "config": {"epochs": 1, "arch_betas": [0.5, 0.9], "val_cases": None}}
    response = client.post("/v1/searches", json=body, headers={**alice[1], "Content-Type": "application/json"})
    assert response.status_code == 202, response.text
    response = client.post("/v1/searches", content=b'{"dataset_id": "%s"}' % dataset.encode(),
                           headers={**alice[1], "Content-Type": 'application/json; charset="UTF-8"'})
    assert response.status_code == 202, response.text


def test_every_json_route_is_read_by_the_one_reader_and_documents_its_refusals() -> None:
    app = create_app()
    schema = app.openapi()
    for route in app.routes:
        if isinstance(route, APIRoute) and route.body_field is not None:
            assert isinstance(route, JsonBodyRoute), f"{route.path} reads its body another way"
    for path in ROUTES:
        documented: dict[str, Any] = schema["paths"][path]["post"]["responses"]
        assert {"400", "413", "415", "422"} <= set(documented), (path, sorted(documented))
