"""API keys: missing, wrong or revoked keys get 401; one user never sees another's resources."""

from __future__ import annotations

import pytest

from nas_core.models import default_genotype
from store.artifacts import ArtifactStore, register_artifact
from store.history import record_epoch, save_genotype
from store.users import list_keys, revoke_key


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer tnas_thisIsNotAKeyAnyoneWasGiven0000000000000"},
        {"Authorization": "Bearer short"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
)
def test_missing_or_wrong_key_is_401(client, headers) -> None:
    response = client.get("/v1/jobs", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    error = response.json()["error"]
    assert error["code"] in ("unauthorized", "invalid_api_key") and "API key" in error["message"]


def test_revoked_key_is_401(client, alice, factory) -> None:
    assert client.get("/v1/jobs", headers=alice[1]).status_code == 200
    with factory() as session:
        key = list_keys(session, alice[0])[0]
        assert revoke_key(session, key.id)
        session.commit()
    response = client.get("/v1/jobs", headers=alice[1])
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert "revoked" in response.json()["error"]["message"]


def test_every_endpoint_with_an_id_is_404_for_another_user(
    client, alice, bob, add_dataset, add_job, factory, settings
) -> None:
    ds = add_dataset(alice[0])
    search = add_job(alice[0], ds, status="succeeded")
    with factory() as session:
        gen = save_genotype(session, owner_id=alice[0], genotype=default_genotype().to_dict(), job_id=search)
        record_epoch(session, search, 0, cells={"dn": {"alphas": [[0.1]]}})
        stored = ArtifactStore(settings.artifact_dir).put_bytes(search, "model.pt", b"weights", "checkpoint")
        register_artifact(session, job_id=search, owner_id=alice[0], name="model.pt", kind="checkpoint",
                          stored=stored)
        session.commit()
        gen_id = gen.id

    reads = [
        f"/v1/datasets/{ds}",
        f"/v1/jobs/{search}",
        f"/v1/jobs/{search}/alphas",
        f"/v1/jobs/{search}/metrics",
        f"/v1/jobs/{search}/genotype",
        f"/v1/genotypes/{gen_id}",
        f"/v1/jobs/{search}/artifacts",
        f"/v1/jobs/{search}/artifacts/model.pt",
    ]
    for path in reads:
        assert client.get(path, headers=alice[1]).status_code == 200, path
        response = client.get(path, headers=bob[1])
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
    # ... and the same body as an id that never existed: nothing tells the two apart
    assert (client.get(f"/v1/jobs/{search}", headers=bob[1]).json()["error"]["message"]
            == f"job {search!r} not found")

    assert client.post(f"/v1/jobs/{search}/cancel", headers=bob[1]).status_code == 404
    for body, path in (
        ({"dataset_id": ds}, "/v1/searches"),
        ({"dataset_id": ds, "architecture": {"baseline": "unet"}}, "/v1/retrains"),
    ):
        assert client.post(path, json=body, headers=bob[1]).status_code == 404
    bob_ds = add_dataset(bob[0])
    for arch in ({"search_job_id": search}, {"genotype_id": gen_id}):
        response = client.post("/v1/retrains", json={"dataset_id": bob_ds, "architecture": arch}, headers=bob[1])
        assert response.status_code == 404, arch

    assert client.get("/v1/jobs", headers=bob[1]).json()["items"] == []
    assert [d["id"] for d in client.get("/v1/datasets", headers=bob[1]).json()["items"]] == [bob_ds]
