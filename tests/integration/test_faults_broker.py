"""The broker or the API restarted under running and queued jobs: every job still finishes.

The worker and the API server of this module use a ``redis-server`` of their own (a free
port, no persistence), so killing it loses every queued message, as a real crash of a
broker without persistence would; the shared Redis is never touched. Jobs are submitted
over HTTP.

* Redis killed while job 1 runs and jobs 2 and 3 wait in the queue, restarted a few
  seconds later, empty: the worker reconnects by itself, job 1 finishes, and the reaper
  (in the worker) re-sends the two queued jobs whose messages were lost, once they have
  been queued for ``stale_after`` (10 s here) with no message waiting.
* The API process SIGKILLed while a job runs and another waits, a new one started on the
  same port: both jobs are listed and finish; a submit retried with its Idempotency-Key
  returns the job made before the crash.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import ApiServer, Services, WorkerProcess, wait_for
from tests.integration.faults_support import (
    SEARCH,
    Processes,
    RedisServer,
    job_row,
    kill_api,
    new_user,
    processes,
    wait_finished,
)

pytestmark = pytest.mark.integration

TIMEOUT_S = 150.0
DOWN_S = 3.0


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def procs(thrifty_env: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    with processes(thrifty_env, tmp_path_factory) as started:
        yield started


@pytest.fixture(scope="module")
def stack(procs: Processes, redis_server: RedisServer) -> tuple[WorkerProcess, ApiServer]:
    worker = procs.worker("faults-broker", wait=False, THRIFTY_BROKER_URL=redis_server.url)
    api = procs.api(THRIFTY_BROKER_URL=redis_server.url)
    return worker.wait_ready(), api


def _ok(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, f"{response.request.url}: {response.status_code} {response.text}"
    return response.json()


def _submit(client: httpx.Client, dataset_id: str, **headers: str) -> str:
    return _ok(client.post("/v1/searches", json={"dataset_id": dataset_id, "config": SEARCH}, headers=headers),
               202)["id"]


def _dataset(client: httpx.Client, phantom: Path) -> str:
    return _ok(client.post("/v1/datasets", json={"name": "phantom", "path": phantom.name}), 201)["id"]


def test_jobs_queued_and_running_all_finish_when_redis_restarts_empty(
        thrifty_env: Services, stack: tuple[WorkerProcess, ApiServer], redis_server: RedisServer,
        phantom_dataset: Path):
    worker, api = stack
    sessions = thrifty_env.sessions
    user = new_user(sessions)
    with api.client(headers=user.headers) as client:
        dataset_id = _dataset(client, phantom_dataset)
        job_ids = [_submit(client, dataset_id) for _ in range(3)]

    wait_for(lambda: job_row(sessions, job_ids[0]).epoch >= 1, TIMEOUT_S, "job 1 to train", interval=0.1,
             on_timeout=worker.tail)
    assert [job_row(sessions, j).status for j in job_ids] == ["running", "queued", "queued"]
    assert redis_server.llen("gpu") == 2  # jobs 2 and 3 wait in the broker; job 1's message is the worker's

    redis_server.kill()
    time.sleep(DOWN_S)
    redis_server.start()
    assert redis_server.llen("gpu") == 0, "the restarted broker still has messages: no persistence was meant"

    jobs = wait_finished(sessions, job_ids, TIMEOUT_S, worker)
    log = worker.log()
    assert [(j.status, j.error, j.attempt) for j in jobs] == [("succeeded", None, 1)] * 3, worker.tail(60)
    resent = set(re.findall(r"reaper re-sends \d+ queued job\(s\) with no message waiting: (.*)", log))
    assert all(any(j in line for line in resent) for j in job_ids[1:]), worker.tail(60)
    assert worker.process.poll() is None


def test_nothing_is_lost_when_the_api_process_is_killed_and_restarted(
        thrifty_env: Services, procs: Processes, stack: tuple[WorkerProcess, ApiServer], redis_server: RedisServer,
        phantom_dataset: Path):
    worker, api = stack
    sessions = thrifty_env.sessions
    user = new_user(sessions)
    with api.client(headers=user.headers) as client:
        dataset_id = _dataset(client, phantom_dataset)
        first = _submit(client, dataset_id)
        second = _submit(client, dataset_id, **{"Idempotency-Key": "after-the-crash"})
    wait_for(lambda: job_row(sessions, first).status == "running", TIMEOUT_S, "the first job to run",
             interval=0.1, on_timeout=worker.tail)

    kill_api(api)  # SIGKILL: no shutdown hook runs
    port = int(api.url.rsplit(":", 1)[1])
    again = procs.api(port=port, THRIFTY_BROKER_URL=redis_server.url)
    with again.client(headers=user.headers) as client:
        listed = {job["id"]: job for job in _ok(client.get("/v1/jobs"), 200)["items"]}
        assert set(listed) == {first, second}
        assert listed[first]["status"] in ("running", "succeeded")
        replay = client.post("/v1/searches", json={"dataset_id": dataset_id, "config": SEARCH},
                             headers={"Idempotency-Key": "after-the-crash"})
        assert _ok(replay, 202)["id"] == second and replay.headers.get("idempotent-replayed") == "true"

        def both_done() -> list[dict[str, Any]] | None:
            jobs = [_ok(client.get(f"/v1/jobs/{job_id}"), 200) for job_id in (first, second)]
            return jobs if all(job["status"] in ("succeeded", "failed", "cancelled") for job in jobs) else None

        jobs = wait_for(both_done, TIMEOUT_S, "both jobs to finish", interval=0.5, on_timeout=worker.tail)
    assert [(job["status"], job["error"]) for job in jobs] == [("succeeded", None)] * 2
    assert len(_ok(httpx.get(f"{again.url}/v1/jobs", headers=user.headers), 200)["items"]) == 2
