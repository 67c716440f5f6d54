"""Per-epoch history is idempotent: a resumed job rewrites an epoch, never duplicates it."""

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store.history import (
    latest_genotype,
    list_alpha_snapshots,
    list_case_scores,
    list_epoch_metrics,
    record_case_scores,
    record_epoch,
    save_genotype,
)
from store.jobs import create_job
from store.models import AlphaSnapshot, EpochMetric

GENOTYPE = {"dn": [["conv_3x3", 0]], "up": [["up_conv_3x3", 1]]}


@pytest.fixture
def job_id(session: Session, owner) -> str:
    user, dataset = owner
    job = create_job(session, owner_id=user.id, kind="search", dataset_id=dataset.id, config={}).job
    session.commit()
    return job.id


def _cells(scale: float) -> dict:
    return {
        "dn": {"alphas": [[scale, 1 - scale]], "betas": [0.5], "genotype": GENOTYPE},
        "up": {"alphas": [[scale]], "betas": None},
    }


def test_record_epoch_twice_keeps_one_row_per_key(session: Session, job_id: str) -> None:
    record_epoch(session, job_id, 0, cells=_cells(0.1), metrics={"train": {"loss": 1.0}, "val": {"dsc": 0.2}})
    session.commit()
    record_epoch(session, job_id, 0, cells=_cells(0.3), metrics={"train": {"loss": 0.9}, "val": {"dsc": 0.3}})
    record_epoch(session, job_id, 1, cells=_cells(0.4), metrics={"arch": {"loss": 0.8}})
    session.commit()

    count = session.scalar(select(func.count()).select_from(AlphaSnapshot).where(AlphaSnapshot.epoch == 0))
    assert count == 2
    assert session.scalar(select(func.count()).select_from(EpochMetric)) == 3
    snaps = list_alpha_snapshots(session, job_id)
    assert [(s.epoch, s.cell_type) for s in snaps] == [(0, "dn"), (0, "up"), (1, "dn"), (1, "up")]
    assert snaps[0].alphas == [[0.3, 0.7]] and snaps[0].betas == [0.5] and snaps[0].genotype == GENOTYPE
    assert snaps[1].betas is None and snaps[1].genotype is None
    val = list_epoch_metrics(session, job_id, split="val")
    assert [(m.epoch, m.metrics) for m in val] == [(0, {"dsc": 0.3})]


def test_alpha_history_pages_by_epoch(session: Session, job_id: str) -> None:
    for epoch in range(5):
        record_epoch(session, job_id, epoch, cells=_cells(epoch / 10))
    first = list_alpha_snapshots(session, job_id, limit=2)
    assert sorted({s.epoch for s in first}) == [0, 1] and len(first) == 4
    rest = list_alpha_snapshots(session, job_id, after_epoch=1, limit=10)
    assert sorted({s.epoch for s in rest}) == [2, 3, 4]


def test_bad_cell_type_or_split_is_refused(session: Session, job_id: str) -> None:
    with pytest.raises(ValueError, match="cell type 'mid'"):
        record_epoch(session, job_id, 0, cells={"mid": {"alphas": [[1.0]]}})
    with pytest.raises(ValueError, match="split 'test'"):
        record_epoch(session, job_id, 0, metrics={"test": {}})


def test_case_scores_upsert(session: Session, job_id: str) -> None:
    scores = [
        {"case_id": "c1", "class_index": 1, "class_name": "spleen", "dsc": 0.5, "iou": 0.33},
        {"case_id": "c2", "class_index": 1, "class_name": "spleen", "dsc": 0.9, "iou": 0.8},
    ]
    assert record_case_scores(session, job_id, scores) == 2
    record_case_scores(session, job_id, [dict(scores[0], dsc=0.6)])
    session.commit()
    rows = list_case_scores(session, job_id)
    assert [(r.case_id, r.dsc) for r in rows] == [("c1", 0.6), ("c2", 0.9)]


def test_genotypes(session: Session, owner, job_id: str) -> None:
    user, _ = owner
    save_genotype(session, owner_id=user.id, genotype=GENOTYPE, job_id=job_id, epoch=3, params=1234)
    final = save_genotype(session, owner_id=user.id, genotype=GENOTYPE, job_id=job_id, params=1200)
    session.commit()
    assert final.id.startswith("gen_")
    assert latest_genotype(session, job_id).id == final.id
