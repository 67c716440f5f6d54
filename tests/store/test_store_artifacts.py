"""Artefact files are written atomically with their sha256; unsafe names are refused."""

import hashlib
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from store.artifacts import ArtifactStore, get_artifact, list_artifacts, register_artifact
from store.jobs import create_job


def test_put_bytes_and_file(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    data = b"weights" * 1000
    stored = store.put_bytes("job_1", "model.pt", data, "checkpoint")
    assert stored == ("job_1/model.pt", len(data), hashlib.sha256(data).hexdigest())
    assert store.path_of(stored.location).read_bytes() == data

    src = tmp_path / "metrics.json"
    src.write_bytes(b'{"dsc": 0.9}')
    location, size, sha = store.put_file("job_1", "metrics.json", src, "metrics")
    assert (location, size, sha) == ("job_1/metrics.json", 12, hashlib.sha256(b'{"dsc": 0.9}').hexdigest())

    store.put_bytes("job_1", "model.pt", b"v2", "checkpoint")  # replaces in place
    assert store.path_of("job_1/model.pt").read_bytes() == b"v2"
    assert sorted(p.name for p in store.job_dir("job_1").iterdir()) == ["metrics.json", "model.pt"]


def test_failed_write_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    store.put_bytes("job_1", "model.pt", b"old", "checkpoint")

    def broken():
        yield b"half"
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        store._write("job_1", "model.pt", "checkpoint", broken())
    assert store.path_of("job_1/model.pt").read_bytes() == b"old"
    assert [p.name for p in (tmp_path / "job_1").iterdir()] == ["model.pt"]


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".", ".hidden", "", "a\\b", "x\x00y", "/abs", "a..b"])
def test_unsafe_names_are_refused(tmp_path: Path, name: str) -> None:
    store = ArtifactStore(tmp_path / "root")
    with pytest.raises(ValueError, match="safe file name"):
        store.put_bytes("job_1", name, b"x", "log")
    with pytest.raises(ValueError, match="safe file name"):
        store.put_bytes(name, "ok.txt", b"x", "log")
    assert not (tmp_path / "escape").exists()


@pytest.mark.parametrize("location", ["../x/y", "job_1/../../etc", "/etc/passwd", "job_1", "a/b/c", "job_1/.."])
def test_path_of_refuses_escapes(tmp_path: Path, location: str) -> None:
    with pytest.raises(ValueError):
        ArtifactStore(tmp_path).path_of(location)


def test_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="weights"):
        ArtifactStore(tmp_path).put_bytes("job_1", "a.bin", b"", "weights")


def test_register_artifact_upserts(session: Session, owner, tmp_path: Path) -> None:
    user, dataset = owner
    job = create_job(session, owner_id=user.id, kind="search", dataset_id=dataset.id, config={}).job
    store = ArtifactStore(tmp_path)
    first = register_artifact(session, job_id=job.id, owner_id=user.id, name="model.pt", kind="checkpoint",
                              stored=store.put_bytes(job.id, "model.pt", b"one", "checkpoint"))
    session.commit()
    second = register_artifact(session, job_id=job.id, owner_id=user.id, name="model.pt", kind="checkpoint",
                               stored=store.put_bytes(job.id, "model.pt", b"two!", "checkpoint"))
    session.commit()
    assert first.id == second.id and first.id.startswith("art_")
    assert [(a.name, a.size, a.sha256) for a in list_artifacts(session, job.id)] == [
        ("model.pt", 4, hashlib.sha256(b"two!").hexdigest())
    ]
    assert get_artifact(session, job.id, "model.pt").location == f"{job.id}/model.pt"
    assert get_artifact(session, job.id, "nope") is None
