"""The ``thrifty-nas`` client commands through their real entry point, against the real service.

Each command runs as a subprocess configured by ``THRIFTY_URL`` and ``THRIFTY_API_KEY`` only;
the server is uvicorn with a Celery worker, Redis and PostgreSQL. The tests run in file order
and share one dataset and one tiny search (module fixtures).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from store.db import session_scope
from store.users import create_user_with_key
from tests.integration.conftest import PEPPER, ApiServer, Services

pytestmark = pytest.mark.integration

EXE = shutil.which("thrifty-nas", path=str(Path(sys.executable).parent)) or "thrifty-nas"
TINY_SEARCH = ["--epochs", "2", "--warmup-epochs", "1", "--image-size", "32", "--batch-size", "2", "--channels", "8",
               "--k", "2", "--depth", "3"]
TINY_RETRAIN = ["--epochs", "2", "--image-size", "32", "--batch-size", "2"]


class Cli:
    """Runs ``thrifty-nas ARGS`` with only THRIFTY_URL and THRIFTY_API_KEY set (no server settings)."""

    def __init__(self, url: str, key: str | None) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith("THRIFTY_")}
        self.env = {**base, "THRIFTY_URL": url, "COLUMNS": "200", **({"THRIFTY_API_KEY": key} if key else {})}

    def __call__(self, *args: str, code: int | None = 0, timeout: float = 180) -> subprocess.CompletedProcess:
        proc = subprocess.run([EXE, *args], capture_output=True, text=True, env=self.env, timeout=timeout)
        if code is not None:
            assert proc.returncode == code, f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        assert "Traceback" not in proc.stdout + proc.stderr
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)


def words(proc: subprocess.CompletedProcess) -> str:
    return " ".join((proc.stdout + proc.stderr).split())


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def cli(api_server: ApiServer, services: Services) -> Cli:
    with session_scope(services.sessions) as session:
        _, key = create_user_with_key(session, f"cli-{uuid.uuid4().hex[:8]}", pepper=PEPPER)
    return Cli(api_server.url, key)


@pytest.fixture(scope="module")
def dataset_id(cli: Cli, phantom_dataset: Path) -> str:
    return cli.json("datasets", "add", "phantom", phantom_dataset.name, "--format", "nnunet")["id"]


@pytest.fixture(scope="module")
def search_id(cli: Cli, dataset_id: str, celery_worker: Any) -> str:
    """A tiny search submitted and watched to the end with the CLI."""
    job = cli.json("submit", "search", "--dataset", dataset_id, *TINY_SEARCH)
    assert (job["kind"], job["status"], job["config"]["depth"]) == ("search", "queued", 3)
    watched = cli("jobs", "watch", job["id"], "--interval", "0.3", code=None)
    assert watched.returncode == 0, f"{watched.stdout}\n{watched.stderr}\n{celery_worker.tail()}"
    assert f"search job {job['id']} succeeded" in words(watched)
    assert f"thrifty-nas download {job['id']}" in words(watched)
    return job["id"]


# -- datasets -------------------------------------------------------------------------------------


def test_datasets_add_list_show_upload(cli, dataset_id, phantom_dataset, tmp_path):
    listed = cli("datasets", "list").stdout
    assert dataset_id in listed and "phantom" in listed and "synthetic" in listed
    assert [d["id"] for d in cli.json("datasets", "list")] == [dataset_id]
    shown = cli("datasets", "show", dataset_id).stdout
    assert "nnunet" in shown and "ok, 0 issue(s)" in shown
    assert cli.json("datasets", "show", dataset_id)["report"]["ok"] is True
    archive = tmp_path / "ph.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(phantom_dataset, arcname="phantom")
    uploaded = cli.json("datasets", "upload", "uploaded", str(archive))
    assert (uploaded["name"], uploaded["status"], uploaded["num_cases"]) == ("uploaded", "ready", 6)


# -- bad input: a clear message, a non-zero exit, no traceback -------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_bad_inputs_give_the_servers_message(cli, dataset_id, api_server):
    proc = cli("datasets", "show", "ds_nope", code=2)
    assert "dataset 'ds_nope' not found" in proc.stderr
    as_json = cli("jobs", "show", "job_nope", "--json", code=2)
    assert json.loads(as_json.stdout)["error"]["code"] == "not_found"
    invalid = words(cli("submit", "search", "--dataset", dataset_id, "--epochs", "0", code=2))
    assert "config.epochs" in invalid and "422" in invalid
    anonymous = Cli(api_server.url, None)("datasets", "list", code=2)  # no key: the server's 401 and a hint
    assert "missing API key" in anonymous.stderr and "401" in anonymous.stderr and "THRIFTY_API_KEY" in anonymous.stderr
    down = words(Cli(f"http://127.0.0.1:{_free_port()}", "tn_whatever")("jobs", "list", code=1))
    assert "cannot reach the Thrifty NAS server at http://127.0.0.1:" in down and "`thrifty-nas up` running?" in down
    assert "exactly one of --genotype-id" in words(cli("submit", "retrain", "--dataset", dataset_id, code=2))


# -- a search end to end ---------------------------------------------------------------------------


def test_jobs_list_show_and_genotype(cli, search_id):
    table = cli("jobs", "list").stdout
    assert search_id in table and "succeeded" in table and "100%" in table
    assert [j["id"] for j in cli.json("jobs", "list", "--kind", "search", "--status", "succeeded")] == [search_id]
    assert cli.json("jobs", "list", "--status", "queued", "--status", "running") == []
    job = cli.json("jobs", "show", search_id)
    assert (job["status"], job["epoch"], job["progress"]) == ("succeeded", 2, 1.0)
    lines = cli("jobs", "watch", search_id, "--json").stdout.splitlines()
    assert [json.loads(line)["status"] for line in lines] == ["succeeded"]
    genotype = cli.json("genotypes", "show", "--job", search_id)
    assert genotype["job_id"] == search_id and genotype["genotype"]["C"] == 8
    table = cli("genotypes", "show", genotype["id"]).stdout
    assert genotype["id"] in table and f"search job {search_id}" in table
    edges = [line.split() for line in table.splitlines() if " dn " in line or " up " in line]
    assert len(edges) == 2 * 2 * 2  # two cell types, two nodes, two inputs each
    metrics = cli("jobs", "metrics", search_id).stdout
    assert "arch DSC" in metrics


def test_download_resumes_and_checks_sha256(cli, search_id, tmp_path):
    listed = {a["name"]: a for a in cli.json("jobs", "artifacts", search_id)}
    assert {"genotype.json", "alphas.jsonl", "last.pt", "summary.json"} <= set(listed)
    got = cli.json("download", search_id, "--out", str(tmp_path / "a"))  # no NAME: a search's last.pt
    path = Path(got["path"])
    assert (path.name, got["sha256"], sha(path)) == ("last.pt", listed["last.pt"]["sha256"], listed["last.pt"]["sha256"])
    data = path.read_bytes()

    out = tmp_path / "b"
    out.mkdir()
    (out / "last.pt.part").write_bytes(data[: len(data) // 2])  # an interrupted download
    proc = cli("download", search_id, "last.pt", "--out", str(out))
    assert f"resuming last.pt from byte {len(data) // 2:,} of {len(data):,}" in words(proc)
    assert "verified" in proc.stdout and sha(out / "last.pt") == listed["last.pt"]["sha256"]
    assert not (out / "last.pt.part").exists()

    (out / "last.pt").unlink()
    (out / "last.pt.part").write_bytes(b"\x00" * (len(data) // 2))  # a corrupt partial file
    proc = cli("download", search_id, "last.pt", "--out", str(out))
    assert "did not match the server's sha256; downloading it again from the start" in words(proc)
    assert sha(out / "last.pt") == listed["last.pt"]["sha256"]


def test_retrain_the_search_then_download_best(cli, dataset_id, search_id, tmp_path):
    lines = cli("submit", "retrain", "--dataset", dataset_id, "--search-job", search_id, *TINY_RETRAIN,
                "--watch", "--interval", "0.3", "--json").stdout.splitlines()
    retrain = json.loads(lines[-1])  # --watch --json: one line per change, the last one final
    assert retrain["architecture"]["search_job_id"] == search_id and retrain["status"] == "succeeded"
    got = cli.json("download", retrain["id"], "--out", str(tmp_path))
    assert Path(got["path"]).name == "best.pt" and sha(Path(got["path"])) == got["sha256"]
    assert "per-case Dice" in cli("jobs", "metrics", retrain["id"]).stdout


def test_cancel_a_search_and_watch_it_end(cli, dataset_id, search_id):
    job = cli.json("submit", "search", "--dataset", dataset_id, *TINY_SEARCH, "--epochs", "200")
    assert f"job {job['id']}" in cli("jobs", "cancel", job["id"]).stdout
    watched = cli("jobs", "watch", job["id"], "--interval", "0.3", code=1)
    assert f"search job {job['id']} cancelled" in words(watched)
    again = cli("jobs", "cancel", job["id"], code=2)
    assert "already cancelled" in words(again) and "409" in again.stderr
