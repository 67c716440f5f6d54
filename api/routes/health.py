"""Liveness, readiness and Prometheus metrics (unversioned, no auth)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from api.body import JsonBodyRoute
from api.deps import QueueDep, StateDep
from api.errors import Forbidden, ServiceUnavailable, error_responses
from api.queue import JobQueue
from api.schemas import Health, Readiness
from api.state import AppState

router = APIRouter(tags=["health"], route_class=JsonBodyRoute)

BROKER_TIMEOUT_S = 1.0


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is alive (checks nothing else)."""
    return Health(status="ok")


def _database(state: AppState) -> str:
    try:
        with state.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return f"unreachable ({exc.__class__.__name__})"
    return "ok"


def _broker(queue: JobQueue) -> str:
    return "ok" if queue.reachable(timeout=BROKER_TIMEOUT_S) else "unreachable"


@router.get("/readyz", response_model=Readiness, responses=error_responses(auth=False))
def readyz(state: StateDep, queue: QueueDep) -> Readiness:
    """Ready to serve: the database and the broker answer (else 503 naming which do not)."""
    checks = {"database": _database(state), "broker": _broker(queue)}
    failing = [name for name, result in checks.items() if result != "ok"]
    if failing:
        raise ServiceUnavailable(f"not ready: {' and '.join(failing)} unreachable", code="not_ready",
                                 details={"checks": checks}, headers={"Retry-After": "5"})
    return Readiness(status="ready", checks=checks)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"description": "Prometheus text exposition", "content": {CONTENT_TYPE_LATEST: {}}},
               403: error_responses(403, auth=False)[403]},
)
def metrics(request: Request, state: StateDep) -> Response:
    """Prometheus metrics: request latency, jobs by status and kind, queue depth (only to the
    addresses of ``THRIFTY_METRICS_ALLOW_IPS`` when it is set)."""
    host = request.client.host if request.client else None
    if not state.settings.metrics_allowed(host):
        raise Forbidden(f"/metrics is served only to THRIFTY_METRICS_ALLOW_IPS; {host} is not among them",
                        code="metrics_not_allowed")
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
