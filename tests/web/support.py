"""A finished search as the worker leaves it, written with the store's own functions (for the page tests)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from nas_core.models import default_genotype
from nas_core.topology import CellType, cell_edges, num_alpha_columns
from store.artifacts import ArtifactStore, register_artifact
from store.history import record_case_scores, record_epoch, save_genotype
from store.jobs import create_job
from store.models import JobStatus
from store.types import utcnow

NODES, EPOCHS = 2, 3
# (case, class index, class name, DSC): what the Dice table must show, to three decimals.
CASE_DSC = [
    ("phantom_001", 1, "organ_1", 0.9123), ("phantom_001", 2, "organ_2", 0.8471),
    ("phantom_002", 1, "organ_1", 0.8856), ("phantom_002", 2, "organ_2", None),
]
CHECKPOINT = bytes(range(256)) * 40  # 10240 bytes


@dataclass(frozen=True)
class SeededJob:
    job_id: str
    genotype_id: str
    artifacts: dict[str, tuple[int, str]]  # name -> (size, sha256)


def _cells(epoch: int) -> dict:
    """Alpha and beta snapshots of the right shapes for ``NODES`` nodes (as ``Supernet.arch_state``)."""
    cells = {}
    for cell_type in CellType:
        edges = cell_edges(cell_type, NODES)
        width = num_alpha_columns(cell_type)
        alphas = [[math.sin(epoch + e + c) / (1 + epoch) for c in range(width)] for e in range(len(edges))]
        cells[cell_type.value] = {"alphas": alphas, "betas": [0.1 * e for e in range(len(edges))]}
    return cells


def seed_finished_search(sessions: sessionmaker[Session], artifact_dir: Path, owner_id: str,
                         dataset_id: str) -> SeededJob:
    """A succeeded search: progress, history of ``EPOCHS`` epochs, final genotype, Dice per case, files."""
    genotype = default_genotype().to_dict()
    store = ArtifactStore(artifact_dir)
    now = utcnow()
    with sessions() as session:
        job = create_job(session, owner_id=owner_id, kind="search", dataset_id=dataset_id,
                         config={"nodes": NODES, "epochs": EPOCHS}, epochs=EPOCHS,
                         now=now - timedelta(minutes=10)).job
        job.status, job.progress, job.epoch, job.attempt = JobStatus.SUCCEEDED.value, 1.0, EPOCHS, 1
        job.eta_seconds, job.worker_id = 0.0, "w1@test"
        job.started_at, job.finished_at = now - timedelta(minutes=9), now
        job.latest_metrics = {"epoch": EPOCHS, "train": {"loss": 0.31, "lr": 0.0025}, "arch": {"dsc": 0.8813}}
        for epoch in range(EPOCHS):
            record_epoch(session, job.id, epoch, cells=_cells(epoch), metrics={
                "train": {"loss": 1.0 / (epoch + 1), "lr": 0.025, "arch_loss": 1.1 / (epoch + 1)},
                "arch": {"dsc": 0.5 + 0.1 * epoch},
            })
        saved = save_genotype(session, owner_id=owner_id, genotype=genotype, job_id=job.id, params=12345)
        record_case_scores(session, job.id, [
            {"case_id": case, "class_index": index, "class_name": name, "dsc": dsc,
             "iou": None if dsc is None else dsc / (2 - dsc)}
            for case, index, name, dsc in CASE_DSC
        ])
        files = {"search_final.pt": ("checkpoint", CHECKPOINT),
                 "genotype.json": ("genotype", json.dumps(genotype).encode())}
        artifacts = {}
        for name, (kind, data) in files.items():
            stored = store.put_bytes(job.id, name, data, kind)
            register_artifact(session, job_id=job.id, owner_id=owner_id, name=name, kind=kind, stored=stored)
            artifacts[name] = (stored.size, stored.sha256)
        session.commit()
        return SeededJob(job.id, saved.id, artifacts)
