"""Optional MLflow tracking of jobs (``THRIFTY_MLFLOW_TRACKING_URI``, the ``mlflow`` extra).

One MLflow run per job, named by the job id, in the experiment ``THRIFTY_MLFLOW_EXPERIMENT``:

* at the start: the job's config as params; tags ``thrifty.job_id``, ``thrifty.kind``,
  ``thrifty.dataset``, ``thrifty.dataset_id``, ``thrifty.user_id`` (and ``mlflow.user``);
* after every epoch: its metrics as ``<split>/<name>`` (step = epoch, from 0), and a
  search's genotype of that epoch as ``genotypes/epoch_NNN.json``;
* on success: the result files (genotype, alpha history, summary or metrics), the pictures
  ``nas_core.viz`` draws for the API (``plots/``: alpha history, cells, curves), and for a
  retrain its ``bundle.zip`` (and ``model.onnx``) under ``model/``, registered as a version
  of the model ``thrifty-<dataset name>-<dataset id prefix>`` tagged with its DSC and params;
* at the end: status FINISHED, FAILED or KILLED (cancelled, handed back, lost).

The engines know nothing of MLflow and the runner only starts, feeds and ends a
:class:`JobTracker`. Tracking never fails a job and never holds it up for long: mlflow is
imported only when the URI is set (missing: one warning, the jobs run untracked), its HTTP
requests get short retries and timeout unless ``MLFLOW_HTTP_REQUEST_*`` are set, and the
first MLflow error logs one warning and stops tracking for that job. A re-queued job
continues its run (found by its ``thrifty.job_id`` tag) from the epoch it resumes at.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from nas_core.callbacks import Callbacks, EpochRecord
from nas_core.config import SearchConfig
from store.artifacts import ArtifactStore
from store.models import ArtifactKind, JobKind
from store.settings import Settings
from worker.plan import JobPlan
from worker.results import Output

log = logging.getLogger(__name__)

T = TypeVar("T")

JOB_TAG = "thrifty.job_id"
MODEL_DIR = "model"  # the run's artifact folder a retrain's model version points at
# MLflow's client retries a refused connection for minutes by default; a job must not wait that long.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
END_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}  # any other ending: KILLED
RESULT_FILES = {ArtifactKind.GENOTYPE: "", ArtifactKind.ALPHAS: "", ArtifactKind.METRICS: "",
                ArtifactKind.BUNDLE: MODEL_DIR, ArtifactKind.ONNX: MODEL_DIR}  # kind -> artifact folder
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
PARAMS_PER_BATCH = 100  # MLflow's limit on params per log_batch

_warned_missing = False


def _client(uri: str) -> Any | None:
    """An ``MlflowClient`` for ``uri``, or None (one warning per process) without mlflow installed."""
    global _warned_missing
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        if not _warned_missing:
            _warned_missing = True
            log.warning("THRIFTY_MLFLOW_TRACKING_URI is set but mlflow is not installed: jobs run without "
                        "MLflow tracking; install it with pip install 'thrifty-nas[mlflow]'")
        return None
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def redacted(text: str, uri: str) -> str:
    """``text`` (``uri`` itself, or an error message quoting it) without the URI's user name and password."""
    netloc = urlsplit(uri).netloc
    return text.replace(netloc, netloc.rsplit("@", 1)[1]) if "@" in netloc else text


def model_name(plan: JobPlan) -> str:
    """The registered model a retrain's bundle becomes a version of: one per dataset."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", plan.dataset_name).strip("-") or "dataset"
    return f"thrifty-{name}-{plan.dataset_id.removeprefix('ds_')[:8]}"


def config_params(plan: JobPlan) -> dict[str, str]:
    """The job's config (and a retrain's architecture name) as MLflow params."""
    params = {key: value if isinstance(value, str) else json.dumps(value)
              for key, value in plan.config.to_dict().items()}
    if plan.architecture is not None:
        params["architecture"] = plan.architecture.get("baseline") or "thrifty"
    return {key: value[:MAX_PARAM_CHARS] for key, value in params.items()}


def numbers(values: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers among ``values`` (not bools), keyed ``prefix + name``."""
    return {prefix + key: float(value) for key, value in values.items()
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)}


def epoch_metrics(record: EpochRecord) -> dict[str, float]:
    """``{"train/loss": .., "val/dsc": ..}``: an epoch's metrics, flattened."""
    found: dict[str, float] = {}
    for split, values in record.metrics.items():
        found.update(numbers(values, f"{split}/"))
    return found


def final_metrics(plan: JobPlan, result: Any) -> dict[str, float]:
    """A finished run's headline numbers: its summary's top-level numbers, a retrain's best and test DSC."""
    if plan.kind is JobKind.SEARCH:
        return numbers(result.summary)
    found = numbers(result.metrics)
    for split in ("best", "test"):
        dsc = (result.metrics.get(split) or {}).get("mean_dsc")
        found.update(numbers({f"{split}/dsc": dsc}))
    return found


def trained_genotype(plan: JobPlan, result: Any) -> dict[str, Any] | None:
    if plan.kind is JobKind.SEARCH:
        return result.genotype.to_dict()
    return (plan.architecture or {}).get("genotype")


def pictures(plan: JobPlan, history: Iterable[dict[str, Any]], genotype: dict[str, Any] | None) -> dict[str, bytes]:
    """The PNGs the API's plots routes serve, drawn by the same ``nas_core.viz`` renderers."""
    from nas_core.viz import render_alpha_heatmap, render_cell_diagram, render_curves

    history = list(history)
    drawn = {"curves.png": render_curves([{"epoch": h["epoch"], "split": split, "metrics": values}
                                          for h in history for split, values in h["metrics"].items()],
                                         synthetic=plan.synthetic)}
    if genotype is not None:
        drawn["genotype.png"] = render_cell_diagram(genotype, synthetic=plan.synthetic)
    if plan.kind is JobKind.SEARCH:
        snapshots = [{"epoch": h["epoch"], "cell_type": cell, "genotype": h.get("genotype"), **snap}
                     for h in history for cell, snap in (h.get("arch") or {}).items()]
        nodes = plan.config.nodes if isinstance(plan.config, SearchConfig) else SearchConfig.nodes
        drawn["alphas.png"] = render_alpha_heatmap(snapshots, nodes, genotype=genotype, synthetic=plan.synthetic)
    return drawn


class JobTracker(Callbacks):
    """Logs one job to MLflow (see the module doc); does nothing when tracking is off or has failed.

    ``start(plan)`` opens the run, the engine's epochs arrive through the callback chain,
    ``publish`` logs a succeeded job's results, ``end(outcome)`` (or leaving the ``with``
    block on an exception) closes the run.
    """

    def __init__(self, settings: Settings, job_id: str) -> None:
        self.uri, self.experiment, self.job_id = settings.mlflow_tracking_uri, settings.mlflow_experiment, job_id
        self.client: Any | None = None
        self.plan: JobPlan | None = None
        self.run_id: str | None = None
        self.artifact_uri = ""

    def __enter__(self) -> JobTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end(None)  # after end(outcome) a no-op; else an error escaped: the job is re-queued later

    def _guarded(self, what: str, func: Callable[[Any], T]) -> T | None:
        """``func(client)``, or None once tracking is off: the first error turns it off for this job."""
        client = self.client
        if client is None:
            return None
        try:
            return func(client)
        except Exception as exc:  # MLflow is a convenience: never let it fail or stall the job
            self._off(what, exc)
            return None

    def _off(self, what: str, exc: Exception) -> None:
        self.client = None
        uri = self.uri or ""
        log.warning("job %s: MLflow tracking at %s is off for this job: %s failed (%s: %s)", self.job_id,
                    redacted(uri, uri), what, exc.__class__.__name__, redacted(str(exc), uri)[:500])

    def start(self, plan: JobPlan) -> None:
        """Open the job's run (or reopen a re-queued job's) and log its config."""
        if not self.uri:
            return
        self.plan = plan
        try:
            self.client = _client(self.uri)
        except Exception as exc:  # a URI MLflow refuses outright
            self._off("connecting", exc)
            return
        self._guarded("starting the run", self._open)

    def _open(self, client: Any) -> None:
        plan = self.plan
        assert plan is not None
        experiment_id = _experiment_id(client, self.experiment)
        found = client.search_runs([experiment_id], filter_string=f"tags.`{JOB_TAG}` = '{self.job_id}'",
                                   max_results=1)
        if found:  # a re-queued job: its params are logged already
            run = found[0]
            client.update_run(run.info.run_id, status="RUNNING")
        else:
            tags = {JOB_TAG: self.job_id, "thrifty.kind": plan.kind.value, "thrifty.dataset": plan.dataset_name,
                    "thrifty.dataset_id": plan.dataset_id, "thrifty.user_id": plan.owner_id,
                    "thrifty.synthetic": str(plan.synthetic).lower(), "mlflow.user": plan.owner_id}
            run = client.create_run(experiment_id, run_name=self.job_id, tags=tags)
            _log_params(client, run.info.run_id, config_params(plan))
        self.run_id, self.artifact_uri = run.info.run_id, run.info.artifact_uri
        uri = self.uri or ""
        log.info("job %s: tracked as MLflow run %s at %s", self.job_id, self.run_id, redacted(uri, uri))

    def on_epoch(self, record: EpochRecord) -> None:
        if self.run_id is not None:
            self._guarded(f"logging epoch {record.epoch}", lambda client: self._log_epoch(client, record))

    def _log_epoch(self, client: Any, record: EpochRecord) -> None:
        _log_metrics(client, self.run_id, epoch_metrics(record), record.epoch)
        if record.genotype is not None:
            client.log_dict(self.run_id, record.genotype, f"genotypes/epoch_{record.epoch:03d}.json")

    def publish(self, result: Any, outputs: Sequence[Output], store: ArtifactStore) -> None:
        """A succeeded job's results and pictures; a retrain's bundle registered as a model version."""
        if self.run_id is not None:
            self._guarded("logging the results", lambda client: self._publish(client, result, outputs, store))

    def _publish(self, client: Any, result: Any, outputs: Sequence[Output], store: ArtifactStore) -> None:
        plan = self.plan
        assert plan is not None
        genotype = trained_genotype(plan, result)
        _log_metrics(client, self.run_id, final_metrics(plan, result), 0)
        for out in outputs:
            if out.kind in RESULT_FILES:
                client.log_artifact(self.run_id, str(store.path_of(out.stored.location)),
                                    RESULT_FILES[out.kind] or None)
        if genotype is not None and plan.kind is JobKind.RETRAIN:
            client.log_dict(self.run_id, genotype, "genotype.json")
        with tempfile.TemporaryDirectory(prefix="thrifty-mlflow-") as folder:
            for name, data in pictures(plan, result.history, genotype).items():
                (Path(folder) / name).write_bytes(data)
            client.log_artifacts(self.run_id, folder, "plots")
        if plan.kind is JobKind.RETRAIN and any(out.kind is ArtifactKind.BUNDLE for out in outputs):
            self._register(client, plan, result)

    def _register(self, client: Any, plan: JobPlan, result: Any) -> None:
        name = model_name(plan)
        try:
            client.create_registered_model(name, tags={"thrifty.dataset": plan.dataset_name,
                                                       "thrifty.dataset_id": plan.dataset_id},
                                           description=f"Thrifty NAS models of dataset {plan.dataset_name!r}")
        except Exception:  # it exists already (another job made it); if not, this raises
            client.get_registered_model(name)
        best, test = result.metrics.get("best") or {}, result.metrics.get("test") or {}
        tags = {"dsc": best.get("mean_dsc"), "test_dsc": test.get("mean_dsc"), "params": result.metrics.get("params"),
                "architecture": result.metrics.get("architecture"), JOB_TAG: self.job_id,
                "thrifty.user_id": plan.owner_id}
        version = client.create_model_version(
            name, source=f"{self.artifact_uri}/{MODEL_DIR}", run_id=self.run_id,
            tags={key: str(value) for key, value in tags.items() if value is not None},
            description=f"bundle.zip of retrain job {self.job_id}", await_creation_for=0)
        log.info("job %s: its bundle is version %s of MLflow model %s", self.job_id, version.version, name)

    def end(self, outcome: str | None) -> None:
        """Close the run as the job ended: FINISHED, FAILED, else KILLED (cancelled, lost, handed back, an error)."""
        if self.run_id is None:
            return
        status = END_STATUS.get(outcome or "", "KILLED")
        self._guarded("ending the run", lambda client: client.set_terminated(self.run_id, status))
        self.run_id = None


def _experiment_id(client: Any, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # another worker created it meanwhile; if not, this raises
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def _log_params(client: Any, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(key, value) for key, value in params.items()]
    for start in range(0, len(items), PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[start:start + PARAMS_PER_BATCH])


def _log_metrics(client: Any, run_id: str | None, metrics: dict[str, float], step: int) -> None:
    from mlflow.entities import Metric

    if metrics and run_id is not None:
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(key, value, now, step) for key, value in metrics.items()])
