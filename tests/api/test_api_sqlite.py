"""One smoke run on the embedded default: SQLite migrated at start-up, the filesystem broker."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from api.main import create_app
from store.db import make_engine, make_sessionmaker
from store.settings import Settings
from store.users import create_user_with_key


def test_embedded_sqlite_smoke(tmp_path: Path, data_root: Path) -> None:
    settings = Settings(home=tmp_path / "home", data_roots=[data_root], broker_url="filesystem://")
    assert settings.embedded
    with TestClient(create_app(settings)) as client:  # the lifespan migrates the new SQLite file
        engine = make_engine(settings.database_url)
        with make_sessionmaker(engine)() as session:
            _, key = create_user_with_key(session, "carol", pepper=settings.api_key_pepper.get_secret_value())
            session.commit()
        engine.dispose()
        headers = {"Authorization": f"Bearer {key}"}

        assert client.get("/readyz").json()["checks"] == {"database": "ok", "broker": "ok"}
        dataset = client.post("/v1/datasets", json={"name": "p", "path": "phantom"}, headers=headers)
        assert dataset.status_code == 201, dataset.text
        submitted = client.post(
            "/v1/searches",
            json={"dataset_id": dataset.json()["id"], "config": {"epochs": 1, "channels": 8, "k": 2}},
            headers={**headers, "Idempotency-Key": "k1"},
        )
        assert submitted.status_code == 202, submitted.text
        again = client.post(
            "/v1/searches",
            json={"dataset_id": dataset.json()["id"], "config": {"epochs": 1, "channels": 8, "k": 2}},
            headers={**headers, "Idempotency-Key": "k1"},
        )
        assert again.json()["id"] == submitted.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
        jobs = client.get("/v1/jobs", headers=headers).json()
        assert [j["id"] for j in jobs["items"]] == [submitted.json()["id"]]
        cancelled = client.post(f"/v1/jobs/{submitted.json()['id']}/cancel", headers=headers)
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert 'thrifty_jobs{kind="search",status="cancelled"} 1.0' in client.get("/metrics").text
