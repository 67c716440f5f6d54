"""The worker process's hooks are connected by ``worker.tasks``, not by ``worker.app``.

``worker.app`` is the bottom of the package (``worker.dispatch`` imports it), so it cannot
import the runner and reaper its hooks call; every worker process imports ``worker.tasks``
(the app's ``imports``) before it is ready, and that module connects them.
"""

from __future__ import annotations

from pathlib import Path

from celery import signals
from celery.utils.dispatch.signal import Signal

from store.settings import Settings
from worker import runner, tasks
from worker.app import celery_config


def _uids(signal: Signal) -> set[object]:
    return {key[0] for key, _ in signal.receivers}


def test_every_worker_imports_the_module_that_connects_its_hooks(tmp_path: Path) -> None:
    assert tasks.__name__ in celery_config(Settings(home=tmp_path))["imports"]
    assert "thrifty-reaper-start" in _uids(signals.worker_ready)
    assert "thrifty-shutdown" in _uids(signals.worker_shutting_down)


def test_a_warm_shutdown_stops_the_running_job() -> None:
    assert not runner.shutting_down()
    try:
        signals.worker_shutting_down.send(sender="w1@host", how="Warm", sig="SIGTERM", exitcode=0)
        assert runner.shutting_down()
    finally:
        runner._shutdown.clear()
