"""Submitting searches and retrains: check the inputs, resolve the architecture, add the job row.

``submit`` commits the job row, then sends a newly created job to the app's queue
(``api.queue.JobQueue``, given by the route): the message must never reach a worker before
the row it names exists, and an idempotent replay sends nothing.

A retrain's stored architecture is what ``nas_core.models.build_model`` takes, plus
where it came from: ``{"genotype": {...}, "genotype_id": "gen_..."}`` (and
``"search_job_id"`` when taken from a search), or ``{"baseline": "unet"}``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from api.errors import Conflict, NotFound, Unprocessable
from api.queue import JobQueue
from api.schemas import ArchitectureIn
from nas_core.config import ConfigError, RetrainConfig, SearchConfig
from nas_core.data.errors import DatasetError
from nas_core.data.splits import leak_message, leaked_cases, split_for
from nas_core.genotype import Genotype, InvalidGenotype
from store.datasets import get_dataset
from store.history import get_genotype, latest_genotype
from store.jobs import CreatedJob, create_job, get_job
from store.models import Dataset, DatasetStatus, Job, JobKind, JobStatus
from store.models import Genotype as GenotypeRow


def ready_dataset(session: Session, owner_id: str, dataset_id: str) -> Dataset:
    dataset = get_dataset(session, dataset_id, owner_id=owner_id)
    if dataset is None:
        raise NotFound.of("dataset", dataset_id, "; list yours with GET /v1/datasets")
    if dataset.status != DatasetStatus.READY.value:
        raise Conflict(f"dataset {dataset_id!r} is {dataset.status}, not ready; register a valid dataset",
                       code="dataset_not_ready")
    return dataset


# The search space's ranges (nas_core.config.SearchConfig): a genotype outside them was not searched
# here and may build a degenerate network (C=1 gives zero-width reductions).
FIT_RANGES = {"C": (4, 256), "depth": (1, 6), "nodes": (1, 6)}


def _unfit(message: str, field: str) -> Unprocessable:
    """422 ``invalid_genotype``; ``details.fields`` names the request field that chose the genotype."""
    return Unprocessable(message, code="invalid_genotype", details={"fields": {field: message}})


def _check_fits(genotype: Genotype, source: str, field: str) -> None:
    """Check the search-space ranges. A ``Genotype`` is validated when it is made (ops of each
    edge's family, sources, counts), and a valid one within these ranges always builds
    (tests/api/test_api_imports.py builds the extremes), so no network is built here."""
    for name, (low, high) in FIT_RANGES.items():
        value = getattr(genotype, name)
        if not low <= value <= high:
            raise _unfit(f"{source} does not fit: its {name} is {value}, outside {low}..{high}; "
                         f"use a genotype searched by this service", field)


def _from_row(row: GenotypeRow, source: str, field: str) -> dict[str, Any]:
    try:
        genotype = Genotype.from_dict(row.genotype)
    except InvalidGenotype as exc:
        raise _unfit(f"{source} is not a valid genotype: {exc}", field) from None
    _check_fits(genotype, source, field)
    return {"genotype": genotype.to_dict(), "genotype_id": row.id}


def resolve_architecture(session: Session, owner_id: str, arch: ArchitectureIn) -> dict[str, Any]:
    """The stored architecture spec for a retrain (see the module doc); 404/409/422 as documented."""
    if arch.baseline is not None:
        return {"baseline": arch.baseline}
    if arch.genotype_id is not None:
        row = get_genotype(session, arch.genotype_id, owner_id=owner_id)
        if row is None:
            raise NotFound.of("genotype", arch.genotype_id)
        return _from_row(row, f"genotype {row.id!r}", "architecture.genotype_id")
    assert arch.search_job_id is not None
    job = get_job(session, arch.search_job_id, owner_id=owner_id)
    if job is None:
        raise NotFound.of("job", arch.search_job_id)
    if job.kind != JobKind.SEARCH.value:
        raise Unprocessable(
            f"job {job.id!r} is a {job.kind} job; search_job_id must name a search",
            code="not_a_search",
            details={"fields": {"architecture.search_job_id": "not a search job"}},
        )
    row = latest_genotype(session, job.id) if job.status == JobStatus.SUCCEEDED.value else None
    if row is None:
        raise Conflict(
            f"search job {job.id!r} has no final genotype yet (status {job.status}); wait until it "
            f"succeeds, or pass a genotype_id",
            code="search_not_finished",
            details={"job_id": job.id, "status": job.status},
        )
    spec = _from_row(row, f"the genotype of search job {job.id!r}", "architecture.search_job_id")
    return {**spec, "search_job_id": job.id}


def check_no_leak(session: Session, architecture: dict[str, Any], dataset: Dataset, config: RetrainConfig) -> None:
    """422 ``data_leak`` when a validation or test case of this retrain helped the search that
    found its genotype choose it (same dataset only: another dataset's cases are other scans).

    The search's cases are planned exactly as its worker planned them (``split_for`` on the
    dataset and the search's stored config), so nothing needs to be recorded at run time.
    """
    search_id = architecture.get("search_job_id")
    if search_id is None and architecture.get("genotype_id"):
        row = session.get(GenotypeRow, architecture["genotype_id"])
        search_id = row.job_id if row is not None else None
    search = session.get(Job, search_id) if search_id else None
    if search is None or search.kind != JobKind.SEARCH.value or search.dataset_id != dataset.id:
        return
    # The remaining ML work in the web tier (scanning reads headers: SimpleITK, pydicom): to move to the workers.
    from nas_core.data.readers import open_dataset

    try:
        spec = open_dataset(dataset.path, format=dataset.format)
        searched = split_for(spec, SearchConfig.from_dict(search.config)).train
        split = split_for(spec, config)
    except (DatasetError, ConfigError) as exc:
        raise Unprocessable(f"cannot plan this retrain's cases: {exc}", code="invalid_cases",
                            details={"fields": {"config": str(exc)}}) from None
    leaked = leaked_cases(searched, split)
    if leaked:
        message = leak_message(leaked, f"search job {search.id!r}")
        raise Unprocessable(message, code="data_leak", details={
            "search_job_id": search.id, "cases": leaked,
            "fields": {"config.val_cases": message, "config.seed": message}})


def check_memory(kind: JobKind, config: dict[str, Any], dataset: Dataset, architecture: dict[str, Any] | None,
                 limit: int | None) -> None:
    """422 ``job_too_large`` if the job's estimated peak memory exceeds ``limit`` bytes (None: no limit).

    The estimate (``nas_core.memory``) assumes one input channel: the dataset row does not
    record its channels, and they change little (the first convolution's input only).
    """
    if limit is None:
        return
    # The remaining ML work in the web tier (builds the network with torch): to move to the workers.
    from nas_core.memory import estimate_peak_bytes, gib, too_big_message

    needed = estimate_peak_bytes(kind.value, config, 1, max(dataset.num_classes, 2), architecture=architecture)
    if needed > limit:
        message = too_big_message(kind.value, config, needed, f"this service accepts at most {gib(limit)} per job")
        knobs = ["batch_size", "image_size"] + (["channels", "k"] if kind is JobKind.SEARCH else [])
        reason = f"the job needs ~{gib(needed)}, at most {gib(limit)} is accepted: see the message"
        raise Unprocessable(message, code="job_too_large", details={
            "estimated_bytes": needed, "limit_bytes": limit, "fields": {f"config.{k}": reason for k in knobs}})


def submit(
    session: Session,
    *,
    queue: JobQueue,
    owner_id: str,
    kind: JobKind,
    dataset: Dataset,
    config: dict[str, Any],
    epochs: int,
    architecture: dict[str, Any] | None,
    idempotency_key: str | None,
    max_attempts: int,
    max_memory_bytes: int | None = None,
) -> CreatedJob:
    """Check the job's memory estimate against ``max_memory_bytes``, add and commit the queued
    job (or find the idempotent original), then send a new one to ``queue`` (a failed send
    leaves it queued: the sweeper re-sends it)."""
    check_memory(kind, config, dataset, architecture, max_memory_bytes)
    created = create_job(
        session,
        owner_id=owner_id,
        kind=kind,
        dataset_id=dataset.id,
        config=config,
        epochs=epochs,
        architecture=architecture,
        idempotency_key=idempotency_key,
        max_attempts=max_attempts,
    )
    session.commit()
    if created.created:
        queue.enqueue(created.job.id, created.job.kind)
    return created
