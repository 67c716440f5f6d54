"""Registering datasets by nnU-Net name or id (``Dataset003_ACDC``, ``3``) from the server's ``$nnUNet_raw``.

The folder found must pass the same checks as any path: inside the data roots, no link out of them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nas_core.data import make_phantom_dataset

ACDC = "Dataset003_ACDC"


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A data root holding an nnU-Net raw folder, and an nnU-Net raw folder outside every root.

    ``root/nnUNet_raw``: Dataset003_ACDC (a good phantom), Dataset027_Prostate (empty), and
    Dataset004_Linked, a symlink to a folder outside the roots.
    """
    base = tmp_path_factory.mktemp("nnunet")
    raw = base / "root" / "nnUNet_raw"
    make_phantom_dataset(raw / ACDC, num_cases=2, image_size=16)
    (raw / "Dataset027_Prostate").mkdir()
    elsewhere = base / "elsewhere"
    make_phantom_dataset(elsewhere / "Dataset004_Linked", num_cases=2, image_size=16)
    os.symlink(elsewhere / "Dataset004_Linked", raw / "Dataset004_Linked")
    (elsewhere / "nnUNet_raw" / "Dataset005_Far").mkdir(parents=True)
    return {"root": base / "root", "raw": raw, "outside_raw": elsewhere / "nnUNet_raw"}


@pytest.fixture
def api(make_client, places, monkeypatch):
    """A client whose one data root holds ``$nnUNet_raw``."""
    monkeypatch.setenv("nnUNet_raw", str(places["raw"]))
    return make_client(data_roots=[places["root"]])


def _register(client, headers, path: str, name: str = "acdc"):
    return client.post("/v1/datasets", json={"name": name, "path": path}, headers=headers)


def _refusal(response) -> str:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_path" and "path" in error["details"]["fields"]
    return error["message"]


def test_a_dataset_is_registered_by_its_nnunet_folder_name(api, alice, places) -> None:
    response = _register(api, alice[1], ACDC)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["path"] == os.path.realpath(places["raw"] / ACDC) and body["format"] == "nnunet"
    assert body["num_cases"] == 2


@pytest.mark.parametrize("value", ["3", "003"])
def test_a_dataset_is_registered_by_its_nnunet_number(api, alice, places, value) -> None:
    response = _register(api, alice[1], value)
    assert response.status_code == 201, response.text
    assert response.json()["path"] == os.path.realpath(places["raw"] / ACDC)


def test_an_unknown_id_names_nnunet_raw_and_the_datasets_there(api, alice, places) -> None:
    for value, looked_for in (("7", "nnUNet_raw/Dataset007_*"), ("Dataset003_Heart", "nnUNet_raw/Dataset003_Heart")):
        message = _refusal(_register(api, alice[1], value))
        assert looked_for in message and os.path.realpath(places["raw"]) in message, message
        assert "Dataset003_ACDC, Dataset004_Linked, Dataset027_Prostate" in message, message
    assert _register(api, alice[1], f"{ACDC}\x00").status_code == 422  # refused as any path with a NUL


def test_ids_that_lead_outside_the_roots_are_refused(make_client, alice, places, monkeypatch) -> None:
    inside = make_client(data_roots=[places["root"]])
    monkeypatch.setenv("nnUNet_raw", str(places["raw"]))
    message = _refusal(_register(inside, alice[1], "4"))  # a link in nnUNet_raw to outside the roots
    assert "Dataset004_Linked" in message and "symlink that leads outside the data roots" in message, message

    monkeypatch.setenv("nnUNet_raw", str(places["outside_raw"]))  # nnUNet_raw itself outside the roots
    for value in ("5", "Dataset005_Far"):
        message = _refusal(_register(inside, alice[1], value))
        assert "outside its data roots" in message, message
        assert str(places["outside_raw"]) not in message and "it holds" not in message  # nothing outside is shown

    monkeypatch.delenv("nnUNet_raw")
    message = _refusal(_register(inside, alice[1], "3"))
    assert "no nnUNet_raw folder set" in message, message


def test_nnunet_raw_may_itself_be_the_data_root(make_client, alice, places, monkeypatch) -> None:
    monkeypatch.setenv("nnUNet_raw", str(places["raw"]))
    client = make_client(data_roots=[places["raw"]])
    for name, value in (("by-name", ACDC), ("by-id", "3")):  # the name is also a folder under the root
        response = _register(client, alice[1], value, name=name)
        assert response.status_code == 201, response.text
        assert response.json()["path"] == os.path.realpath(places["raw"] / ACDC)


def test_the_schema_documents_nnunet_ids(client) -> None:
    schema = client.get("/openapi.json").json()
    description = schema["components"]["schemas"]["DatasetRegister"]["properties"]["path"]["description"]
    assert "nnUNet_raw" in description and "Dataset003_ACDC" in description
