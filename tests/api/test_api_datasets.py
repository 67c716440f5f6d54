"""Registering datasets from server paths: only under the data roots, verified file by file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from store.models import Dataset

BROKEN_FILE = "labelsTr/phantom_001.nii.gz"  # unreadable in the conftest's "broken" dataset


def _register(client, headers, name: str, path: str, **extra):
    return client.post("/v1/datasets", json={"name": name, "path": path, **extra}, headers=headers)


def test_register_a_good_dataset_by_path(client, alice, data_root) -> None:
    response = _register(client, alice[1], "phantom", str(data_root / "phantom"))
    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["Location"] == f"/v1/datasets/{body['id']}"
    assert body["status"] == "ready" and body["format"] == "nnunet" and body["num_cases"] == 3
    assert body["num_classes"] == 3 and body["synthetic"] is True and body["modality"] == "MR"
    assert body["report"]["ok"] is True and body["path"] == str((data_root / "phantom").resolve())

    shown = client.get(f"/v1/datasets/{body['id']}", headers=alice[1]).json()
    assert shown == body
    relative = _register(client, alice[1], "again", "phantom", format="nnunet")
    assert relative.status_code == 201, relative.text

    duplicate = _register(client, alice[1], "phantom", str(data_root / "phantom"))
    assert duplicate.status_code == 409 and duplicate.json()["error"]["code"] == "dataset_exists"


def test_same_name_for_two_users_is_fine(client, alice, bob, data_root) -> None:
    assert _register(client, alice[1], "phantom", str(data_root / "phantom")).status_code == 201
    assert _register(client, bob[1], "phantom", str(data_root / "phantom")).status_code == 201


def test_invalid_dataset_is_refused_with_a_report_naming_the_bad_file(client, alice, data_root, factory) -> None:
    response = _register(client, alice[1], "broken", str(data_root / "broken"))
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "dataset_invalid" and BROKEN_FILE in error["message"]
    issues = error["details"]["report"]["issues"]
    assert [i["path"] for i in issues] == [str(data_root / "broken" / BROKEN_FILE)]
    assert issues[0]["case_id"] == "phantom_001"
    with factory() as session:
        assert session.query(Dataset).count() == 0  # refused as a whole: nothing registered


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder


def test_paths_outside_the_roots_are_refused(client, alice, data_root, outside) -> None:
    link = data_root / "sneaky"
    if not link.exists():
        os.symlink(outside, link)
    cases = {
        str(outside): "outside the data roots",
        f"{data_root}/phantom/../../elsewhere": "contains '..'",
        "../phantom": "contains '..'",
        str(link): "symlink that leads outside the data roots",
        f"{link}/sub": "symlink that leads outside the data roots",
        str(data_root / "nope"): "does not exist",
        str(data_root / "phantom" / "dataset.json"): "is not a folder",
        "/etc": "outside the data roots",
    }
    for path, reason in cases.items():
        response = _register(client, alice[1], "x", path)
        assert response.status_code == 422, (path, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_path" and reason in error["message"], (path, error)
        assert "path" in error["details"]["fields"]


def test_unknown_format_and_missing_fields(client, alice, data_root) -> None:
    response = _register(client, alice[1], "p", str(data_root / "phantom"), format="dicomish")
    assert response.status_code == 422 and "format" in response.json()["error"]["details"]["fields"]
    response = client.post("/v1/datasets", json={"path": "phantom"}, headers=alice[1])
    assert response.status_code == 422 and "name" in response.json()["error"]["details"]["fields"]
    response = client.post("/v1/datasets", content=b"{not json", headers={**alice[1], "Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    response = client.post("/v1/datasets", content=b"name=x", headers={**alice[1], "Content-Type": "text/plain"})
    assert response.status_code == 415


def test_list_is_paginated(client, alice, add_dataset) -> None:
    ids = {add_dataset(alice[0], name=f"d{i}") for i in range(5)}
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/datasets", params=params, headers=alice[1]).json()
        assert len(page["items"]) <= 2
        seen += [d["id"] for d in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 5 and set(seen) == ids
    assert "report" not in page["items"][0]


@pytest.mark.parametrize("media_type", ["application/jsonx", "application/json-patch", "multipart/form-dataz"])
def test_media_types_are_matched_exactly(client, alice, data_root, media_type) -> None:
    body = b'{"name": "p", "path": "phantom"}'
    response = client.post("/v1/datasets", content=body, headers={**alice[1], "Content-Type": media_type})
    assert response.status_code == 415, response.text
