"""The dispatch contract on the real Redis: what the API sees of the queue."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from kombu.exceptions import OperationalError

from store.settings import get_settings
from tests.integration.conftest import Services
from worker.app import get_app
from worker.dispatch import broker_reachable, enqueue_job, pending_job_ids, queue_depth

pytestmark = pytest.mark.integration


@pytest.fixture
def gpu_queue(thrifty_env: Services) -> Iterator[redis.Redis]:
    """The session's Redis database with an empty ``gpu`` list (emptied again afterwards)."""
    client = redis.Redis.from_url(thrifty_env.broker_url)
    client.delete("gpu")
    yield client
    client.delete("gpu")
    client.close()


def test_enqueue_puts_one_message_per_job_on_the_gpu_list(gpu_queue):
    assert broker_reachable() is True
    assert queue_depth() == 0 and pending_job_ids() == set()
    enqueue_job("job_one", "search")
    enqueue_job("job_two", "retrain")
    assert queue_depth() == gpu_queue.llen("gpu") == 2
    assert pending_job_ids() == {"job_one", "job_two"}


def test_a_down_broker_is_reported_fast_and_a_send_raises(gpu_queue, monkeypatch):
    monkeypatch.setenv("THRIFTY_BROKER_URL", "redis://127.0.0.1:1/0")  # nothing listens on port 1
    get_settings.cache_clear()
    get_app.cache_clear()
    try:
        started = time.monotonic()
        assert broker_reachable(timeout=0.5) is False
        assert queue_depth() is None and pending_job_ids() is None
        with pytest.raises(OperationalError):
            enqueue_job("job_three", "search")
        assert time.monotonic() - started < 15  # bounded retries: an API request is not held for long
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
        get_app.cache_clear()
    assert queue_depth() == 0
