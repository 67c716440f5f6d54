"""MLflow tracking for real: a real ``mlflow server`` (SQLite backend, artefacts proxied to a temp
folder, started here), a real worker process with ``THRIFTY_MLFLOW_TRACKING_URI`` pointing at it,
one tiny search and one tiny retrain of its genotype; then MLflow's own client reads back one run
per job with its config, per-epoch metrics, genotype and pictures, and the retrain's bundle as a
registered model version.

The server starts while the worker does (about 35 s for both on two busy cores); the jobs take
seconds. mlflow missing (it is in the ``dev`` extra): skipped, unless ``CI=true``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from store.artifacts import list_artifacts
from store.db import session_scope
from store.history import latest_genotype
from store.models import Dataset
from tests.integration.conftest import READY_TIMEOUT_S, Services, _cancel_leftovers, _unavailable, wait_for
from tests.integration.faults_support import (
    RETRAIN,
    SEARCH,
    add_job,
    free_port,
    new_dataset,
    new_user,
    processes,
    wait_finished,
)
from worker.dispatch import enqueue_job

pytestmark = pytest.mark.integration

TINY_SEARCH = {**SEARCH, "epochs": 2}
TINY_RETRAIN = RETRAIN  # 2 epochs
JOB_TIMEOUT_S = 120.0
EXPERIMENT = "thrifty-nas"  # the default of THRIFTY_MLFLOW_EXPERIMENT
PNG = b"\x89PNG\r\n\x1a\n"


@dataclass
class MlflowServer:
    """``mlflow server`` in its own process group, on a free port."""

    url: str
    process: subprocess.Popen
    log_path: Path

    @classmethod
    def start(cls, folder: Path) -> MlflowServer:
        port = free_port()
        log_path = folder / "server.log"
        argv = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
                "--workers", "1"]
        # its background job runner (GenAI evaluations) is not needed here, and costs CPU
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with log_path.open("w") as log_file:
            process = subprocess.Popen(argv, cwd=folder, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        return cls(f"http://127.0.0.1:{port}", process, log_path)

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace")
        return "--- last lines of the MLflow server's log ---\n" + "\n".join(text.splitlines()[-lines:])

    def wait_healthy(self) -> None:
        def healthy() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"the MLflow server exited with {self.process.returncode}\n{self.tail()}")
            try:
                return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(healthy, READY_TIMEOUT_S, "the MLflow server to answer /health", interval=0.5, on_timeout=self.tail)

    def stop(self) -> None:
        """SIGKILL to its process group (the server and its uvicorn): its database is thrown away."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=15)


@dataclass
class Tracked:
    client: Any  # mlflow.tracking.MlflowClient
    runs: dict[str, Any]  # job id -> its MLflow run
    search_id: str
    retrain_id: str
    user_id: str
    dataset_id: str
    dataset_name: str
    worker_log: str


@pytest.fixture(scope="module")
def tracked(thrifty_env: Services, phantom_dataset: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Tracked]:
    """A search and a retrain of its genotype, run by a worker that logs to a real MLflow server."""
    if importlib.util.find_spec("mlflow") is None:
        _unavailable("mlflow is not installed: pip install -e '.[dev]' (or '.[mlflow]')")
    from mlflow.tracking import MlflowClient

    sessions = thrifty_env.sessions
    server = MlflowServer.start(tmp_path_factory.mktemp("mlflow"))
    try:
        with processes(thrifty_env, tmp_path_factory) as procs:
            worker = procs.worker("mlflow", THRIFTY_MLFLOW_TRACKING_URI=server.url)  # while the server starts
            server.wait_healthy()
            user = new_user(sessions)
            dataset_id = new_dataset(sessions, user.user_id, phantom_dataset)
            search_id = add_job(sessions, user.user_id, dataset_id, "search", TINY_SEARCH)
            enqueue_job(search_id, "search")
            [search] = wait_finished(sessions, [search_id], JOB_TIMEOUT_S, worker, server)
            assert search.status == "succeeded", f"{search.error}\n{worker.tail()}"
            retrain_id = add_job(sessions, user.user_id, dataset_id, "retrain", TINY_RETRAIN,
                                 {"search_job_id": search_id})
            enqueue_job(retrain_id, "retrain")
            [retrain] = wait_finished(sessions, [retrain_id], JOB_TIMEOUT_S, worker, server)
            assert retrain.status == "succeeded", f"{retrain.error}\n{worker.tail()}"

            client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)

            def both_ended() -> dict[str, Any] | None:  # the run ends just after the job's row does
                experiment = client.get_experiment_by_name(EXPERIMENT)
                runs = client.search_runs([experiment.experiment_id]) if experiment else []
                ended = {r.data.tags.get("thrifty.job_id"): r for r in runs if r.info.status != "RUNNING"}
                return ended if len(ended) == 2 else None

            runs = wait_for(both_ended, 60, "both MLflow runs to end", interval=0.5, on_timeout=worker.tail)
            worker_log = worker.log()
        with session_scope(sessions) as session:
            dataset_name = session.get(Dataset, dataset_id).name
        yield Tracked(client, runs, search_id, retrain_id, user.user_id, dataset_id, dataset_name, worker_log)
    finally:
        server.stop()
        _cancel_leftovers(sessions)


def _history(client: Any, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _paths(client: Any, run_id: str, folder: str | None = None) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, folder)}


def _download(client: Any, run_id: str, path: str, tmp_path: Path) -> Path:
    return Path(client.download_artifacts(run_id, path, str(tmp_path)))


def test_each_job_is_one_finished_run_with_its_config_and_owner(tracked: Tracked):
    assert set(tracked.runs) == {tracked.search_id, tracked.retrain_id}
    experiment = tracked.client.get_experiment_by_name(EXPERIMENT)
    assert len(tracked.client.search_runs([experiment.experiment_id])) == 2  # one run per job, no more
    for job_id, kind, config in ((tracked.search_id, "search", TINY_SEARCH),
                                 (tracked.retrain_id, "retrain", TINY_RETRAIN)):
        run = tracked.runs[job_id]
        assert (run.info.run_name, run.info.status) == (job_id, "FINISHED")
        tags = run.data.tags
        assert (tags["thrifty.kind"], tags["thrifty.dataset_id"], tags["thrifty.user_id"], tags["thrifty.dataset"]) \
            == (kind, tracked.dataset_id, tracked.user_id, tracked.dataset_name)
        params = run.data.params
        assert {key: params.get(key) for key in config} == {key: json.dumps(v) for key, v in config.items()}
        assert len(params) > len(config)  # the defaults too: the whole config the engine ran
    assert tracked.runs[tracked.retrain_id].data.params["architecture"] == "thrifty"
    assert "MLflow tracking at" not in tracked.worker_log  # never switched off


def test_metrics_have_one_value_per_epoch(tracked: Tracked):
    client = tracked.client
    search, retrain = tracked.runs[tracked.search_id].info.run_id, tracked.runs[tracked.retrain_id].info.run_id
    for run_id, epochs, keys in ((search, TINY_SEARCH["epochs"], ("train/loss", "arch/dsc")),
                                 (retrain, TINY_RETRAIN["epochs"], ("train/loss", "val/dsc"))):
        for key in keys:
            history = _history(client, run_id, key)
            assert [step for step, _ in history] == list(range(epochs)), (key, history)
    best = tracked.runs[tracked.retrain_id].data.metrics["best/dsc"]
    assert best == pytest.approx(max(value for _, value in _history(client, retrain, "val/dsc")))


def test_the_search_run_holds_its_genotype_and_alpha_history_picture(tracked: Tracked, thrifty_env: Services,
                                                                      tmp_path: Path):
    client, run_id = tracked.client, tracked.runs[tracked.search_id].info.run_id
    assert {"genotype.json", "alphas.jsonl", "summary.json", "plots", "genotypes"} <= _paths(client, run_id)
    assert _paths(client, run_id, "plots") == {"plots/alphas.png", "plots/genotype.png", "plots/curves.png"}
    assert _paths(client, run_id, "genotypes") == {f"genotypes/epoch_{e:03d}.json" for e in range(TINY_SEARCH["epochs"])}
    genotype = json.loads(_download(client, run_id, "genotype.json", tmp_path).read_text())
    with session_scope(thrifty_env.sessions) as session:
        assert genotype == latest_genotype(session, tracked.search_id).genotype
    assert _download(client, run_id, "plots/alphas.png", tmp_path).read_bytes().startswith(PNG)


def test_the_retrain_registers_its_bundle_as_a_model_version(tracked: Tracked, thrifty_env: Services,
                                                             tmp_path: Path):
    client, run = tracked.client, tracked.runs[tracked.retrain_id]
    run_id = run.info.run_id
    assert {"genotype.json", "metrics.json", "plots", "model"} <= _paths(client, run_id)
    assert {"plots/curves.png", "plots/genotype.png"} <= _paths(client, run_id, "plots")
    [version] = client.search_model_versions(f"run_id = '{run_id}'")
    assert version.name.startswith("thrifty-phantom-") and version.status == "READY"
    assert version.source.endswith("/model") and client.get_registered_model(version.name).name == version.name
    assert float(version.tags["dsc"]) == pytest.approx(run.data.metrics["best/dsc"])
    assert int(version.tags["params"]) == run.data.metrics["params"] > 0
    assert version.tags["thrifty.job_id"] == tracked.retrain_id
    # the bundle MLflow holds is the one the service serves for download
    bundle = _download(client, run_id, "model/bundle.zip", tmp_path).read_bytes()
    with session_scope(thrifty_env.sessions) as session:
        stored = {a.name: a.sha256 for a in list_artifacts(session, tracked.retrain_id)}
    assert hashlib.sha256(bundle).hexdigest() == stored["bundle.zip"]
