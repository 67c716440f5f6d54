"""Request ids, the catch-all 500, and Prometheus metrics.

``RequestContextMiddleware`` (pure ASGI) gives every request an id (``X-Request-ID``,
taken from the client if it sent a sane one), times it into a latency histogram by
route template and status, and answers any exception no handler took with a generic
500 naming the request id (logged with the stack trace; never sent to the client).

``/metrics`` scrapes a per-app registry: the latency histogram, jobs by status and
kind and the queue depth (both computed at scrape time).
"""

from __future__ import annotations

import logging
import math
import re
import time
import uuid
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import internal_error_body
from api.state import AppState
from store.models import Job, JobKind, JobStatus

log = logging.getLogger(__name__)

_SANE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class JobsCollector(Collector):
    """Jobs by status and kind, the queue depth, and whether the database answered: read at scrape."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    def describe(self) -> list[Metric]:
        return []  # nothing is read at registration

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("thrifty_jobs", "Jobs by status and kind", labels=["status", "kind"])
        counts = {(s.value, k.value): 0 for s in JobStatus for k in JobKind}
        database_up = 1
        try:
            with self.state.sessionmaker() as session:
                stmt = select(Job.status, Job.kind, func.count()).group_by(Job.status, Job.kind)
                for status, kind, count in session.execute(stmt):
                    counts[(status, kind)] = count
        except SQLAlchemyError as exc:
            log.warning("metrics: cannot count jobs: %s", exc.__class__.__name__)
            database_up = 0
        if database_up:
            for (status, kind), count in sorted(counts.items()):
                jobs.add_metric([status, kind], count)
        yield jobs
        yield GaugeMetricFamily("thrifty_database_up", "1 if the job count query succeeded", value=database_up)
        depth = self.state.queue.depth()
        yield GaugeMetricFamily(
            "thrifty_queue_depth", "Messages waiting on the job queue (NaN: unknown)",
            value=math.nan if depth is None else depth,
        )


class Metrics:
    """One registry per application, so several apps (tests) never collide."""

    def __init__(self, state: AppState) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "thrifty_http_request_duration_seconds",
            "HTTP request latency by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )
        self.registry.register(JobsCollector(state))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.latency.labels(method, route, str(status)).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


MAX_HEADER_BYTES = 16 * 1024  # nginx's default large_client_header_buffers is 4 x 8 KiB


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = sent if _SANE_ID.match(sent) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        header_bytes = sum(len(k) + len(v) for k, v in scope.get("headers") or [])
        if header_bytes > MAX_HEADER_BYTES:  # nothing past here reads them (an API key of 1 MB...)
            body = {"error": {"code": "headers_too_large", "message": f"request headers total {header_bytes} bytes; "
                              f"at most {MAX_HEADER_BYTES} are accepted", "details": None, "request_id": request_id}}
            await JSONResponse(body, status_code=431, headers={"X-Request-ID": request_id})(scope, receive, send)
            self.metrics.observe(scope["method"], "other", 431, 0.0)
            return
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status, response_started = message["status"], True
                MutableHeaders(scope=message).append("X-Request-ID", request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            log.error("unhandled error in %s %s (request %s)", scope["method"], scope["path"], request_id,
                      exc_info=exc)
            if response_started:
                raise
            status = 500
            response = JSONResponse(internal_error_body(request_id), status_code=500,
                                    headers={"X-Request-ID": request_id})
            await response(scope, receive, send)
        finally:
            self.metrics.observe(scope["method"], _route_template(scope), status, time.perf_counter() - started)
