"""Real worker processes on the real Redis and PostgreSQL: a job from enqueue to succeeded, and
a worker killed mid-search whose job another worker resumes from its last epoch checkpoint."""

from __future__ import annotations

import hashlib
import re
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy.orm import Session, sessionmaker

from store.artifacts import ArtifactStore, list_artifacts
from store.datasets import create_dataset
from store.db import session_scope
from store.history import latest_genotype, list_alpha_snapshots
from store.jobs import create_job, get_job
from store.models import Job
from tests.integration.conftest import LEASE_SECONDS, PEPPER, Services, wait_for
from worker.dispatch import enqueue_job, queue_depth

SEARCH = {"epochs": 3, "warmup_epochs": 1, "image_size": 32, "batch_size": 2, "channels": 8, "k": 2, "depth": 3,
          "seed": 3}
JOB_TIMEOUT_S = 120.0

pytestmark = pytest.mark.integration


def _job(sessions: sessionmaker[Session], job_id: str) -> Job:
    with session_scope(sessions) as session:
        return get_job(session, job_id)


def _snapshots(sessions: sessionmaker[Session], job_id: str) -> list[tuple[int, str, Any, Any]]:
    with session_scope(sessions) as session:
        return [(s.epoch, s.cell_type, s.alphas, s.betas) for s in list_alpha_snapshots(session, job_id)]


def _submit_search(services: Services, phantom: Path) -> str:
    """A committed search job (user, dataset and job rows made directly in the store), then its message."""
    from store.users import create_user_with_key

    with session_scope(services.sessions) as session:
        user, _ = create_user_with_key(session, f"it-{uuid.uuid4().hex[:8]}", pepper=PEPPER)
        dataset = create_dataset(session, owner_id=user.id, name="phantom", path=str(phantom), format="nnunet",
                                 num_cases=6, num_classes=3, synthetic=True)
        job = create_job(session, owner_id=user.id, kind="search", dataset_id=dataset.id, config=SEARCH,
                         epochs=SEARCH["epochs"]).job
    enqueue_job(job.id, "search")  # after the commit
    return job.id


def _wait_finished(services: Services, job_id: str, *workers: Any) -> Job:
    def finished() -> Job | None:
        job = _job(services.sessions, job_id)
        return job if job.status in ("succeeded", "failed", "cancelled") else None

    tails = lambda: "\n".join(w.tail() for w in workers)  # noqa: E731
    return wait_for(finished, JOB_TIMEOUT_S, f"job {job_id} to finish", interval=0.3, on_timeout=tails)


@pytest.fixture(scope="module")
def reference(thrifty_env: Services, start_worker: Any, phantom_dataset: Path) -> str:
    """A search run uninterrupted by a real worker process."""
    worker = start_worker("ref")
    job_id = _submit_search(thrifty_env, phantom_dataset)
    job = _wait_finished(thrifty_env, job_id, worker)
    assert job.status == "succeeded", f"{job.error}\n{worker.tail()}"
    assert worker.stop() == 0  # a warm shutdown of an idle worker exits cleanly
    return job_id


def test_a_worker_process_runs_an_enqueued_job_to_succeeded(reference: str, thrifty_env: Services):
    job = _job(thrifty_env.sessions, reference)
    assert (job.status, job.attempt, job.progress, job.epoch, job.error) == ("succeeded", 1, 1.0, 3, None)
    assert job.worker_id.startswith("ref@")
    assert [(e, c) for e, c, _, _ in _snapshots(thrifty_env.sessions, reference)] == [
        (e, c) for e in range(3) for c in ("dn", "up")]
    store = ArtifactStore(thrifty_env.artifact_dir)
    with session_scope(thrifty_env.sessions) as session:
        artifacts = list_artifacts(session, reference)
        assert latest_genotype(session, reference) is not None
    assert sorted(a.name for a in artifacts) == ["alphas.jsonl", "genotype.json", "job.log", "last.pt", "summary.json"]
    for art in artifacts:
        assert hashlib.sha256(store.path_of(art.location).read_bytes()).hexdigest() == art.sha256
    assert queue_depth() == 0  # the message was consumed


def test_a_killed_workers_job_is_requeued_and_resumes_from_its_last_checkpoint(
        reference: str, thrifty_env: Services, start_worker: Any, phantom_dataset: Path):
    sessions = thrifty_env.sessions
    first = start_worker("doomed")
    job_id = _submit_search(thrifty_env, phantom_dataset)
    checkpoint = thrifty_env.artifact_dir / "work" / job_id / "last.pt"
    # kill it once epoch 1 of 3 is checkpointed and recorded, before the search ends
    wait_for(lambda: _snapshots(sessions, job_id) and checkpoint.exists(), JOB_TIMEOUT_S,
             "the first epoch to be recorded", interval=0.05, on_timeout=first.tail)
    first.kill()
    killed = _job(sessions, job_id)
    assert killed.status == "running" and killed.worker_id.startswith("doomed@"), first.tail()

    second = start_worker("rescuer")  # its reaper re-queues the job once the dead worker's lease expires
    job = _wait_finished(thrifty_env, job_id, second)
    assert job.status == "succeeded", f"{job.error}\n{second.tail()}"
    assert job.attempt == 2 and job.worker_id.startswith("rescuer@")
    resumed = re.search(rf"job {job_id} trains epochs (\d+)-3 of 3 \(resumed", second.log())
    assert resumed and int(resumed.group(1)) >= 2, second.tail()  # epoch 1 was not trained again
    assert re.search(rf"reaper requeued \d+ job\(s\) with expired leases: .*{job_id}", second.log())
    assert LEASE_SECONDS < 10  # what makes this test quick
    assert second.stop() == 0  # idle again: the next test's jobs must go to its own workers

    # same result as the uninterrupted run, and each epoch recorded exactly once
    with session_scope(sessions) as session:
        assert latest_genotype(session, job_id).genotype == latest_genotype(session, reference).genotype
    got, want = _snapshots(sessions, job_id), _snapshots(sessions, reference)
    assert [(e, c) for e, c, _, _ in got] == [(e, c) for e, c, _, _ in want]
    for (_, _, alphas, betas), (_, _, ref_alphas, ref_betas) in zip(got, want, strict=True):
        np.testing.assert_allclose(alphas, ref_alphas, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(betas, ref_betas, rtol=1e-6, atol=1e-8)


def test_a_stopped_worker_hands_its_job_back_and_another_worker_finishes_it(
        reference: str, thrifty_env: Services, start_worker: Any, phantom_dataset: Path):
    sessions = thrifty_env.sessions
    leaving = start_worker("leaving")
    job_id = _submit_search(thrifty_env, phantom_dataset)
    checkpoint = thrifty_env.artifact_dir / "work" / job_id / "last.pt"
    wait_for(lambda: _snapshots(sessions, job_id) and checkpoint.exists(), JOB_TIMEOUT_S,
             "the first epoch to be recorded", interval=0.05, on_timeout=leaving.tail)
    assert _job(sessions, job_id).worker_id.startswith("leaving@")
    assert leaving.stop() == 0  # SIGTERM: Celery's warm shutdown
    job = _job(sessions, job_id)
    if job.status != "succeeded":  # (unless the last epoch ended first on a fast machine)
        assert (job.status, job.worker_id, job.attempt) == ("queued", None, 0), leaving.tail()
        assert f"job {job_id} handed back to the queue" in leaving.log()

    successor = start_worker("successor")
    job = _wait_finished(thrifty_env, job_id, successor)
    assert job.status == "succeeded" and job.attempt == 1, f"{job.error}\n{successor.tail()}"
    with session_scope(sessions) as session:
        assert latest_genotype(session, job_id).genotype == latest_genotype(session, reference).genotype
    assert [(e, c) for e, c, _, _ in _snapshots(sessions, job_id)] == [(e, c) for e in range(3) for c in ("dn", "up")]
