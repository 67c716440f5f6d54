"""The dashboard in a real headless Chromium (Selenium) against a real uvicorn server and PostgreSQL.

Signs in through the form, reads the job list and a finished search's page as a person
would (status, Dice table, file links), checks that every plot ``<img>`` really loaded,
cancels a running job with its button and watches the page refresh to "cancelled".
Screenshots go to the test's ``tmp_path``.

Needs Debian's chromium and chromium-driver (``scripts/install-browser.sh``): without
``/usr/bin/chromedriver`` the test is skipped, unless ``CI=true``: then it fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from store.datasets import create_dataset
from store.db import session_scope
from store.jobs import create_job, finish_job
from store.models import JobStatus
from store.types import utcnow
from tests.integration.conftest import ApiServer, ApiUser, Services
from tests.web.support import CASE_DSC, seed_finished_search

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1280,2200", "--force-device-scale-factor=1",
)
WAIT_S = 30
RUNNING_WORKER = "browser-test-worker"


def _required(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the browser test is required; run scripts/install-browser.sh)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A headless Chromium driven by Debian's chromedriver, with a fresh profile."""
    if not (CHROMEDRIVER.exists() and CHROMIUM.exists()):
        _required(f"{CHROMEDRIVER} or {CHROMIUM} is missing: run scripts/install-browser.sh")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        _required(f"selenium is not installed ({exc}): pip install -e '.[dev]'")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    browser.set_page_load_timeout(WAIT_S)
    try:
        yield browser
    finally:
        browser.quit()


def _wait(driver: Any, condition: Callable[[Any], Any], what: str) -> Any:
    """``condition(driver)`` once truthy; a page mid-reload (element gone or stale) is polled again."""
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
        TimeoutException,
        WebDriverException,
    )
    from selenium.webdriver.support.ui import WebDriverWait

    waiting = WebDriverWait(driver, WAIT_S, poll_frequency=0.25,
                            # the live pages reload themselves: an element may vanish mid-read
                            ignored_exceptions=(NoSuchElementException, StaleElementReferenceException,
                                                WebDriverException))
    try:
        return waiting.until(condition)
    except TimeoutException:
        pytest.fail(f"timed out after {WAIT_S}s waiting for {what}; the page says:\n{driver.page_source[:3000]}")


def _text(driver: Any, selector: str) -> str:
    """An element's visible text read in one script call (no element handle to go stale on a reload)."""
    return driver.execute_script("const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
                                 selector)


def _seed(services: Services, user: ApiUser) -> tuple[str, str]:
    """A finished search (history, Dice, files) and a running one; returns their ids."""
    with session_scope(services.sessions) as session:
        dataset = create_dataset(session, owner_id=user.user_id, name=f"phantom-{uuid.uuid4().hex[:6]}",
                                 path=str(services.data_root / "phantom"), format="nnunet", num_cases=3,
                                 num_classes=3, labels={"0": "background", "1": "organ_1", "2": "organ_2"},
                                 synthetic=True, report={"ok": True, "num_cases": 3, "issues": []})
        dataset_id = dataset.id
    finished = seed_finished_search(services.sessions, services.artifact_dir, user.user_id, dataset_id)
    with session_scope(services.sessions) as session:
        running = create_job(session, owner_id=user.user_id, kind="search", dataset_id=dataset_id,
                             config={"nodes": 2, "epochs": 30}, epochs=30).job
        running.status, running.worker_id, running.attempt = JobStatus.RUNNING.value, RUNNING_WORKER, 1
        running.epoch, running.progress, running.eta_seconds = 4, 0.14, 250.0
        running.started_at, running.lease_expires_at = utcnow(), utcnow() + timedelta(hours=1)
        running_id = running.id
    return finished.job_id, running_id


def test_sign_in_read_a_finished_job_and_cancel_a_running_one(
    driver, api_server: ApiServer, api_user: ApiUser, services: Services, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    finished_id, running_id = _seed(services, api_user)
    base = api_server.url

    # Signed out: the job list sends the browser to the login form; sign in there.
    driver.get(f"{base}/")
    _wait(driver, lambda d: "/login" in d.current_url, "the redirect to /login")
    driver.save_screenshot(str(tmp_path / "1-login.png"))
    driver.find_element(By.NAME, "api_key").send_keys(api_user.key)
    driver.find_element(By.CSS_SELECTOR, "form.stack button[type=submit]").click()
    _wait(driver, lambda d: d.current_url.rstrip("/") == base, "the job list after signing in")
    assert "thrifty_key" not in driver.execute_script("return document.cookie")  # HttpOnly

    # The job list: both jobs, their status and progress.
    rows = {row.get_attribute("id"): row.text for row in driver.find_elements(By.CSS_SELECTOR, "table.jobs tbody tr")}
    assert "SUCCEEDED" in rows[finished_id].upper() and "100%" in rows[finished_id]
    assert "RUNNING" in rows[running_id].upper() and "14%" in rows[running_id] and "4 / 30" in rows[running_id]
    assert "SYNTHETIC" in rows[finished_id]
    driver.save_screenshot(str(tmp_path / "2-jobs.png"))

    # The finished search: status, Dice per case, files, and every plot really drawn.
    driver.find_element(By.CSS_SELECTOR, f'a[href="/jobs/{finished_id}"]').click()
    _wait(driver, lambda d: d.current_url.endswith(f"/jobs/{finished_id}"), "the job page")
    assert driver.find_element(By.CSS_SELECTOR, "h1 .status").text.lower() == "succeeded"
    dice = driver.find_element(By.CSS_SELECTOR, "table.dice").text
    for case, _index, _name, value in CASE_DSC:
        assert case in dice and (value is None or f"{value:.3f}" in dice), (case, dice)
    links = {a.text: a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "#artifacts a")}
    assert links == {name: f"{base}/v1/jobs/{finished_id}/artifacts/{name}"
                     for name in ("genotype.json", "search_final.pt")}
    images = _wait(driver, lambda d: d.execute_script(
        "const imgs = Array.from(document.images);"
        "return imgs.every(i => i.complete) && imgs.map(i => [i.getAttribute('src'), i.naturalWidth]);"),
        "the plots to load")
    assert sorted(src for src, _ in images) == sorted(
        f"/v1/jobs/{finished_id}/plots/{name}.png" for name in ("alphas", "curves", "genotype"))
    assert all(width > 0 for _, width in images), f"a plot did not load: {images}"
    driver.save_screenshot(str(tmp_path / "3-finished-job.png"))

    # The running job: cancel with the button; the page shows the request, then (the worker
    # having stopped, played here by finish_job) refreshes itself to "cancelled".
    driver.get(f"{base}/jobs/{running_id}")
    _wait(driver, lambda d: "ETA" in _text(d, ".progress-line"), "the running job's ETA")
    _wait(driver, lambda d: d.find_element(By.ID, "cancel-job").click() or True, "the cancel button to click")
    _wait(driver, lambda d: "Cancel requested" in _text(d, "main"), "the cancel request to show")
    with session_scope(services.sessions) as session:
        assert finish_job(session, running_id, RUNNING_WORKER, JobStatus.CANCELLED)
    _wait(driver, lambda d: _text(d, "h1 .status").lower() == "cancelled", "the page to refresh to cancelled")
    assert not driver.find_elements(By.ID, "cancel-job")
    driver.save_screenshot(str(tmp_path / "4-cancelled.png"))
    print(f"screenshots: {tmp_path}")
