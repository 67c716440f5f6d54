"""The image check CI runs, since no container engine runs there: ``scripts/check-image.sh``.

It reproduces the image's file tree from the Dockerfile's COPY lines, installs it NOT editable
in a fresh venv as the Dockerfile does, and runs what the image runs from outside the checkout:
``thrifty-nas --version``, ``migrate`` on a new empty PostgreSQL database, ``keys create``, the
API and one worker, one tiny search whose genotype is downloaded. A few minutes, most of it pip.
The fast checks of its COPY parsing are in tests/cli/test_packaging.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy.engine import make_url

from tests.integration.conftest import PG_URL, REDIS_BASE, _unavailable

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "check-image.sh"
TIMEOUT_S = 1500  # pip installs torch and the dependencies from scratch: minutes on 2 busy cores

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _script_env() -> dict[str, str]:
    """This process's environment without THRIFTY_*, plus where PostgreSQL and Redis are (as conftest's)."""
    pg, redis = make_url(PG_URL), urlsplit(REDIS_BASE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("THRIFTY_")}
    env.update(THRIFTY_TEST_PG_HOST=pg.host or "127.0.0.1", THRIFTY_TEST_PG_PORT=str(pg.port or 5432),
               THRIFTY_TEST_PG_USER=pg.username or "postgres",
               THRIFTY_TEST_REDIS_HOST=redis.hostname or "127.0.0.1",
               THRIFTY_TEST_REDIS_PORT=str(redis.port or 6379))
    return env


def _require_services(env: dict[str, str]) -> None:
    """PostgreSQL, Redis, their clients and the image's Python: skipped without them, failed in CI."""
    for tool in ("psql", "pg_isready", "redis-cli", "curl", "setsid", "pgrep"):
        if shutil.which(tool) is None:
            _unavailable(f"{tool} is not on PATH (scripts/check-image.sh needs it)")
    python = re.search(r"^FROM\s+python:(\d+\.\d+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    if python and shutil.which(f"python{python[1]}") is None:
        _unavailable(f"python{python[1]} (the image's Python) is not on PATH")
    pg = subprocess.run(["pg_isready", "-h", env["THRIFTY_TEST_PG_HOST"], "-p", env["THRIFTY_TEST_PG_PORT"]],
                        capture_output=True, text=True, timeout=30)
    if pg.returncode != 0:
        _unavailable(f"PostgreSQL is unreachable: {pg.stdout.strip()}")
    ping = ["redis-cli", "-h", env["THRIFTY_TEST_REDIS_HOST"], "-p", env["THRIFTY_TEST_REDIS_PORT"], "PING"]
    redis = subprocess.run(ping, capture_output=True, text=True, timeout=30)
    if redis.stdout.strip() != "PONG":
        _unavailable(f"Redis is unreachable: {(redis.stdout + redis.stderr).strip()}")


@pytest.mark.timeout(TIMEOUT_S + 120)
def test_the_image_check_passes(tmp_path: Path) -> None:
    env = _script_env()
    _require_services(env)
    env["TMPDIR"] = str(tmp_path)  # its temp folder (venv and all) goes with the test's
    try:
        result = subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"scripts/check-image.sh ran over {TIMEOUT_S}s\n{exc.stderr or ''}")
    report = f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr[-8000:]}"
    assert result.returncode == 0, report
    assert re.search(r"^check-image: PASS \(Dockerfile file tree, non-editable install", result.stdout,
                     re.MULTILINE), report
    assert "FAIL" not in result.stdout, report
    # what the check proved, in its own words: installed copies, not the checkout, answered
    assert re.search(r"nas_core: \S+/site-packages/nas_core/__init__\.py", result.stderr), report
    assert "succeeded" in result.stderr and "genotype.json:" in result.stderr, report
