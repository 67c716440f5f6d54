"""MLflow tracking without a server: a dead or refused tracking URI, or mlflow missing, never fails
a job's callbacks and costs it one warning; the helpers flatten what MLflow gets.

The real thing, against a real ``mlflow server``, is tests/integration/test_mlflow.py.
"""

from __future__ import annotations

import logging
import socket
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from nas_core.callbacks import EpochRecord
from nas_core.config import RetrainConfig, SearchConfig
from store.artifacts import ArtifactStore
from store.models import JobKind
from store.settings import Settings
from worker import tracking
from worker.callbacks import Chain
from worker.plan import JobPlan
from worker.tracking import JobTracker, config_params, epoch_metrics, model_name, redacted

SEARCH_RECORD = EpochRecord("search", 0, 2, {"train": {"loss": 0.9, "arch_loss": None}, "arch": {"dsc": 0.25}},
                            elapsed_s=1.0, genotype={"depth": 3})


def _plan(tmp_path: Path, kind: JobKind = JobKind.SEARCH) -> JobPlan:
    config = SearchConfig.from_dict({"epochs": 2}) if kind is JobKind.SEARCH else RetrainConfig.from_dict({"epochs": 2})
    return JobPlan("job_x", "usr_x", kind, "ds_0123456789abcdef", tmp_path / "data", None, config,
                   None if kind is JobKind.SEARCH else {"baseline": "unet"}, tmp_path / "work", tmp_path / "cache",
                   dataset_name="heart MRI/2", synthetic=True)


def _settings(tmp_path: Path, uri: str | None) -> Settings:
    return Settings(home=tmp_path, mlflow_tracking_uri=uri)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == tracking.__name__ and r.levelno >= logging.WARNING]


def _run_hooks(tracker: JobTracker, plan: JobPlan, tmp_path: Path) -> None:
    """A whole job's worth of tracker calls, as the runner makes them."""
    with tracker:
        tracker.start(plan)
        chain = Chain(tracker)
        for epoch in range(3):
            chain.on_epoch(replace(SEARCH_RECORD, epoch=epoch))
            assert not chain.should_stop()
        result = SimpleNamespace(summary={"epochs_run": 3}, history=[], genotype=None)
        tracker.publish(result, [], ArtifactStore(tmp_path / "artifacts"))
        tracker.end("succeeded")


def test_a_refused_tracking_server_costs_the_job_seconds_and_one_warning(tmp_path, caplog):
    pytest.importorskip("mlflow")
    uri = f"http://user:secret@127.0.0.1:{_closed_port()}"
    tracker = JobTracker(_settings(tmp_path, uri), "job_x")
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING):
        _run_hooks(tracker, _plan(tmp_path), tmp_path)
    assert time.monotonic() - t0 < 20  # short retries, then off: not MLflow's minutes of backoff
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "MLflow tracking at" in warnings[0] and "off for this job" in warnings[0]
    assert "secret" not in warnings[0]  # credentials in the URI stay out of the log
    assert tracker.client is None and tracker.run_id is None


def test_a_uri_mlflow_refuses_outright_is_one_warning_too(tmp_path, caplog):
    pytest.importorskip("mlflow")
    tracker = JobTracker(_settings(tmp_path, "nosuchscheme://nowhere"), "job_x")
    with caplog.at_level(logging.WARNING):
        _run_hooks(tracker, _plan(tmp_path), tmp_path)
    assert len(_warnings(caplog)) == 1


class _DiesAfterStart:
    """An MLflow client whose server goes away once the run exists."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if name == "get_experiment_by_name":
                return SimpleNamespace(experiment_id="1")
            if name == "search_runs":
                return []
            if name == "create_run":
                return SimpleNamespace(info=SimpleNamespace(run_id="run1", artifact_uri="mlflow-artifacts:/1/run1"))
            if name == "log_batch" and "metrics" not in kwargs:
                return None  # the params at the start
            raise ConnectionError("the server went away")

        return call


def test_a_server_dying_mid_job_turns_tracking_off_after_one_failed_call(tmp_path, caplog, monkeypatch):
    pytest.importorskip("mlflow")
    client = _DiesAfterStart()
    monkeypatch.setattr(tracking, "_client", lambda uri: client)
    tracker = JobTracker(_settings(tmp_path, "http://mlflow.invalid"), "job_x")
    with caplog.at_level(logging.WARNING):
        _run_hooks(tracker, _plan(tmp_path), tmp_path)
    assert client.calls.count("log_batch") == 2  # the params, then the first epoch's metrics: no more tries
    assert "set_terminated" not in client.calls
    assert len(_warnings(caplog)) == 1 and "logging epoch 0 failed" in _warnings(caplog)[0]


def test_mlflow_missing_means_one_warning_per_process_and_untracked_jobs(tmp_path, caplog, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)  # import mlflow.tracking raises ImportError
    monkeypatch.setattr(tracking, "_warned_missing", False)
    with caplog.at_level(logging.WARNING):
        for job_id in ("job_a", "job_b"):
            tracker = JobTracker(_settings(tmp_path, "http://127.0.0.1:5000"), job_id)
            _run_hooks(tracker, _plan(tmp_path), tmp_path)
            assert tracker.client is None
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "mlflow is not installed" in warnings[0] and "thrifty-nas[mlflow]" in warnings[0]


def test_without_a_uri_the_tracker_does_nothing(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(tracking, "_client", lambda uri: pytest.fail("no client without a URI"))
    tracker = JobTracker(_settings(tmp_path, None), "job_x")
    with caplog.at_level(logging.WARNING):
        _run_hooks(tracker, _plan(tmp_path), tmp_path)
    assert _warnings(caplog) == []


def test_the_setting_reads_its_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("THRIFTY_MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("THRIFTY_MLFLOW_EXPERIMENT", "lab")
    settings = Settings(home=tmp_path)
    assert (settings.mlflow_tracking_uri, settings.mlflow_experiment) == ("http://mlflow:5000", "lab")
    monkeypatch.delenv("THRIFTY_MLFLOW_TRACKING_URI")
    assert Settings(home=tmp_path).mlflow_tracking_uri is None


def test_helpers_flatten_what_mlflow_gets(tmp_path):
    assert epoch_metrics(SEARCH_RECORD) == {"train/loss": 0.9, "arch/dsc": 0.25}  # None dropped
    assert epoch_metrics(EpochRecord("retrain", 1, 2, {"val": {"dsc": float("nan"), "ok": True}}, 1.0)) == {}
    assert model_name(_plan(tmp_path)) == "thrifty-heart-MRI-2-01234567"
    params = config_params(_plan(tmp_path, JobKind.RETRAIN))
    assert params["epochs"] == "2" and params["architecture"] == "unet"
    assert all(isinstance(v, str) for v in params.values())
    uri = "https://u:p@mlflow.example:443/x"
    assert redacted(uri, uri) == "https://mlflow.example:443/x"
    assert redacted(f"GET {uri}/api failed", uri) == "GET https://mlflow.example:443/x/api failed"
    assert redacted("http://127.0.0.1:5000", "http://127.0.0.1:5000") == "http://127.0.0.1:5000"
