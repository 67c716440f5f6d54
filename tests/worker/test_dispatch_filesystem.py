"""The dispatch contract on the embedded broker (Celery's filesystem transport): real files, no Redis."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from store.settings import get_settings
from worker.app import get_app
from worker.dispatch import broker_reachable, enqueue_job, pending_job_ids, queue_depth


@pytest.fixture
def embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The embedded settings under a temp home; the global caches are reset before and after."""
    for name in ("THRIFTY_DATABASE_URL", "THRIFTY_BROKER_URL", "THRIFTY_ARTIFACT_DIR", "THRIFTY_DATA_ROOTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("THRIFTY_HOME", str(tmp_path))
    get_settings.cache_clear()
    get_app.cache_clear()
    get_settings().ensure_dirs()
    yield tmp_path
    get_settings.cache_clear()
    get_app.cache_clear()


def test_enqueued_jobs_wait_as_files_in_the_gpu_queue(embedded):
    assert broker_reachable() and queue_depth() == 0 and pending_job_ids() == set()
    enqueue_job("job_aaa", "search")
    enqueue_job("job_bbb", "retrain")
    assert queue_depth() == 2
    assert pending_job_ids() == {"job_aaa", "job_bbb"}
    files = list((embedded / "broker" / "queue").iterdir())
    assert len(files) == 2 and all(f.name.endswith(".gpu.msg") for f in files)
    assert not (Path.cwd() / "control").exists()  # kombu's control folder stays under the home


def test_an_unknown_kind_is_refused(embedded):
    with pytest.raises(ValueError, match="job kind 'evaluate' is not one of"):
        enqueue_job("job_aaa", "evaluate")
    assert queue_depth() == 0


def test_missing_broker_folders_mean_unreachable(embedded):
    shutil.rmtree(embedded / "broker")
    assert broker_reachable() is False
    assert queue_depth() is None and pending_job_ids() is None  # unknown, not empty
