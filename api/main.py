"""The application factory. ``uvicorn api.main:app`` serves the app built from ``THRIFTY_*``.

Importing this module connects to nothing and reads no settings: ``create_app()``
only wires routes; the settings are read, the folders made, an embedded SQLite
database migrated and the engine created when the app starts (its lifespan).
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.concurrency import run_in_threadpool

from api.errors import install_error_handlers
from api.observability import Metrics, RequestContextMiddleware
from api.queue import JobQueue
from api.routes import artifacts, datasets, genotypes, health, jobs, me, plots, retrains, searches
from api.schemas import DatasetRegister, DatasetUpload, ErrorResponse
from api.state import AppState, UploadLimits
from api.web import router as web_router
from store.settings import Settings

API_VERSION = "1.0.0"
DESCRIPTION = """Thrifty NAS designs tiny, accurate medical image segmentation networks (PC-DARTS).

Register a dataset, submit a **search**, retrain the genotype it finds, download the checkpoint.
Authenticate with `Authorization: Bearer <API key>`. Every error body is
`{"error": {"code", "message", "details", "request_id"}}`.
"""

# Schemas referenced by hand-written request bodies (the dataset route takes JSON or multipart)
# and by every documented error response (``api.errors.ERROR_SCHEMA``).
EXTRA_SCHEMAS = (DatasetRegister, DatasetUpload, ErrorResponse)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: AppState = app.state.api
    await run_in_threadpool(state.start)
    # Everything imported so far lives for the whole process: move it out of
    # the collector's reach, so full collections stop pausing requests (~150-250 ms measured).
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        state.close()


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description,
                             routes=app.routes, tags=app.openapi_tags)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in EXTRA_SCHEMAS:
            extra = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(extra.pop("$defs", {}))
            components.setdefault(model.__name__, extra)
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(settings: Settings | None = None, *, upload_limits: UploadLimits | None = None,
               queue: JobQueue | None = None) -> FastAPI:
    """A new application; ``settings`` default to ``store.settings.get_settings()`` read at start-up,
    ``queue`` (where submits go, what ``/readyz`` and ``/metrics`` ask) to ``api.queue.default_queue``."""
    state = AppState(settings, upload_limits, queue)
    app = FastAPI(
        title="Thrifty NAS",
        version=API_VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_tags=[
            {"name": "datasets", "description": "register and inspect datasets"},
            {"name": "jobs", "description": "searches, retrains, their progress, history and cancel"},
            {"name": "genotypes", "description": "searched architectures as JSON"},
            {"name": "artifacts", "description": "checkpoints and other files of a job"},
            {"name": "health", "description": "liveness, readiness, Prometheus metrics"},
        ],
    )
    app.state.api = state
    app.state.metrics = Metrics(state)
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)
    for module in (datasets, searches, retrains, jobs, genotypes, artifacts, health, me):
        app.include_router(module.router)
    app.include_router(plots.router)
    app.include_router(web_router)  # the dashboard's pages (not in the OpenAPI schema)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


app = create_app()
