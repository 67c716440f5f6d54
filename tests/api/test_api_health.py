"""Liveness, readiness, Prometheus metrics, the OpenAPI schema and the error format itself."""

from __future__ import annotations

import logging

from fastapi.testclient import TestClient

from api.main import create_app
from api.queue import BrokerOnlyQueue
from store.settings import get_settings

CLOSED_PORT_DB = "postgresql+psycopg://postgres@127.0.0.1:9/test"


def test_healthz_and_readyz(client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}


def test_database_down_is_503_not_500(make_client, alice) -> None:
    down = make_client(database_url=CLOSED_PORT_DB)
    assert down.get("/healthz").status_code == 200  # alive, just not ready
    response = down.get("/readyz")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "not_ready" and error["message"] == "not ready: database unreachable"
    assert error["details"]["checks"]["broker"] == "ok"
    assert error["details"]["checks"]["database"].startswith("unreachable")

    response = down.get("/v1/jobs", headers=alice[1])
    assert response.status_code == 503
    assert response.json()["error"] == {
        "code": "database_unavailable", "message": "database unavailable, retry later", "details": None,
        "request_id": response.headers["X-Request-ID"],
    }
    assert response.headers["Retry-After"] == "5"
    assert "thrifty_database_up 0.0" in down.get("/metrics").text


def test_broker_down_is_named(make_client, settings, monkeypatch) -> None:
    monkeypatch.setenv("THRIFTY_BROKER_URL", "redis://127.0.0.1:9/0")  # what worker.dispatch reads
    get_settings.cache_clear()
    try:
        down = make_client(broker_url="redis://127.0.0.1:9/0")
        response = down.get("/readyz")
        assert response.status_code == 503
        assert response.json()["error"]["message"] == "not ready: broker unreachable"
        # the broker-only queue's own check (no worker.dispatch), on the app's broker URL
        down_settings = settings.model_copy(update={"broker_url": "redis://127.0.0.1:9/0"})
        assert make_client(queue=BrokerOnlyQueue(down_settings)).get("/readyz").status_code == 503
        assert make_client(queue=BrokerOnlyQueue(settings)).get("/readyz").status_code == 200
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_metrics(client, alice, add_dataset, add_job) -> None:
    ds = add_dataset(alice[0])
    add_job(alice[0], ds)
    add_job(alice[0], ds, kind="retrain", status="failed")
    job = add_job(alice[0], ds, status="running")
    assert client.get(f"/v1/jobs/{job}", headers=alice[1]).status_code == 200
    assert client.get("/v1/jobs/job_missing", headers=alice[1]).status_code == 404

    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'thrifty_jobs{kind="search",status="queued"} 1.0' in text
    assert 'thrifty_jobs{kind="retrain",status="failed"} 1.0' in text
    assert 'thrifty_jobs{kind="search",status="running"} 1.0' in text
    assert 'thrifty_jobs{kind="search",status="succeeded"} 0.0' in text
    assert "thrifty_queue_depth" in text and "thrifty_database_up 1.0" in text
    assert ('thrifty_http_request_duration_seconds_count{method="GET",route="/v1/jobs/{job_id}",status="200"} 1.0'
            in text)
    assert ('thrifty_http_request_duration_seconds_count{method="GET",route="/v1/jobs/{job_id}",status="404"} 1.0'
            in text)


ROUTES = [
    ("post", "/v1/datasets"), ("get", "/v1/datasets"), ("get", "/v1/datasets/{dataset_id}"),
    ("post", "/v1/searches"), ("post", "/v1/retrains"),
    ("get", "/v1/jobs"), ("get", "/v1/jobs/{job_id}"), ("post", "/v1/jobs/{job_id}/cancel"),
    ("get", "/v1/jobs/{job_id}/alphas"), ("get", "/v1/jobs/{job_id}/metrics"),
    ("get", "/v1/jobs/{job_id}/genotype"), ("get", "/v1/genotypes/{genotype_id}"),
    ("get", "/v1/jobs/{job_id}/artifacts"), ("get", "/v1/jobs/{job_id}/artifacts/{name}"),
    ("get", "/v1/jobs/{job_id}/plots/alphas.{fmt}"), ("get", "/v1/jobs/{job_id}/plots/curves.{fmt}"),
    ("get", "/v1/jobs/{job_id}/plots/genotype.{fmt}"), ("get", "/v1/genotypes/{genotype_id}/diagram.{fmt}"),
    ("get", "/v1/plots/grid.{fmt}"),
    ("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics"),
    ("delete", "/v1/jobs/{job_id}"), ("delete", "/v1/jobs/{job_id}/artifacts/{name}"),
    ("delete", "/v1/datasets/{dataset_id}"), ("get", "/v1/jobs/{job_id}/logs"), ("get", "/v1/me"),
]


def test_openapi_lists_every_route_with_response_models(client) -> None:
    schema = client.get("/openapi.json").json()
    listed = sorted((method, path) for path, ops in schema["paths"].items() for method in ops)
    assert listed == sorted(ROUTES)
    for method, path in ROUTES:
        operation = schema["paths"][path][method]
        success = [code for code in operation["responses"] if code.startswith("2")]
        assert success and (success[0] == "204" or operation["responses"][success[0]].get("content")), (method, path)
        if path.startswith("/v1"):
            for status in ("401", "422", "503", *(["404"] if "{" in path else [])):
                assert operation["responses"][status]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/ErrorResponse"
                }, (method, path, status)
    components = schema["components"]["schemas"]
    for name in ("JobOut", "JobPage", "DatasetDetail", "DatasetRegister", "DatasetUpload", "AlphaHistory",
                 "ErrorResponse", "SearchConfigIn", "RetrainConfigIn", "ArtifactList", "MetricsOut"):
        assert name in components, name
    assert components["SearchConfigIn"]["properties"]["k"]["default"] == 4
    body = schema["paths"]["/v1/datasets"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}


def test_unknown_route_and_method_use_the_error_format(client) -> None:
    response = client.get("/v1/nothing")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    response = client.delete("/v1/jobs")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


def test_unexpected_error_is_a_generic_500_with_request_id(settings, caplog) -> None:
    app = create_app(settings)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    with TestClient(app) as client, caplog.at_level(logging.ERROR):
        response = client.get("/boom", headers={"X-Request-ID": "req-42"})
    assert response.status_code == 500
    body = response.json()
    assert body["error"]["code"] == "internal_error" and body["error"]["request_id"] == "req-42"
    assert "req-42" in body["error"]["message"] and "secret" not in response.text
    assert response.headers["X-Request-ID"] == "req-42"
    assert any("req-42" in r.getMessage() and r.exc_info for r in caplog.records)



def test_metrics_only_to_the_allowed_addresses(make_client, settings) -> None:
    closed = make_client(metrics_allow_ips=["10.0.0.0/8", "::1"])  # the test client's address is "testclient"
    refused = closed.get("/metrics")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "metrics_not_allowed"
    assert "THRIFTY_METRICS_ALLOW_IPS" in refused.json()["error"]["message"]
    app = create_app(settings.model_copy(update={"metrics_allow_ips": ["10.0.0.0/8"]}))
    with TestClient(app, client=("10.1.2.3", 40000)) as inside:
        assert inside.get("/metrics").status_code == 200
    assert closed.get("/healthz").status_code == 200  # only /metrics is fenced
    assert make_client().get("/metrics").status_code == 200  # unset: open, as the embedded service has it
