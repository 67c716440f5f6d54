"""Where a job's log lines live in the artefact store, and reading them back (API and worker)."""

from __future__ import annotations

from pathlib import Path

from store.artifacts import ArtifactStore

LOG_NAME = "job.log"


def log_path(store: ArtifactStore, job_id: str) -> Path:
    return store.job_dir(job_id) / LOG_NAME


def read_lines(path: Path, since: int = 0, tail: int | None = None) -> tuple[list[str], int]:
    """Lines after the first ``since`` (or the last ``tail``) and the file's line count."""
    if not path.is_file():
        return [], 0
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    chosen = lines[since:] if tail is None else lines[max(len(lines) - tail, since):]
    return chosen, len(lines)
