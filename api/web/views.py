"""What the job page shows, gathered from the store: the Dice table, the plots, the actions."""

from __future__ import annotations

from dataclasses import dataclass
from statistics import fmean
from typing import Any

from sqlalchemy.orm import Session

from api.routes import API_PREFIX
from store.history import get_genotype, latest_genotype, list_alpha_snapshots, list_epoch_metrics
from store.models import TERMINAL_STATUSES, CaseScore, Job, JobKind, JobStatus
from store.models import Genotype as GenotypeRow


@dataclass(frozen=True)
class DiceRow:
    case_id: str
    values: list[float | None]  # one per class of the table, None where the class was not scored
    mean: float | None


@dataclass(frozen=True)
class DiceTable:
    """Per-case Dice (DSC), one column per foreground class, with the mean of each column."""

    classes: list[str]
    rows: list[DiceRow]
    means: list[float | None]
    overall: float | None


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return fmean(present) if present else None


def dice_table(scores: list[CaseScore]) -> DiceTable | None:
    """Rows by case id, columns by class index (the store's order); None without scores."""
    if not scores:
        return None
    names: dict[int, str] = {}
    cases: dict[str, dict[int, float | None]] = {}
    for score in scores:
        names.setdefault(score.class_index, score.class_name)
        cases.setdefault(score.case_id, {})[score.class_index] = score.dsc
    order = sorted(names)
    rows = []
    for case, by_class in cases.items():
        values = [by_class.get(i) for i in order]
        rows.append(DiceRow(case, values, _mean(values)))
    means = [_mean([row.values[col] for row in rows]) for col in range(len(order))]
    return DiceTable([names[i] for i in order], rows, means, _mean([row.mean for row in rows]))


@dataclass(frozen=True)
class Plot:
    title: str
    url: str
    alt: str


def job_genotype(session: Session, job: Job) -> GenotypeRow | None:
    """A search's latest genotype; the genotype a retrain trains (None for a baseline)."""
    if job.kind == JobKind.SEARCH.value:
        return latest_genotype(session, job.id)
    genotype_id = (job.architecture or {}).get("genotype_id")
    return None if genotype_id is None else get_genotype(session, genotype_id, owner_id=job.owner_id)


def job_plots(session: Session, job: Job, genotype: GenotypeRow | None) -> list[Plot]:
    """The figures this job has data for (each image is drawn by ``/v1/jobs/{id}/plots/*.png``)."""
    base = f"{API_PREFIX}/jobs/{job.id}/plots"
    plots = []
    if list_epoch_metrics(session, job.id):
        plots.append(Plot("Learning curves", f"{base}/curves.png", "loss and Dice per epoch"))
    if job.kind == JobKind.SEARCH.value:
        if list_alpha_snapshots(session, job.id, limit=1):
            plots.append(Plot("Architecture weights (alphas)", f"{base}/alphas.png",
                              "heatmap of the operation weights of every edge"))
        if genotype is not None:
            title = "Genotype" if job.status == JobStatus.SUCCEEDED.value else "Genotype found so far"
            plots.append(Plot(title, f"{base}/genotype.png", "diagram of the derived cells"))
    elif "genotype" in (job.architecture or {}):
        plots.append(Plot("Genotype being trained", f"{base}/genotype.png", "diagram of the retrained cells"))
    return plots


def flat_metrics(metrics: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """``{"epoch": 3, "train": {"loss": 0.4}, "arch": {"dsc": 0.7}}`` -> ``[("epoch", 3), ("train loss", 0.4), ...]``."""
    rows: list[tuple[str, Any]] = []
    for name, value in (metrics or {}).items():
        if isinstance(value, dict):
            rows.extend((f"{name} {inner}", v) for inner, v in value.items())
        else:
            rows.append((name, value))
    return rows


def is_live(job: Job) -> bool:
    return JobStatus(job.status) not in TERMINAL_STATUSES


def can_retrain(job: Job, genotype: GenotypeRow | None) -> bool:
    return job.kind == JobKind.SEARCH.value and job.status == JobStatus.SUCCEEDED.value and genotype is not None


def architecture_text(job: Job) -> str:
    arch: dict[str, Any] = job.architecture or {}
    if "baseline" in arch:
        return f"baseline {arch['baseline']}"
    if "genotype_id" in arch:
        source = f" from search {arch['search_job_id']}" if "search_job_id" in arch else ""
        return f"genotype {arch['genotype_id']}{source}"
    return "—"
