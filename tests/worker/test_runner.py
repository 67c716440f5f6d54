"""The runner on the real PostgreSQL: tiny searches and retrains from claim to published results."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from nas_core.callbacks import Callbacks, EpochRecord, StepEvent, TrainingDiverged
from nas_core.models import build_model, count_parameters
from store.artifacts import ArtifactStore, list_artifacts
from store.db import session_scope
from store.history import latest_genotype, list_alpha_snapshots, list_case_scores, list_epoch_metrics
from store.jobs import claim_job, get_job, reap_expired_leases, request_cancel
from store.models import Job
from store.settings import Settings
from store.types import utcnow
from tests.worker.support import TINY_RETRAIN, TINY_SEARCH, Owner, make_owner, make_settings, submit
from worker.plan import work_dir
from worker.reaper import Reaper
from worker.runner import Outcome, run_job


def job_row(sessions: sessionmaker[Session], job_id: str) -> Job:
    with session_scope(sessions) as session:
        return get_job(session, job_id)


def snapshots(sessions: sessionmaker[Session], job_id: str) -> list[tuple[int, str, Any, Any]]:
    with session_scope(sessions) as session:
        return [(s.epoch, s.cell_type, s.alphas, s.betas) for s in list_alpha_snapshots(session, job_id)]


class Watch(Callbacks):
    """Records what the engine reported and the job row at each epoch end; runs ``act`` at a chosen step."""

    def __init__(self, sessions: sessionmaker[Session], job_id: str, act_at: tuple[int, int] | None = None,
                 act: Any = None) -> None:
        self.sessions, self.job_id, self.act_at, self.act = sessions, job_id, act_at, act
        self.steps: list[tuple[int, int]] = []
        self.rows: list[tuple[int, float, Any]] = []
        self.acted_after: int | None = None

    def on_step(self, event: StepEvent) -> None:
        self.steps.append((event.epoch, event.step))
        if self.act_at == (event.epoch, event.step):
            self.act()
            self.acted_after = len(self.steps)

    def on_epoch(self, record: EpochRecord) -> None:
        row = job_row(self.sessions, self.job_id)
        self.rows.append((row.epoch, row.progress, row.lease_expires_at))


class Searched(NamedTuple):
    job_id: str
    owner: Owner
    settings: Settings
    watch: Watch


@pytest.fixture(scope="module")
def searched(sessions: sessionmaker[Session], phantom: Path, pg_url: str,
             tmp_path_factory: pytest.TempPathFactory) -> Searched:
    """One uninterrupted tiny search, run through the runner (shared by several tests)."""
    owner = make_owner(sessions, phantom)
    settings = make_settings(pg_url, tmp_path_factory.mktemp("searched"))
    job_id = submit(sessions, owner, "search", TINY_SEARCH)
    watch = Watch(sessions, job_id)
    assert run_job(job_id, worker_id="w1", settings=settings, sessions=sessions, observers=[watch]) \
        is Outcome.SUCCEEDED
    return Searched(job_id, owner, settings, watch)


def test_search_job_succeeds_with_progress_history_genotype_and_artefacts(searched, sessions):
    job = job_row(sessions, searched.job_id)
    assert (job.status, job.error, job.progress, job.epoch, job.attempt) == ("succeeded", None, 1.0, 2, 1)
    assert job.latest_metrics["epoch"] == 2 and 0.0 <= job.latest_metrics["arch"]["dsc"] <= 1.0
    found = job.latest_metrics["found"]  # the found network's cost, beside its DSC
    assert found["genotype_params"] > 0 and found["genotype_latency_ms"] > 0 and found["latency_device"] == "cpu"
    # the row showed each finished epoch while the run went on, with a live lease
    assert [(epoch, progress) for epoch, progress, _ in searched.watch.rows] == [(1, 0.5), (2, 1.0)]
    assert all(lease > utcnow() - timedelta(minutes=1) for _, _, lease in searched.watch.rows)

    store = ArtifactStore(searched.settings.artifact_dir)
    with session_scope(sessions) as session:
        rows = {a.name: a for a in list_artifacts(session, searched.job_id)}
        genotype = latest_genotype(session, searched.job_id)
        metrics = [(m.epoch, m.split) for m in list_epoch_metrics(session, searched.job_id)]
    assert {name: a.kind for name, a in rows.items()} == {
        "genotype.json": "genotype", "alphas.jsonl": "alphas", "last.pt": "checkpoint", "summary.json": "metrics",
        "job.log": "log"}
    log_text = store.path_of(rows["job.log"].location).read_text()  # the job's own log lines, kept
    assert f"job {searched.job_id} (search) running" in log_text and "succeeded" in log_text
    for art in rows.values():
        data = store.path_of(art.location).read_bytes()
        assert (art.size, art.sha256) == (len(data), hashlib.sha256(data).hexdigest())

    found = json.loads(store.path_of(rows["genotype.json"].location).read_text())
    assert genotype.genotype == found and genotype.epoch is None
    assert genotype.params == count_parameters(build_model({"genotype": found}, 1, 3)) > 0

    # one snapshot per epoch and cell type, equal to the engine's own alpha history file
    snaps = snapshots(sessions, searched.job_id)
    assert [(epoch, cell) for epoch, cell, _, _ in snaps] == [(0, "dn"), (0, "up"), (1, "dn"), (1, "up")]
    lines = [json.loads(line) for line in store.path_of(rows["alphas.jsonl"].location).read_text().splitlines()]
    for epoch, cell, alphas, betas in snaps:
        assert alphas == lines[epoch][cell]["alphas"] and betas == lines[epoch][cell]["betas"]
    assert metrics == [(0, "arch"), (0, "train"), (1, "arch"), (1, "train")]
    assert not work_dir(searched.settings, searched.job_id).exists()  # outputs copied, work folder cleared


@pytest.mark.parametrize("source", ["search_job_id", "genotype_id"])
def test_retrain_trains_the_searched_genotype_and_records_per_case_dsc(searched, sessions, settings, source):
    with session_scope(sessions) as session:
        genotype = latest_genotype(session, searched.job_id)
    ref = searched.job_id if source == "search_job_id" else genotype.id
    job_id = submit(sessions, searched.owner, "retrain", TINY_RETRAIN, {source: ref})
    assert run_job(job_id, worker_id="w1", settings=settings, sessions=sessions) is Outcome.SUCCEEDED

    store = ArtifactStore(settings.artifact_dir)
    with session_scope(sessions) as session:
        rows = {a.name: a for a in list_artifacts(session, job_id)}
        scores = list_case_scores(session, job_id)
    assert sorted(rows) == ["best.pt", "bundle.zip", "final.pt", "job.log", "metrics.json", "model.onnx"]
    metrics = json.loads(store.path_of(rows["metrics.json"].location).read_text())
    assert metrics["spec"] == {"genotype": genotype.genotype}
    per_case = metrics["best"]["per_case"]
    assert {(s.case_id, s.class_index, s.class_name) for s in scores} == {
        (c["case_id"], int(k), f"organ_{k}") for c in per_case for k in c["dsc"]}
    assert [s.dsc for s in scores] == [c["dsc"][str(s.class_index)] for s in scores for c in per_case
                                       if c["case_id"] == s.case_id]
    assert job_row(sessions, job_id).status == "succeeded"


def test_retrain_of_a_search_without_genotype_fails_with_a_reason(owner, sessions, settings):
    search_id = submit(sessions, owner, "search", TINY_SEARCH)  # never run
    job_id = submit(sessions, owner, "retrain", TINY_RETRAIN, {"search_job_id": search_id})
    assert run_job(job_id, worker_id="w1", settings=settings, sessions=sessions) is Outcome.FAILED
    error = job_row(sessions, job_id).error
    assert f"search job {search_id} has no genotype yet (it is queued)" in error


def test_invalid_config_fails_naming_the_field(owner, sessions, settings):
    job_id = submit(sessions, owner, "search", {**TINY_SEARCH, "k": 3})
    assert run_job(job_id, worker_id="w1", settings=settings, sessions=sessions) is Outcome.FAILED
    assert job_row(sessions, job_id).error == "invalid configuration: k: must be >= 1 and divide channels=8, got 3"


def test_cancel_stops_the_run_within_one_step(owner, sessions, settings):
    settings = settings.model_copy(update={"cancel_poll_seconds": 0.0})  # ask before every step
    job_id = submit(sessions, owner, "search", {**TINY_SEARCH, "batch_size": 1})  # 3 steps an epoch

    def cancel() -> None:
        with session_scope(sessions) as session:
            request_cancel(session, job_id)

    watch = Watch(sessions, job_id, act_at=(0, 1), act=cancel)
    assert run_job(job_id, worker_id="w1", settings=settings, sessions=sessions, observers=[watch]) \
        is Outcome.CANCELLED
    assert len(watch.steps) == watch.acted_after  # not one step more after the cancel
    job = job_row(sessions, job_id)
    assert (job.status, job.error, job.worker_id) == ("cancelled", None, "w1") and job.finished_at is not None
    assert snapshots(sessions, job_id) == []
    assert not work_dir(settings, job_id).exists()


def test_a_deleted_dataset_file_fails_the_job_naming_the_file(sessions, settings, phantom, tmp_path):
    data = shutil.copytree(phantom, tmp_path / "copy")
    victim = data / "imagesTr" / "phantom_002_0000.nii.gz"
    victim.unlink()
    owner = make_owner(sessions, data)
    job_id = submit(sessions, owner, "search", TINY_SEARCH)
    assert run_job(job_id, worker_id="w1", settings=settings, sessions=sessions) is Outcome.FAILED
    error = job_row(sessions, job_id).error
    assert str(victim) in error and "Traceback" not in error


def test_a_duplicate_message_does_nothing(owner, sessions, settings, searched):
    job_id = submit(sessions, owner, "search", TINY_SEARCH)
    with session_scope(sessions) as session:
        assert claim_job(session, job_id, "other-worker", 60)
    assert run_job(job_id, worker_id="w1", settings=settings, sessions=sessions) is Outcome.SKIPPED
    job = job_row(sessions, job_id)
    assert (job.status, job.worker_id, job.attempt) == ("running", "other-worker", 1)
    assert not work_dir(settings, job_id).exists()
    # a finished job's late duplicate changes nothing either
    before = job_row(sessions, searched.job_id)
    assert run_job(searched.job_id, worker_id="w2", settings=settings, sessions=sessions) is Outcome.SKIPPED
    after = job_row(sessions, searched.job_id)
    assert (after.status, after.attempt, after.worker_id, after.updated_at) == (
        before.status, before.attempt, before.worker_id, before.updated_at)


def test_losing_the_lease_stops_the_job_and_leaves_it_to_the_next_attempt(owner, sessions, settings):
    settings = settings.model_copy(update={"cancel_poll_seconds": 0.0})  # ask before every step
    job_id = submit(sessions, owner, "search", {**TINY_SEARCH, "batch_size": 1})

    def lose_lease() -> None:  # as if this worker had stalled and a reaper had re-queued the job
        with session_scope(sessions) as session:
            session.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(1)))
            assert job_id in reap_expired_leases(session).requeued

    watch = Watch(sessions, job_id, act_at=(0, 0), act=lose_lease)
    assert run_job(job_id, worker_id="w1", settings=settings, sessions=sessions, observers=[watch]) is Outcome.LOST
    assert len(watch.steps) == watch.acted_after
    job = job_row(sessions, job_id)
    assert (job.status, job.worker_id, job.attempt, job.error) == ("queued", None, 1, None)


class Crash(BaseException):
    """Stands in for a worker killed mid-run: nothing in the runner catches it."""


def test_reaper_requeues_an_expired_job_which_resumes_from_its_checkpoint(searched, sessions, pg_url, tmp_path):
    settings = make_settings(pg_url, tmp_path, lease_seconds=2)
    job_id = submit(sessions, searched.owner, "search", TINY_SEARCH)

    def crash() -> None:
        raise Crash

    first = Watch(sessions, job_id)
    first.on_epoch = lambda record: crash()  # dies right after epoch 0 was checkpointed and recorded
    with pytest.raises(Crash):
        run_job(job_id, worker_id="w1", settings=settings, sessions=sessions, observers=[first])
    assert job_row(sessions, job_id).status == "running"  # the dead worker still holds the lease

    sent: list[tuple[str, str]] = []
    reaper = Reaper(sessions, enqueue=lambda job, kind: sent.append((job, kind)), pending=set)
    assert job_id not in reaper.reap_expired()[0]  # its lease is still valid
    requeued, _ = reaper.reap_expired(now=utcnow() + timedelta(seconds=3))
    assert job_id in requeued and (job_id, "search") in sent

    second = Watch(sessions, job_id)
    assert run_job(job_id, worker_id="w2", settings=settings, sessions=sessions, observers=[second]) \
        is Outcome.SUCCEEDED
    assert {epoch for epoch, _ in second.steps} == {1}  # resumed after epoch 0, which was not redone
    job = job_row(sessions, job_id)
    assert (job.status, job.attempt, job.worker_id) == ("succeeded", 2, "w2")
    with session_scope(sessions) as session:
        assert latest_genotype(session, job_id).genotype == latest_genotype(session, searched.job_id).genotype
    resumed, reference = snapshots(sessions, job_id), snapshots(sessions, searched.job_id)
    assert [(e, c) for e, c, _, _ in resumed] == [(e, c) for e, c, _, _ in reference]
    for (_, _, alphas, betas), (_, _, ref_alphas, ref_betas) in zip(resumed, reference, strict=True):
        np.testing.assert_allclose(alphas, ref_alphas, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(betas, ref_betas, rtol=1e-6, atol=1e-8)


def test_shutdown_hands_the_running_job_back_to_the_queue(owner, sessions, settings):
    import threading

    job_id = submit(sessions, owner, "search", {**TINY_SEARCH, "batch_size": 1})
    shutdown = threading.Event()
    sent: list[tuple[str, str]] = []
    watch = Watch(sessions, job_id, act_at=(0, 0), act=shutdown.set)
    outcome = run_job(job_id, worker_id="w1", settings=settings, sessions=sessions, observers=[watch],
                      shutdown=shutdown, enqueue=lambda job, kind: sent.append((job, kind)))
    assert outcome is Outcome.HANDED_BACK and len(watch.steps) == watch.acted_after
    job = job_row(sessions, job_id)
    assert (job.status, job.worker_id, job.lease_expires_at) == ("queued", None, None)
    assert job.attempt == 0 and sent == [(job_id, "search")]  # a clean stop spends no attempt


def test_reaper_resends_stale_queued_jobs_unless_their_message_waits(owner, sessions):
    waiting, lost = (submit(sessions, owner, "search", TINY_SEARCH) for _ in range(2))
    with session_scope(sessions) as session:
        session.execute(update(Job).where(Job.id.in_([waiting, lost])).values(
            queued_at=utcnow() - timedelta(minutes=10)))
    sent: list[str] = []
    reaper = Reaper(sessions, enqueue=lambda job, kind: sent.append(job), pending=lambda: {waiting},
                    stale_after=timedelta(minutes=5))
    assert reaper.resend_stale() == [lost] and sent == [lost]
    assert reaper.resend_stale() == []  # touched: not stale again until stale_after has passed

    def broker_down(job: str, kind: str) -> None:
        raise ConnectionError("broker down")

    with session_scope(sessions) as session:
        session.execute(update(Job).where(Job.id == lost).values(queued_at=utcnow() - timedelta(minutes=10)))
    assert Reaper(sessions, enqueue=broker_down, pending=lambda: None,
                  stale_after=timedelta(minutes=5)).resend_stale() == []
    assert job_row(sessions, lost).status == "queued"


@pytest.mark.parametrize(("exc", "expected"), [
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
     "out of GPU memory: lower batch_size (now 2) or image_size (now 32), or channels (now 8) and resubmit"),
    (MemoryError(), "out of host memory: lower batch_size (now 2) or image_size (now 32), or channels (now 8)"),
    (TrainingDiverged("training diverged: loss is nan at epoch 3, step 1; lower w_lr"),
     "training diverged: loss is nan at epoch 3, step 1; lower w_lr"),
    (FileNotFoundError(2, "No such file or directory", "/data/x/img.nii.gz"),
     "a file the job needs is missing: /data/x/img.nii.gz; restore it"),
    (RuntimeError("CUDA error: an illegal memory access was encountered"), None),
])
def test_failures_a_person_can_fix_get_a_reason(exc, expected, settings, phantom):
    from nas_core.config import SearchConfig
    from store.models import JobKind
    from worker.failures import failure_message
    from worker.plan import JobPlan

    plan = JobPlan("job_x", "usr_x", JobKind.SEARCH, "ds_x", phantom, None, SearchConfig.from_dict(TINY_SEARCH),
                   None, work_dir(settings, "job_x"), settings.artifact_dir / "cache")
    message = failure_message(exc, plan)
    assert message is None if expected is None else message.startswith(expected)
