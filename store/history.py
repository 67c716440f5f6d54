"""What a job learns on the way: alpha snapshots, epoch metrics, per-case scores, genotypes.

Writes are idempotent upserts keyed by (job, epoch, cell type / split) and
(job, case, class): a job resumed from an earlier checkpoint rewrites an epoch
instead of duplicating it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NotRequired, TypedDict

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.models import AlphaSnapshot, CaseScore, CellType, EpochMetric, Genotype, Split
from store.upsert import upsert


class CellSnapshot(TypedDict):
    alphas: list[list[float]]  # one row of op weights per mixed edge
    betas: NotRequired[list[float] | None]  # edge normalisation weights (PC-DARTS)
    genotype: NotRequired[dict[str, Any] | None]  # the cell derived from these weights


class CaseScoreIn(TypedDict):
    case_id: str
    class_index: int
    class_name: str
    dsc: float | None
    iou: float | None


def _enum(cls: type[CellType] | type[Split], value: str, what: str) -> str:
    try:
        return cls(value).value
    except ValueError:
        raise ValueError(f"{what} {value!r} is not one of {[m.value for m in cls]}") from None


def record_epoch(
    session: Session,
    job_id: str,
    epoch: int,
    *,
    cells: Mapping[str, CellSnapshot] | None = None,
    metrics: Mapping[str, dict[str, Any]] | None = None,
) -> None:
    """Store one epoch: ``cells`` by cell type ("dn", "up"), ``metrics`` by split ("train", "val", "arch").

    Recording the same epoch again replaces its rows (one row per key, never two).
    """
    snapshots = [
        {
            "job_id": job_id,
            "epoch": epoch,
            "cell_type": _enum(CellType, cell_type, "cell type"),
            "alphas": snap["alphas"],
            "betas": snap.get("betas"),
            "genotype": snap.get("genotype"),
        }
        for cell_type, snap in (cells or {}).items()
    ]
    upsert(
        session,
        AlphaSnapshot.__table__,
        snapshots,
        conflict=("job_id", "epoch", "cell_type"),
        update=("alphas", "betas", "genotype"),
    )
    rows = [
        {"job_id": job_id, "epoch": epoch, "split": _enum(Split, split, "split"), "metrics": values}
        for split, values in (metrics or {}).items()
    ]
    upsert(session, EpochMetric.__table__, rows, conflict=("job_id", "epoch", "split"), update=("metrics",))


def record_case_scores(session: Session, job_id: str, scores: Iterable[CaseScoreIn]) -> int:
    """Store per-case, per-class scores (replacing earlier values of the same case/class); return the count."""
    rows = [
        {
            "job_id": job_id,
            "case_id": s["case_id"],
            "class_index": s["class_index"],
            "class_name": s["class_name"],
            "dsc": s["dsc"],
            "iou": s["iou"],
        }
        for s in scores
    ]
    upsert(
        session,
        CaseScore.__table__,
        rows,
        conflict=("job_id", "case_id", "class_index"),
        update=("class_name", "dsc", "iou"),
    )
    return len(rows)


def save_genotype(
    session: Session,
    *,
    owner_id: str,
    genotype: dict[str, Any],
    job_id: str | None = None,
    epoch: int | None = None,
    params: int | None = None,
) -> Genotype:
    """Add a genotype (JSON), e.g. a search's result or one a user uploaded."""
    row = Genotype(owner_id=owner_id, genotype=genotype, job_id=job_id, epoch=epoch, params=params)
    session.add(row)
    session.flush()
    return row


def get_genotype(session: Session, genotype_id: str, *, owner_id: str | None = None) -> Genotype | None:
    row = session.get(Genotype, genotype_id)
    if row is None or (owner_id is not None and row.owner_id != owner_id):
        return None
    return row


def latest_genotype(session: Session, job_id: str) -> Genotype | None:
    """The job's genotype with the highest epoch (a final one, epoch None, counts as highest)."""
    stmt = (
        select(Genotype)
        .where(Genotype.job_id == job_id)
        .order_by(Genotype.epoch.is_(None).desc(), Genotype.epoch.desc(), Genotype.created_at.desc())
        .limit(1)
    )
    return session.scalars(stmt).first()


def list_alpha_snapshots(
    session: Session, job_id: str, *, after_epoch: int | None = None, limit: int = 100
) -> list[AlphaSnapshot]:
    """Snapshots in (epoch, cell type) order; page with ``after_epoch`` = the last epoch seen.

    ``limit`` counts epochs, so a page never splits an epoch's cell types.
    """
    epochs = select(AlphaSnapshot.epoch).where(AlphaSnapshot.job_id == job_id)
    if after_epoch is not None:
        epochs = epochs.where(AlphaSnapshot.epoch > after_epoch)
    epochs = epochs.distinct().order_by(AlphaSnapshot.epoch).limit(limit)
    stmt = (
        select(AlphaSnapshot)
        .where(AlphaSnapshot.job_id == job_id, AlphaSnapshot.epoch.in_(epochs.scalar_subquery()))
        .order_by(AlphaSnapshot.epoch, AlphaSnapshot.cell_type)
    )
    return list(session.scalars(stmt))


def list_epoch_metrics(session: Session, job_id: str, *, split: str | None = None) -> list[EpochMetric]:
    stmt = select(EpochMetric).where(EpochMetric.job_id == job_id)
    if split is not None:
        stmt = stmt.where(EpochMetric.split == _enum(Split, split, "split"))
    return list(session.scalars(stmt.order_by(EpochMetric.epoch, EpochMetric.split)))


def list_case_scores(session: Session, job_id: str) -> list[CaseScore]:
    stmt = select(CaseScore).where(CaseScore.job_id == job_id)
    return list(session.scalars(stmt.order_by(CaseScore.case_id, CaseScore.class_index)))
