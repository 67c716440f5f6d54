"""The artefact store: job files under ``artifact_dir/<job_id>/<name>``, and their rows.

Files are written atomically (a temp file in the same folder, fsync, ``os.replace``,
fsync of the folder): a reader sees the old file or the new one, never half of one.
Names are single path components: ``/``, ``\\``, ``..`` and leading dots are refused.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from nas_core.io import atomic_write
from store.models import Artifact, ArtifactKind
from store.types import new_id, utcnow
from store.upsert import upsert

CHUNK = 1024 * 1024
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+@=-]{0,254}$")


class StoredArtifact(NamedTuple):
    location: str  # "<job_id>/<name>", relative to the store's root
    size: int
    sha256: str


def _check_name(value: str, what: str) -> str:
    if not _SAFE_NAME.match(value) or ".." in value:
        raise ValueError(
            f"{what} {value!r} is not a safe file name: use letters, digits and _ . + @ = -, "
            f"no '/', no '..', not starting with '.'"
        )
    return value


class ArtifactStore:
    """Files of jobs under ``root`` (the settings' ``artifact_dir``)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _target(self, job_id: str, name: str) -> tuple[str, Path]:
        location = f"{_check_name(job_id, 'job id')}/{_check_name(name, 'artifact name')}"
        return location, self.root / job_id / name

    def _write(self, job_id: str, name: str, kind: ArtifactKind | str, chunks: Iterable[bytes]) -> StoredArtifact:
        ArtifactKind(kind)
        location, target = self._target(job_id, name)
        digest = hashlib.sha256()
        size = 0

        def write(out: BinaryIO) -> None:
            nonlocal size
            for chunk in chunks:
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)

        atomic_write(target, write)
        return StoredArtifact(location, size, digest.hexdigest())

    def put_file(self, job_id: str, name: str, src_path: Path | str, kind: ArtifactKind | str) -> StoredArtifact:
        """Copy ``src_path`` in as ``<job_id>/<name>``; return (location, size, sha256)."""
        with open(src_path, "rb") as src:
            return self.put_stream(job_id, name, src, kind)

    def put_stream(self, job_id: str, name: str, src: BinaryIO, kind: ArtifactKind | str) -> StoredArtifact:
        return self._write(job_id, name, kind, iter(lambda: src.read(CHUNK), b""))

    def put_bytes(self, job_id: str, name: str, data: bytes, kind: ArtifactKind | str) -> StoredArtifact:
        return self._write(job_id, name, kind, [data])

    def path_of(self, location: str) -> Path:
        """The file of a stored ``location``; ValueError if it points outside the store."""
        parts = location.split("/")
        if len(parts) != 2:
            raise ValueError(f"artifact location {location!r} is not '<job_id>/<name>'")
        return self._target(*parts)[1]

    def job_dir(self, job_id: str) -> Path:
        return self.root / _check_name(job_id, "job id")


def work_dir(artifact_dir: Path, job_id: str) -> Path:
    """A running job's work folder (``{artifact_dir}/work/{job_id}``): on the shared volume, so any
    worker can resume it."""
    return Path(artifact_dir) / "work" / _check_name(job_id, "job id")


def register_artifact(
    session: Session,
    *,
    job_id: str,
    owner_id: str,
    name: str,
    kind: ArtifactKind | str,
    stored: StoredArtifact,
) -> Artifact:
    """Insert or update the row of a stored file (one row per job and name)."""
    row = {
        "id": new_id("art"),
        "job_id": job_id,
        "owner_id": owner_id,
        "name": name,
        "kind": ArtifactKind(kind).value,
        "size": stored.size,
        "sha256": stored.sha256,
        "location": stored.location,
        "created_at": utcnow(),
    }
    upsert(
        session,
        Artifact.__table__,
        [row],
        conflict=("job_id", "name"),
        update=("kind", "size", "sha256", "location", "created_at"),
    )
    stmt = select(Artifact).where(Artifact.job_id == job_id, Artifact.name == name)
    return session.scalars(stmt.execution_options(populate_existing=True)).one()


def list_artifacts(session: Session, job_id: str) -> list[Artifact]:
    return list(session.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.name)))


def get_artifact(session: Session, job_id: str, name: str) -> Artifact | None:
    stmt = select(Artifact).where(Artifact.job_id == job_id, Artifact.name == name)
    return session.scalars(stmt).one_or_none()
