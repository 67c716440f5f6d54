"""Rows -> response bodies, with the links a client follows next."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Response
from pydantic import BaseModel

from api.routes import API_PREFIX
from api.schemas import (
    ArtifactOut,
    DatasetDetail,
    DatasetLinks,
    DatasetOut,
    GenotypeOut,
    JobLinks,
    JobOut,
)
from store.jobs import CreatedJob
from store.models import Artifact, Dataset, Genotype, Job, JobKind

M = TypeVar("M", bound=BaseModel)

API = API_PREFIX


def _build(model: type[M], row: Any, **extra: Any) -> M:
    values = {name: getattr(row, name) for name in model.model_fields if name not in extra}
    return model.model_validate({**values, **extra})


def dataset_out(dataset: Dataset) -> DatasetOut:
    return _build(DatasetOut, dataset, links=DatasetLinks(self=f"{API}/datasets/{dataset.id}"))


def dataset_detail(dataset: Dataset) -> DatasetDetail:
    return _build(DatasetDetail, dataset, links=DatasetLinks(self=f"{API}/datasets/{dataset.id}"))


def job_links(job: Job) -> JobLinks:
    base = f"{API}/jobs/{job.id}"
    search = job.kind == JobKind.SEARCH.value
    return JobLinks(
        self=base,
        cancel=f"{base}/cancel",
        metrics=f"{base}/metrics",
        artifacts=f"{base}/artifacts",
        alphas=f"{base}/alphas" if search else None,
        genotype=f"{base}/genotype" if search else None,
        dataset=f"{API}/datasets/{job.dataset_id}",
    )


def job_out(job: Job) -> JobOut:
    return _build(JobOut, job, links=job_links(job))


def submitted(response: Response, created: CreatedJob) -> JobOut:
    """202 body and headers of a submit: ``Location``, and ``Idempotent-Replayed`` on a replay."""
    response.headers["Location"] = f"{API}/jobs/{created.job.id}"
    if not created.created:
        response.headers["Idempotent-Replayed"] = "true"
    return job_out(created.job)


def genotype_out(row: Genotype) -> GenotypeOut:
    return _build(GenotypeOut, row)


def artifact_out(row: Artifact) -> ArtifactOut:
    return _build(ArtifactOut, row, download=f"{API}/jobs/{row.job_id}/artifacts/{row.name}")
