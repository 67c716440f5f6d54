"""`thrifty-nas` service commands: keys create, worker's argument checks, and `up` end to end.

`up` runs as a real process in the embedded mode (SQLite + filesystem broker under a temp
home, a worker child process, uvicorn): it serves a search to completion and stops
cleanly on Ctrl-C (SIGINT), taking its worker with it. No Redis or PostgreSQL needed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from cli.main import app
from nas_core.data import make_phantom_dataset
from store.db import get_engine, get_sessionmaker, make_engine, make_sessionmaker, session_scope
from store.settings import DEFAULT_API_KEY_PEPPER, get_settings
from store.users import authenticate
from tests.integration.conftest import ROOT, wait_for

pytestmark = pytest.mark.integration

SEARCH = {"epochs": 2, "warmup_epochs": 1, "image_size": 32, "batch_size": 2, "channels": 8, "k": 2, "depth": 3}


@pytest.fixture
def embedded_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No THRIFTY_* but a temp home, in this process and its children; caches reset around the test."""
    for name in [k for k in os.environ if k.startswith("THRIFTY_")]:
        monkeypatch.delenv(name)
    home = tmp_path / "home"
    monkeypatch.setenv("THRIFTY_HOME", str(home))
    for cached in (get_settings, get_engine, get_sessionmaker):
        cached.cache_clear()
    yield home
    for cached in (get_settings, get_engine, get_sessionmaker):
        cached.cache_clear()


def test_keys_create_prints_a_working_key_once_and_refuses_a_taken_name(embedded_home):
    runner = CliRunner()
    first = runner.invoke(app, ["keys", "create", "alice", "--home", str(embedded_home)])
    assert first.exit_code == 0, first.output
    key = first.stdout.strip().splitlines()[-1]
    assert key.startswith("tnas_") and "shown only this once" in first.stderr
    engine = make_engine(f"sqlite:///{embedded_home / 'thrifty.db'}")
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            assert authenticate(session, key, pepper=DEFAULT_API_KEY_PEPPER).name == "alice"
    finally:
        engine.dispose()
    again = runner.invoke(app, ["keys", "create", "alice", "--home", str(embedded_home)])
    assert again.exit_code == 2 and "user 'alice' already exists" in again.stderr


def test_keys_list_and_revoke(embedded_home):
    runner = CliRunner()
    home = ["--home", str(embedded_home)]
    key = runner.invoke(app, ["keys", "create", "carol", *home]).stdout.strip().splitlines()[-1]
    listed = runner.invoke(app, ["keys", "list", "carol", *home])
    assert listed.exit_code == 0 and "active" in listed.stdout and key not in listed.stdout
    key_id = listed.stdout.split()[0]
    revoked = runner.invoke(app, ["keys", "revoke", key_id, *home])
    assert revoked.exit_code == 0, revoked.output
    engine = make_engine(f"sqlite:///{embedded_home / 'thrifty.db'}")
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            assert authenticate(session, key, pepper=DEFAULT_API_KEY_PEPPER) is None
    finally:
        engine.dispose()
    assert "revoked" in runner.invoke(app, ["keys", "list", "carol", *home]).stdout
    again = runner.invoke(app, ["keys", "revoke", key_id, *home])
    assert again.exit_code == 2 and "no active key" in again.stderr
    missing = runner.invoke(app, ["keys", "list", "nobody", *home])
    assert missing.exit_code == 2 and "no user 'nobody'" in missing.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--gpus", "0,x"], "give distinct GPU indices separated by commas"),
    (["--gpus", "1,1"], "give distinct GPU indices separated by commas"),
    (["--queues", "gpu,cpu"], "unknown queue(s) ['cpu']"),
])
def test_worker_refuses_bad_arguments_with_a_clear_message(embedded_home, args, message):
    result = CliRunner().invoke(app, ["worker", *args, "--home", str(embedded_home)])
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    """Running (a zombie that an init without reaping keeps in the table counts as gone)."""
    try:
        os.kill(pid, 0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (ProcessLookupError, FileNotFoundError):
        return False
    return state != "Z"


def test_up_serves_a_search_and_stops_cleanly_on_ctrl_c(embedded_home, tmp_path):
    port = _free_port()
    make_phantom_dataset(embedded_home / "datasets" / "phantom", num_cases=6, image_size=32, depth=1,
                         num_classes=3, seed=0)
    log_path = tmp_path / "up.log"
    cli = [sys.executable, "-m", "cli.main"]
    with log_path.open("w") as log:
        up = subprocess.Popen([*cli, "up", "--home", str(embedded_home), "--port", str(port)], cwd=ROOT,
                              stdout=log, stderr=subprocess.STDOUT)
    tail = lambda: log_path.read_text()[-4000:]  # noqa: E731
    try:
        url = f"http://127.0.0.1:{port}"

        def serving() -> bool:
            assert up.poll() is None, tail()
            try:
                return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(serving, 90, "thrifty-nas up to serve", interval=0.5, on_timeout=tail)
        assert f"http://127.0.0.1:{port}" in log_path.read_text()
        assert f"thrifty-nas keys create NAME --home {embedded_home}" in log_path.read_text()
        key = subprocess.run([*cli, "keys", "create", "bob", "--home", str(embedded_home)], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.strip()
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
            dataset = client.post("/v1/datasets", json={"name": "phantom", "path": "phantom"})
            assert dataset.status_code == 201, dataset.text
            job = client.post("/v1/searches", json={"dataset_id": dataset.json()["id"], "config": SEARCH})
            assert job.status_code == 202, job.text
            done = wait_for(lambda: (j := client.get(f"/v1/jobs/{job.json()['id']}").json())["status"]
                            in ("succeeded", "failed") and j, 120, "the search to finish", interval=0.5,
                            on_timeout=tail)
        assert done["status"] == "succeeded", done["error"]

        workers = _children(up.pid)
        assert workers, "up started no worker process"
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=60) == 0, tail()
        assert not [pid for pid in workers if _alive(pid)]
        assert "stopped" in log_path.read_text()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        for pid in _children(up.pid):
            os.kill(pid, signal.SIGKILL)


def _start_up(home: Path, tmp_path: Path) -> tuple[subprocess.Popen, Callable[[], str]]:
    port = _free_port()
    log_path = tmp_path / "up.log"
    with log_path.open("w") as log:
        up = subprocess.Popen([sys.executable, "-m", "cli.main", "up", "--home", str(home), "--port", str(port)],
                              cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    tail = lambda: log_path.read_text()[-4000:]  # noqa: E731

    def ready() -> bool:
        assert up.poll() is None, tail()
        if not _children(up.pid):
            return False
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(ready, 90, "thrifty-nas up to serve", interval=0.5, on_timeout=tail)
    return up, tail


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_up_stops_its_worker_on_sigterm_and_sighup(embedded_home, tmp_path, signum):
    """systemd, Docker and kill send SIGTERM: uvicorn re-raised it and the worker was left behind."""
    up, tail = _start_up(embedded_home, tmp_path)
    workers = _children(up.pid)
    try:
        up.send_signal(signum)
        up.wait(timeout=60)
        wait_for(lambda: not [pid for pid in workers if _alive(pid)], 30, "the worker to stop", on_timeout=tail)
        assert "stopped" in tail()
    finally:
        for pid in [up.pid, *workers]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_worker_whose_up_vanished_stops_by_itself(embedded_home, tmp_path):
    up, tail = _start_up(embedded_home, tmp_path)
    workers = _children(up.pid)
    try:
        up.kill()  # no cleanup can run
        up.wait()
        wait_for(lambda: not [pid for pid in workers if _alive(pid)], 30, "the orphaned worker to stop",
                 on_timeout=tail)
    finally:
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
