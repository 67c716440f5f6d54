"""Genotypes as JSON: by id, or the latest of a search job."""

from __future__ import annotations

from fastapi import APIRouter

from api.body import JsonBodyRoute
from api.deps import OwnedGenotype, OwnedJob, SessionDep
from api.errors import Conflict, NotFound, error_responses
from api.presenters import genotype_out
from api.routes import API_PREFIX
from api.schemas import GenotypeOut
from store.history import latest_genotype
from store.models import JobKind

router = APIRouter(prefix=API_PREFIX, tags=["genotypes"], route_class=JsonBodyRoute)


@router.get("/genotypes/{genotype_id}", response_model=GenotypeOut, responses=error_responses(404))
def get_genotype(genotype: OwnedGenotype) -> GenotypeOut:
    return genotype_out(genotype)


@router.get("/jobs/{job_id}/genotype", response_model=GenotypeOut, responses=error_responses(404, 409))
def job_genotype(job: OwnedJob, session: SessionDep) -> GenotypeOut:
    """The search's latest genotype (its final one once it succeeded)."""
    if job.kind != JobKind.SEARCH.value:
        raise Conflict(f"job {job.id!r} is a {job.kind} job: genotypes come from search jobs",
                       code="not_a_search")
    row = latest_genotype(session, job.id)
    if row is None:
        raise NotFound(f"search job {job.id!r} has no genotype yet (status {job.status}); "
                       f"one is derived after its first epoch", code="genotype_not_ready")
    return genotype_out(row)
