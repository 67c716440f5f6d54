"""Pictures as PNG or SVG: a job's alpha history, learning curves and genotype, a genotype, the macro grid.

Routes are thin: load the owned resource (404 for another user's), read its plain data,
hand it to `nas_core.viz`. They are sync, so FastAPI runs them, and the CPU-bound
rendering, in its threadpool. matplotlib loads on the first picture, not with the app. Pictures of unfinished jobs are ``Cache-Control: no-store``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from sqlalchemy.orm import Session

from api.body import JsonBodyRoute
from api.deps import CurrentUser, OwnedGenotype, OwnedJob, SessionDep
from api.errors import Conflict, NotFound, error_responses
from api.routes import API_PREFIX
from api.services.history import group_by_epoch
from nas_core.config import SearchConfig
from nas_core.viz.formats import MAX_DEPTH, ImageFormat
from store.datasets import get_dataset
from store.history import latest_genotype, list_alpha_snapshots, list_epoch_metrics
from store.jobs import get_job
from store.models import TERMINAL_STATUSES, AlphaSnapshot, Job, JobKind, JobStatus

router = APIRouter(prefix=API_PREFIX, tags=["plots"], route_class=JsonBodyRoute)

SNAPSHOT_PAGE = 500  # epochs read per query
FINISHED_CACHE = "private, max-age=3600"
IMMUTABLE_CACHE = "private, max-age=86400"


def _responses(*errors: int) -> dict[int | str, dict[str, Any]]:
    image = {"schema": {"type": "string", "format": "binary"}}
    return {200: {"description": "the picture", "content": {"image/png": image, "image/svg+xml": image}},
            **error_responses(*errors)}


def _image(data: bytes, fmt: ImageFormat, cache_control: str) -> Response:
    return Response(content=data, media_type=fmt.media_type, headers={"Cache-Control": cache_control})


def _job_cache(job: Job) -> str:
    return FINISHED_CACHE if JobStatus(job.status) in TERMINAL_STATUSES else "no-store"


def _synthetic(session: Session, dataset_id: str | None) -> bool:
    dataset = get_dataset(session, dataset_id) if dataset_id else None
    return bool(dataset is not None and dataset.synthetic)


def _all_snapshots(session: Session, job_id: str) -> list[AlphaSnapshot]:
    rows: list[AlphaSnapshot] = []
    after: int | None = None
    while True:
        page = list_alpha_snapshots(session, job_id, after_epoch=after, limit=SNAPSHOT_PAGE)
        rows.extend(page)
        if len({r.epoch for r in page}) < SNAPSHOT_PAGE:
            return rows
        after = page[-1].epoch


@router.get("/jobs/{job_id}/plots/alphas.{fmt}", response_class=Response, responses=_responses(404, 409))
def alpha_heatmap(job: OwnedJob, fmt: ImageFormat, session: SessionDep) -> Response:
    """Architecture weights W[e, op] per epoch, one row per (edge, op); the final genotype's rows marked."""
    if job.kind != JobKind.SEARCH.value:
        raise Conflict(f"job {job.id!r} is a {job.kind} job: alpha histories exist only for search jobs",
                       code="not_a_search")
    rows = _all_snapshots(session, job.id)
    if not rows:
        raise NotFound(f"search job {job.id!r} has no architecture weights yet (status {job.status}); "
                       "they are recorded after every epoch", code="alphas_not_ready")
    # The remaining ML work in the web tier (matplotlib): pictures are to be rendered by the workers.
    from nas_core.viz import render_alpha_heatmap

    nodes = int(job.config.get("nodes", SearchConfig.nodes))
    data = render_alpha_heatmap(group_by_epoch(rows), nodes, fmt, synthetic=_synthetic(session, job.dataset_id))
    return _image(data, fmt, _job_cache(job))


@router.get("/jobs/{job_id}/plots/curves.{fmt}", response_class=Response, responses=_responses(404))
def learning_curves(job: OwnedJob, fmt: ImageFormat, session: SessionDep) -> Response:
    """Losses per epoch for each split, and DSC per epoch."""
    rows = list_epoch_metrics(session, job.id)
    if not rows:
        raise NotFound(f"job {job.id!r} has no epoch metrics yet (status {job.status}); "
                       "they are recorded after every epoch", code="metrics_not_ready")
    # The remaining ML work in the web tier (matplotlib): pictures are to be rendered by the workers.
    from nas_core.viz import render_curves

    metrics = [{"epoch": r.epoch, "split": r.split, "metrics": r.metrics} for r in rows]
    data = render_curves(metrics, fmt, synthetic=_synthetic(session, job.dataset_id))
    return _image(data, fmt, _job_cache(job))


@router.get("/jobs/{job_id}/plots/genotype.{fmt}", response_class=Response, responses=_responses(404, 409))
def job_genotype_diagram(job: OwnedJob, fmt: ImageFormat, session: SessionDep) -> Response:
    """The DN and UP cells of the job's genotype: a search's latest one, or the one a retrain trains."""
    if job.kind == JobKind.SEARCH.value:
        row = latest_genotype(session, job.id)
        if row is None:
            raise NotFound(f"search job {job.id!r} has no genotype yet (status {job.status}); "
                           "one is derived after its first epoch", code="genotype_not_ready")
        genotype = row.genotype
    else:
        genotype = (job.architecture or {}).get("genotype")
        if genotype is None:
            baseline = (job.architecture or {}).get("baseline")
            raise Conflict(f"retrain job {job.id!r} trains the baseline {baseline!r}, not a searched genotype: "
                           "there is no cell to draw", code="no_genotype")
    # The remaining ML work in the web tier (matplotlib): pictures are to be rendered by the workers.
    from nas_core.viz import render_cell_diagram

    data = render_cell_diagram(genotype, fmt, synthetic=_synthetic(session, job.dataset_id))
    return _image(data, fmt, _job_cache(job))


@router.get("/genotypes/{genotype_id}/diagram.{fmt}", response_class=Response, responses=_responses(404))
def genotype_diagram(genotype: OwnedGenotype, fmt: ImageFormat, session: SessionDep) -> Response:
    """The DN and UP cells of a stored genotype."""
    # The remaining ML work in the web tier (matplotlib): pictures are to be rendered by the workers.
    from nas_core.viz import render_cell_diagram

    job = get_job(session, genotype.job_id) if genotype.job_id else None
    data = render_cell_diagram(genotype.genotype, fmt, synthetic=_synthetic(session, job and job.dataset_id))
    return _image(data, fmt, IMMUTABLE_CACHE)


@router.get("/plots/grid.{fmt}", response_class=Response, responses=_responses(404))
def macro_grid(
    _: CurrentUser,
    fmt: ImageFormat,
    depth: Annotated[int, Query(ge=1, le=MAX_DEPTH, description="number of DN levels, L")] = SearchConfig.depth,
) -> Response:
    """The UNet++-like grid of DN and UP cells of a network of `depth` levels, with its connections."""
    # The remaining ML work in the web tier (matplotlib): pictures are to be rendered by the workers.
    from nas_core.viz import render_macro_grid

    return _image(render_macro_grid(depth, fmt), fmt, IMMUTABLE_CACHE)
