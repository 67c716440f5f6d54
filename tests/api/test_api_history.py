"""Alpha history (paginated, labelled), genotypes, and metrics with per-case Dice."""

from __future__ import annotations

import pytest

from nas_core.models import default_genotype
from nas_core.ops import op_names
from nas_core.topology import CellType, cell_edges
from store.history import record_case_scores, record_epoch, save_genotype
from store.jobs import create_job

GENOTYPE = default_genotype().to_dict()


@pytest.fixture
def search(alice, add_dataset, add_job) -> str:
    return add_job(alice[0], add_dataset(alice[0]), status="running")


def _cells(epoch: int) -> dict:
    rows = lambda t: [[epoch / 10.0] * 7 for _ in cell_edges(t, 2)]  # noqa: E731
    return {
        "dn": {"alphas": rows(CellType.DN), "betas": [0.5] * 5, "genotype": GENOTYPE},
        "up": {"alphas": rows(CellType.UP), "betas": None},
    }


def test_alpha_history_pages_by_epoch_with_edge_labels(client, alice, search, factory) -> None:
    with factory() as session:
        for epoch in range(5):
            record_epoch(session, search, epoch, cells=_cells(epoch))
        session.commit()

    first = client.get(f"/v1/jobs/{search}/alphas?limit=2", headers=alice[1]).json()
    assert [e["epoch"] for e in first["items"]] == [0, 1]
    assert first["next_cursor"] == "1" and first["next_after_epoch"] == 1
    cells = first["items"][1]["cells"]
    assert [c["cell_type"] for c in cells] == ["dn", "up"]
    assert cells[0]["alphas"][0][0] == 0.1 and cells[0]["genotype"] == GENOTYPE and cells[1]["betas"] is None

    dn_edges = first["edges"]["dn"]
    assert len(dn_edges) == 5 and dn_edges[0] == {
        "index": 0, "node": 0, "src": 0, "family": "dn", "ops": op_names(cell_edges(CellType.DN, 2)[0].family)
    }
    assert [e["family"] for e in first["edges"]["up"]][:3] == ["node", "up", "node"]

    second = client.get(f"/v1/jobs/{search}/alphas?limit=2&cursor=1", headers=alice[1]).json()
    assert [e["epoch"] for e in second["items"]] == [2, 3]
    last = client.get(f"/v1/jobs/{search}/alphas?limit=2&after_epoch=3", headers=alice[1]).json()
    assert [e["epoch"] for e in last["items"]] == [4] and last["next_cursor"] is None

    bad = client.get(f"/v1/jobs/{search}/alphas?cursor=abc", headers=alice[1])
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_cursor"


def test_history_of_a_retrain_is_409(client, alice, add_dataset, add_job) -> None:
    retrain = add_job(alice[0], add_dataset(alice[0]), kind="retrain")
    for path in ("alphas", "genotype"):
        response = client.get(f"/v1/jobs/{retrain}/{path}", headers=alice[1])
        assert response.status_code == 409 and response.json()["error"]["code"] == "not_a_search"


def test_genotypes(client, alice, search, factory) -> None:
    response = client.get(f"/v1/jobs/{search}/genotype", headers=alice[1])
    assert response.status_code == 404 and response.json()["error"]["code"] == "genotype_not_ready"
    with factory() as session:
        save_genotype(session, owner_id=alice[0], genotype=GENOTYPE, job_id=search, epoch=0)
        final = save_genotype(session, owner_id=alice[0], genotype=GENOTYPE, job_id=search, params=1234)
        session.commit()
        final_id = final.id
    latest = client.get(f"/v1/jobs/{search}/genotype", headers=alice[1]).json()
    assert latest["id"] == final_id and latest["epoch"] is None and latest["params"] == 1234
    assert latest["genotype"] == GENOTYPE
    assert client.get(f"/v1/genotypes/{final_id}", headers=alice[1]).json() == latest
    assert client.get("/v1/genotypes/gen_missing", headers=alice[1]).status_code == 404


def test_metrics_per_epoch_split_and_case(client, alice, factory, add_dataset) -> None:
    with factory() as session:
        job = create_job(session, owner_id=alice[0], kind="retrain", dataset_id=add_dataset(alice[0]),
                         config={}).job
        job.latest_metrics = {"val_dsc": 0.7}
        record_epoch(session, job.id, 0, metrics={"train": {"loss": 1.0}, "val": {"dsc": 0.5}})
        record_epoch(session, job.id, 1, metrics={"train": {"loss": 0.8}})
        record_case_scores(session, job.id, [
            {"case_id": "c1", "class_index": 1, "class_name": "organ_1", "dsc": 0.9, "iou": 0.8},
            {"case_id": "c2", "class_index": 1, "class_name": "organ_1", "dsc": None, "iou": None},
        ])
        session.commit()
        job_id = job.id
    body = client.get(f"/v1/jobs/{job_id}/metrics", headers=alice[1]).json()
    assert body["latest"] == {"val_dsc": 0.7}
    assert body["epochs"] == [
        {"epoch": 0, "splits": {"train": {"loss": 1.0}, "val": {"dsc": 0.5}}},
        {"epoch": 1, "splits": {"train": {"loss": 0.8}}},
    ]
    assert body["cases"][0] == {"case_id": "c1", "class_index": 1, "class_name": "organ_1", "dsc": 0.9, "iou": 0.8}
    assert body["cases"][1]["dsc"] is None
