"""DELETE of jobs, artefacts and datasets: owner only, finished jobs only, files gone, 404 after."""

from __future__ import annotations

from store.artifacts import ArtifactStore, register_artifact

DATA = b"x" * 5000


def _job_with_files(add_job, factory, settings, owner_id: str, dataset_id: str, status: str = "succeeded") -> str:
    job_id = add_job(owner_id, dataset_id, kind="retrain", status=status)
    store = ArtifactStore(settings.artifact_dir)
    with factory() as session:
        for name in ("best.pt", "metrics.json"):
            stored = store.put_bytes(job_id, name, DATA, "checkpoint")
            register_artifact(session, job_id=job_id, owner_id=owner_id, name=name, kind="checkpoint", stored=stored)
        session.commit()
    (settings.artifact_dir / "work" / job_id).mkdir(parents=True)
    return job_id


def test_delete_a_finished_job_and_its_files(client, alice, bob, add_dataset, add_job, factory, settings) -> None:
    ds = add_dataset(alice[0])
    job = _job_with_files(add_job, factory, settings, alice[0], ds)
    assert client.get("/v1/me", headers=alice[1]).json()["storage_bytes"] == 2 * len(DATA)
    assert client.delete(f"/v1/jobs/{job}", headers=bob[1]).status_code == 404  # not bob's
    assert client.delete(f"/v1/jobs/{job}", headers=alice[1]).status_code == 204
    assert client.get(f"/v1/jobs/{job}", headers=alice[1]).status_code == 404
    assert client.get(f"/v1/jobs/{job}/artifacts/best.pt", headers=alice[1]).status_code == 404
    assert not ArtifactStore(settings.artifact_dir).job_dir(job).exists()
    assert not (settings.artifact_dir / "work" / job).exists()
    me = client.get("/v1/me", headers=alice[1]).json()
    assert me["storage_bytes"] == 0 and me["jobs"] == 0 and me["datasets"] == 1


def test_a_running_job_must_be_cancelled_first(client, alice, add_dataset, add_job, factory, settings) -> None:
    job = _job_with_files(add_job, factory, settings, alice[0], add_dataset(alice[0]), status="running")
    response = client.delete(f"/v1/jobs/{job}", headers=alice[1])
    assert response.status_code == 409 and "cancel it first" in response.json()["error"]["message"]
    assert client.delete(f"/v1/jobs/{job}/artifacts/best.pt", headers=alice[1]).status_code == 409
    assert ArtifactStore(settings.artifact_dir).job_dir(job).exists()


def test_delete_one_artifact(client, alice, bob, add_dataset, add_job, factory, settings) -> None:
    job = _job_with_files(add_job, factory, settings, alice[0], add_dataset(alice[0]))
    assert client.delete(f"/v1/jobs/{job}/artifacts/best.pt", headers=bob[1]).status_code == 404
    assert client.delete(f"/v1/jobs/{job}/artifacts/best.pt", headers=alice[1]).status_code == 204
    assert client.get(f"/v1/jobs/{job}/artifacts/best.pt", headers=alice[1]).status_code == 404
    assert client.delete(f"/v1/jobs/{job}/artifacts/best.pt", headers=alice[1]).status_code == 404
    assert not (ArtifactStore(settings.artifact_dir).job_dir(job) / "best.pt").exists()
    names = [a["name"] for a in client.get(f"/v1/jobs/{job}/artifacts", headers=alice[1]).json()["items"]]
    assert names == ["metrics.json"]


def test_a_dataset_in_use_is_kept_until_its_jobs_are_gone(client, alice, bob, add_dataset, add_job, factory,
                                                         settings) -> None:
    ds = add_dataset(alice[0])
    job = _job_with_files(add_job, factory, settings, alice[0], ds)
    response = client.delete(f"/v1/datasets/{ds}", headers=alice[1])
    assert response.status_code == 409 and "delete them first" in response.json()["error"]["message"]
    assert client.delete(f"/v1/datasets/{ds}", headers=bob[1]).status_code == 404
    assert client.delete(f"/v1/jobs/{job}", headers=alice[1]).status_code == 204
    assert client.delete(f"/v1/datasets/{ds}", headers=alice[1]).status_code == 204
    assert client.get(f"/v1/datasets/{ds}", headers=alice[1]).status_code == 404


def test_job_logs_while_it_runs_with_since_and_tail(client, alice, bob, add_dataset, add_job, settings) -> None:
    from store.artifacts import ArtifactStore
    from store.joblogs import log_path

    job = add_job(alice[0], add_dataset(alice[0]), kind="search", status="running")
    assert client.get(f"/v1/jobs/{job}/logs", headers=alice[1]).json()["lines"] == []  # nothing written yet
    path = log_path(ArtifactStore(settings.artifact_dir), job)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"line {i}\n" for i in range(5)))
    body = client.get(f"/v1/jobs/{job}/logs", headers=alice[1]).json()
    assert body["lines"] == [f"line {i}" for i in range(5)] and body["next_since"] == 5 and body["status"] == "running"
    with path.open("a") as f:
        f.write("line 5\n")
    newer = client.get(f"/v1/jobs/{job}/logs", params={"since": 5}, headers=alice[1]).json()
    assert newer["lines"] == ["line 5"] and newer["next_since"] == 6
    assert client.get(f"/v1/jobs/{job}/logs", params={"tail": 2}, headers=alice[1]).json()["lines"] == [
        "line 4", "line 5"]
    assert client.get(f"/v1/jobs/{job}/logs", headers=bob[1]).status_code == 404
