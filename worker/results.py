"""What a finished run leaves behind: artefacts, the full epoch history, the genotype, per-case DSC.

Files are copied into the artefact store first (``copy_outputs``, outside any
transaction); ``publish`` then writes every row in the caller's transaction, the same
one that marks the job succeeded, so a succeeded job always has all of them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, NamedTuple

from sqlalchemy.orm import Session

from nas_core import retrain as retrain_engine
from nas_core import search as search_engine
from nas_core.bundle import make_bundle
from nas_core.checkpoint import load_checkpoint
from nas_core.models import build_model, count_parameters
from store.artifacts import ArtifactStore, StoredArtifact, register_artifact
from store.history import CaseScoreIn, record_case_scores, save_genotype
from store.models import ArtifactKind, Job, JobKind
from worker.callbacks import json_safe, store_epoch
from worker.plan import JobPlan

log = logging.getLogger(__name__)

OUTPUTS = {
    JobKind.SEARCH: (
        (search_engine.GENOTYPE, ArtifactKind.GENOTYPE),
        (search_engine.ALPHAS, ArtifactKind.ALPHAS),
        (search_engine.LAST, ArtifactKind.CHECKPOINT),
        (search_engine.SUMMARY, ArtifactKind.METRICS),
    ),
    JobKind.RETRAIN: (
        (retrain_engine.BEST, ArtifactKind.CHECKPOINT),
        (retrain_engine.FINAL, ArtifactKind.CHECKPOINT),
        (retrain_engine.METRICS, ArtifactKind.METRICS),
    ),
}


class Output(NamedTuple):
    name: str
    kind: ArtifactKind
    stored: StoredArtifact


def copy_outputs(plan: JobPlan, store: ArtifactStore) -> list[Output]:
    """Copy the run's output files from its work folder into the artefact store."""
    return [Output(name, kind, store.put_file(plan.job_id, name, plan.out_dir / name, kind))
            for name, kind in OUTPUTS[plan.kind]]


def genotype_params(plan: JobPlan, genotype: dict[str, Any]) -> int:
    """Trainable parameters of the network the genotype derives, for this dataset's channels and classes."""
    meta = load_checkpoint(plan.out_dir / search_engine.LAST)
    return count_parameters(build_model({"genotype": genotype}, meta["in_channels"], meta["num_classes"]))


def case_scores(best: dict[str, Any]) -> list[CaseScoreIn]:
    """Per-case, per-class rows from a retrain's ``metrics.json['best']``."""
    names = {str(c["label"]): name for name, c in best.get("classes", {}).items()}
    rows: list[CaseScoreIn] = []
    for case in best.get("per_case", []):
        for label, dsc in case["dsc"].items():
            rows.append(CaseScoreIn(case_id=case["case_id"], class_index=int(label),
                                    class_name=names.get(label, f"class_{label}"), dsc=json_safe(dsc),
                                    iou=json_safe(case["iou"].get(label))))
    return rows


def publish(session: Session, plan: JobPlan, outputs: Iterable[Output], history: list[dict[str, Any]],
            result: Any) -> None:
    """Write the rows of a finished run (in the caller's transaction)."""
    for out in outputs:
        register_artifact(session, job_id=plan.job_id, owner_id=plan.owner_id, name=out.name, kind=out.kind,
                          stored=out.stored)
    for entry in history:  # every epoch, also those whose callback a killed worker never ran
        store_epoch(session, plan.job_id, entry)
    if plan.kind is JobKind.SEARCH:
        genotype = result.genotype.to_dict()
        save_genotype(session, owner_id=plan.owner_id, genotype=genotype, job_id=plan.job_id, epoch=None,
                      params=genotype_params(plan, genotype))
        found = {k: result.summary.get(k) for k in ("genotype_params", "genotype_latency_ms", "latency_device")}
        if found["genotype_latency_ms"] is not None:  # its cost beside its DSC, for the API and the dashboard
            job = session.get(Job, plan.job_id)
            job.latest_metrics = {**(job.latest_metrics or {}), "found": json_safe(found)}
    else:
        record_case_scores(session, plan.job_id, case_scores(result.metrics["best"]))
        if result.metrics.get("test") is not None:  # scored once, on cases that chose nothing
            job = session.get(Job, plan.job_id)
            job.latest_metrics = {**(job.latest_metrics or {}), "test": json_safe(result.metrics["test"])}


BUNDLE, ONNX = "bundle.zip", "model.onnx"


def package_model(plan: JobPlan, store: ArtifactStore) -> list[Output]:
    """A retrain's ``bundle.zip`` (and ``model.onnx`` when the export passed its parity check).

    Never fails the job: an ONNX failure is recorded in the bundle's model card, and a
    bundle that cannot be made at all is logged and left out.
    """
    if plan.kind is not JobKind.RETRAIN:
        return []
    bundle, onnx = plan.out_dir / BUNDLE, plan.out_dir / ONNX
    try:
        make_bundle(plan.out_dir / retrain_engine.BEST, bundle, onnx_out=onnx)
    except Exception:  # packaging is a convenience: the trained model is published without it
        log.exception("job %s: the model bundle could not be made; the job succeeds without it", plan.job_id)
        return []
    made = [(BUNDLE, ArtifactKind.BUNDLE)] + ([(ONNX, ArtifactKind.ONNX)] if onnx.exists() else [])
    return [Output(name, kind, store.put_file(plan.job_id, name, plan.out_dir / name, kind)) for name, kind in made]
