"""A successful retrain publishes its model as ``bundle.zip`` and ``model.onnx``; a failed export never fails it."""

from __future__ import annotations

import hashlib
import zipfile

import onnx

from nas_core import bundle as bundle_module
from nas_core.export import ExportError
from store.artifacts import ArtifactStore, list_artifacts
from store.db import session_scope
from store.history import list_case_scores
from store.jobs import get_job
from tests.worker.support import TINY_RETRAIN, submit
from worker.runner import Outcome, run_job

GENOTYPE = {"version": 1, "C": 8, "depth": 2, "nodes": 1, "dn": [["conv_3x3", 0], ["avg_pool", 1]],
            "up": [["skip", 0], ["up_conv", 1]]}
ONE_EPOCH = {**TINY_RETRAIN, "epochs": 1}


def _retrain(sessions, owner, settings):
    job_id = submit(sessions, owner, "retrain", ONE_EPOCH, {"genotype": GENOTYPE})
    assert run_job(job_id, worker_id="w1", settings=settings, sessions=sessions) is Outcome.SUCCEEDED
    store = ArtifactStore(settings.artifact_dir)
    with session_scope(sessions) as session:
        rows = {a.name: a for a in list_artifacts(session, job_id)}
        scores = list_case_scores(session, job_id)
        assert get_job(session, job_id).status == "succeeded"
    for art in rows.values():
        data = store.path_of(art.location).read_bytes()
        assert (art.size, art.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    return rows, scores, store


def test_retrain_registers_the_bundle_and_the_onnx_model(sessions, owner, settings):
    rows, scores, store = _retrain(sessions, owner, settings)
    assert {name: a.kind for name, a in rows.items()} == {
        "best.pt": "checkpoint", "final.pt": "checkpoint", "metrics.json": "metrics",
        "bundle.zip": "bundle", "model.onnx": "onnx", "job.log": "log"}
    with zipfile.ZipFile(store.path_of(rows["bundle.zip"].location)) as zf:
        assert sorted(zf.namelist()) == ["MODEL_CARD.md", "genotype.json", "model.onnx", "model.pt",
                                         "preprocessing.json"]
        assert zf.read("model.onnx") == store.path_of(rows["model.onnx"].location).read_bytes()
        card = zf.read("MODEL_CARD.md").decode()
    onnx.checker.check_model(onnx.load(str(store.path_of(rows["model.onnx"].location))))
    assert "SYNTHETIC: yes" in card and "max |difference| of the logits" in card
    for s in scores:  # the card's per-case DSC is what the job recorded
        assert f"| {s.case_id} |" in card and (s.dsc is None or f"{s.dsc:.4f}" in card)


def test_a_failed_onnx_export_still_succeeds_with_the_reason_in_the_card(sessions, owner, settings, monkeypatch):
    def broken(*args, **kwargs):
        raise ExportError("torch.onnx.export failed at opset 17: unsupported op")

    monkeypatch.setattr(bundle_module, "export_checkpoint", broken)
    rows, _, store = _retrain(sessions, owner, settings)
    assert sorted(rows) == ["best.pt", "bundle.zip", "final.pt", "job.log", "metrics.json"]
    with zipfile.ZipFile(store.path_of(rows["bundle.zip"].location)) as zf:
        assert "model.onnx" not in zf.namelist()
        card = zf.read("MODEL_CARD.md").decode()
    assert "the export failed (ExportError: torch.onnx.export failed at opset 17: unsupported op)" in card


def test_a_bundle_that_cannot_be_made_is_left_out_and_the_job_succeeds(sessions, owner, settings, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("worker.results.make_bundle", broken)
    rows, _, _ = _retrain(sessions, owner, settings)
    assert sorted(rows) == ["best.pt", "final.pt", "job.log", "metrics.json"]
