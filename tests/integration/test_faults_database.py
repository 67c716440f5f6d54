"""PostgreSQL unreachable: the API answers 503 and recovers by itself; a running job survives.

The API server and the worker reach the test database through a :class:`TcpProxy` of this
module (``127.0.0.1:<free port>`` -> the real server); stopping it refuses new connections
and cuts the open ones with a reset, as when the database host goes away. The shared
PostgreSQL server itself is never touched.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from store.db import session_scope
from store.history import list_alpha_snapshots
from tests.integration.conftest import LEASE_SECONDS, Services, wait_for
from tests.integration.faults_support import (
    SEARCH,
    Processes,
    TcpProxy,
    add_job,
    job_row,
    new_dataset,
    new_user,
    processes,
    wait_finished,
)
from worker.dispatch import enqueue_job

pytestmark = pytest.mark.integration

OUTAGE_S = 3 * LEASE_SECONDS + 1  # longer than a lease: every lease expires meanwhile


@pytest.fixture(scope="module")
def proxy(thrifty_env: Services) -> Iterator[TcpProxy]:
    url = make_url(thrifty_env.database_url)
    tunnel = TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
    try:
        yield tunnel
    finally:
        tunnel.stop()


@pytest.fixture(scope="module")
def procs(thrifty_env: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    with processes(thrifty_env, tmp_path_factory) as started:
        yield started


def _get(client: httpx.Client, path: str) -> httpx.Response:
    return client.get(path, timeout=15)


def test_the_api_answers_503_while_the_database_is_unreachable_and_recovers_by_itself(
        thrifty_env: Services, proxy: TcpProxy, procs: Processes):
    api = procs.api(THRIFTY_DATABASE_URL=proxy.url_for(thrifty_env.database_url))
    user = new_user(thrifty_env.sessions)
    with api.client(headers=user.headers) as client:
        assert _get(client, "/v1/jobs").status_code == 200  # pooled connections now exist
        assert _get(client, "/readyz").status_code == 200

        proxy.stop()
        try:
            t0 = time.monotonic()
            down = _get(client, "/v1/jobs")
            assert time.monotonic() - t0 < 10, "a request waited long for the lost database"
            assert down.status_code == 503, down.text
            error = down.json()["error"]
            assert error["code"] == "database_unavailable" and "database unavailable" in error["message"], error
            assert down.headers["retry-after"].isdigit()
            ready = _get(client, "/readyz")
            assert ready.status_code == 503, ready.text
            body = ready.json()["error"]
            assert body["code"] == "not_ready" and "database" in body["message"], body
            assert body["details"]["checks"]["database"].startswith("unreachable"), body
            assert body["details"]["checks"]["broker"] == "ok", body
            assert _get(client, "/healthz").status_code == 200  # alive: a restart would not help
        finally:
            proxy.start()

        # back without restarting the API (the pool drops its dead connections)
        wait_for(lambda: _get(client, "/v1/jobs").status_code == 200, 30, "the API to serve again",
                 on_timeout=api.tail)
        assert _get(client, "/readyz").status_code == 200
    assert api.process.poll() is None


def test_a_running_job_survives_a_database_outage_without_failing_or_losing_an_attempt(
        thrifty_env: Services, proxy: TcpProxy, procs: Processes, phantom_dataset: Path):
    sessions = thrifty_env.sessions
    worker = procs.worker("faults-db", THRIFTY_DATABASE_URL=proxy.url_for(thrifty_env.database_url))
    user = new_user(sessions)
    job_id = add_job(sessions, user.user_id, new_dataset(sessions, user.user_id, phantom_dataset), "search", SEARCH)
    enqueue_job(job_id, "search")

    wait_for(lambda: job_row(sessions, job_id).epoch >= 1, 120, "the job's first epoch", interval=0.1,
             on_timeout=worker.tail)
    proxy.stop()  # progress writes, lease renewals, the reaper and possibly the final report now fail
    try:
        time.sleep(OUTAGE_S)
    finally:
        proxy.start()

    job = wait_finished(sessions, [job_id], 120, worker)[0]
    log = worker.log()
    assert job.status == "succeeded", f"{job.error}\n{worker.tail()}"
    assert job.attempt == 1, f"the outage cost an attempt\n{worker.tail(60)}"  # no lease was reaped for it
    assert not re.search(r"reaper requeued \d+ job", log), worker.tail(60)
    assert "OperationalError" in log, "the worker never noticed the outage"
    with session_scope(sessions) as session:  # epochs whose write failed were recorded at the end
        epochs = sorted({s.epoch for s in list_alpha_snapshots(session, job_id)})
    assert epochs == [0, 1, 2]
    assert worker.process.poll() is None

