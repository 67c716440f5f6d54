"""From a job row to what an engine needs: the dataset folder, a typed config, an architecture.

Everything is re-read from the database (the message carries only the job id). A
problem a person can fix raises :class:`JobRejected` (or the core's ``ConfigError`` /
``InvalidGenotype``) with a message that says what to change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from nas_core.config import RetrainConfig, SearchConfig
from nas_core.data import REGISTRY
from nas_core.genotype import Genotype
from store.artifacts import work_dir as store_work_dir
from store.history import get_genotype, latest_genotype
from store.models import Dataset, Job, JobKind, JobStatus
from store.settings import Settings

BASELINES = ("unet", "unetpp")


class JobRejected(ValueError):
    """The job cannot run as submitted; the message says why and what to do."""


@dataclass(frozen=True)
class JobPlan:
    job_id: str
    owner_id: str
    kind: JobKind
    dataset_id: str
    data_path: Path
    data_format: str | None
    config: SearchConfig | RetrainConfig
    architecture: dict[str, Any] | None  # retrains: {"genotype": {...}} or {"baseline": name}
    out_dir: Path  # {artifact_dir}/work/{job_id}: on the shared volume, so any worker can resume
    cache_dir: Path
    dataset_name: str = ""  # for people and trackers (MLflow), not for finding the data
    synthetic: bool = False


def work_dir(settings: Settings, job_id: str) -> Path:
    return store_work_dir(settings.artifact_dir, job_id)


def resolve_architecture(session: Session, job: Job) -> dict[str, Any]:
    """A retrain's architecture spec: an inline genotype, a genotype id, a search job's latest
    genotype, or a baseline name (in that order of precedence)."""
    arch = job.architecture or {}
    if arch.get("genotype") is not None:
        return {"genotype": Genotype.from_dict(arch["genotype"]).to_dict()}
    if arch.get("genotype_id"):
        row = get_genotype(session, arch["genotype_id"], owner_id=job.owner_id)
        if row is None:
            raise JobRejected(f"genotype {arch['genotype_id']} does not exist or is not yours; "
                              f"list your genotypes and submit the retrain with one of them")
        return {"genotype": Genotype.from_dict(row.genotype).to_dict()}
    if arch.get("search_job_id"):
        search = session.get(Job, arch["search_job_id"])
        if search is None or search.owner_id != job.owner_id or search.kind != JobKind.SEARCH.value:
            raise JobRejected(f"search job {arch['search_job_id']} does not exist or is not one of your searches")
        row = latest_genotype(session, search.id)
        if row is None:
            raise JobRejected(f"search job {search.id} has no genotype yet (it is {search.status}); "
                              f"submit the retrain once the search has succeeded")
        return {"genotype": Genotype.from_dict(row.genotype).to_dict()}
    if arch.get("baseline") is not None:
        if arch["baseline"] not in BASELINES:
            raise JobRejected(f"baseline {arch['baseline']!r} is not one of {list(BASELINES)}")
        return {"baseline": arch["baseline"]}
    raise JobRejected("the retrain names no architecture: give one of genotype_id, search_job_id or baseline")


def plan_job(session: Session, job: Job, settings: Settings) -> JobPlan:
    """Resolve ``job`` (already claimed) into a :class:`JobPlan`."""
    if job.status != JobStatus.RUNNING.value:
        raise JobRejected(f"job {job.id} is {job.status}, not running")
    dataset = session.get(Dataset, job.dataset_id)
    if dataset is None:
        raise JobRejected(f"dataset {job.dataset_id} no longer exists; register it again and resubmit")
    kind = JobKind(job.kind)
    if kind is JobKind.SEARCH:
        config: SearchConfig | RetrainConfig = SearchConfig.from_dict(job.config)
        architecture = None
    else:
        config = RetrainConfig.from_dict(job.config)
        architecture = resolve_architecture(session, job)
    return JobPlan(
        job_id=job.id,
        owner_id=job.owner_id,
        kind=kind,
        dataset_id=dataset.id,
        data_path=Path(dataset.path),
        data_format=dataset.format if dataset.format in REGISTRY else None,
        config=config,
        architecture=architecture,
        out_dir=work_dir(settings, job.id),
        cache_dir=settings.artifact_dir / "cache",
        dataset_name=dataset.name,
        synthetic=bool(dataset.synthetic),
    )
