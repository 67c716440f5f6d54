"""The code's own checks, run with the tests so CI enforces them: ruff (style, imports,
the configured line length) on the whole project, mypy on ``nas_core`` and ``store``
(settings in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing_and_lines_keep_the_configured_length():
    done = _run("ruff", "check", "--no-cache", ".")
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]


@pytest.mark.slow
def test_mypy_finds_no_type_errors_in_nas_core_and_store():
    done = _run("mypy", "nas_core", "store")
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
    assert "Success: no issues found" in done.stdout, done.stdout
