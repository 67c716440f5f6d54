"""Dataset paths: only folders under the configured data roots, and only files under them too.

What ``tests/api/test_api_datasets.py`` already checks (an outside folder, ``..``, a symlink
in the root leading out, a missing path, a file) is not repeated. Added here:

* a symlinked FILE (or sub-folder) inside an otherwise valid dataset that leads outside
  the roots: REFUSED (422 ``invalid_path`` naming the link), since the worker would read
  it; links that stay inside the roots are accepted;
* a relative path through a symlink that leads out; ``~``; a NUL byte; a name too long
  for the file system (was a 500); a symlink loop; nothing is stored after a refusal.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from nas_core.data import make_phantom_dataset
from store.models import Dataset

IMAGE = "imagesTr/phantom_001_0000.nii.gz"


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    """(a data root with a good dataset ``good``, a folder outside every root)."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    make_phantom_dataset(root / "good", num_cases=3, image_size=16)
    return root, outside


@pytest.fixture
def rooted(make_client, roots):
    return make_client(data_roots=[roots[0]])


def _register(client, headers, path: str, name: str = "x"):
    return client.post("/v1/datasets", json={"name": name, "path": path}, headers=headers)


def _refused(response, words: str) -> dict:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_path" and words in error["message"], error
    assert "path" in error["details"]["fields"]
    return error


def _nothing_stored(factory) -> None:
    with factory() as session:
        assert session.query(Dataset).count() == 0


def test_a_symlinked_file_leading_outside_refuses_the_dataset(rooted, alice, roots, factory) -> None:
    root, outside = roots
    shutil.copytree(root / "good", root / "linked")
    image = root / "linked" / IMAGE
    shutil.move(image, outside / "secret.nii.gz")  # a perfectly readable image, just not under the roots
    os.symlink(outside / "secret.nii.gz", image)

    error = _refused(_register(rooted, alice[1], "linked"), "symlinks that lead outside the data roots")
    assert f"{IMAGE} -> {outside / 'secret.nii.gz'}" in error["message"]
    _nothing_stored(factory)


def test_a_symlinked_subfolder_leading_outside_refuses_the_dataset(rooted, alice, roots, factory) -> None:
    root, outside = roots
    shutil.copytree(root / "good", root / "linked")
    shutil.move(root / "linked" / "labelsTr", outside / "labels")
    os.symlink(outside / "labels", root / "linked" / "labelsTr")
    error = _refused(_register(rooted, alice[1], str(root / "linked")), "symlinks that lead outside")
    assert "labelsTr ->" in error["message"]
    _nothing_stored(factory)


def test_links_inside_a_link_inside_the_root_are_followed(rooted, alice, roots, factory) -> None:
    """dataset/labelsTr -> root/shared (inside: fine), but root/shared holds a link leading out."""
    root, outside = roots
    shutil.copytree(root / "good", root / "linked")
    shutil.move(root / "linked" / "labelsTr", root / "shared")
    os.symlink(root / "shared", root / "linked" / "labelsTr")
    label = root / "shared" / "phantom_002.nii.gz"
    shutil.move(label, outside / "l.nii.gz")
    os.symlink(outside / "l.nii.gz", label)
    _refused(_register(rooted, alice[1], "linked"), "phantom_002.nii.gz ->")
    _nothing_stored(factory)


def test_links_that_stay_inside_the_roots_are_accepted(rooted, alice, roots) -> None:
    root, _ = roots
    shutil.copytree(root / "good", root / "linked")
    image = root / "linked" / IMAGE
    image.unlink()
    os.symlink(root / "good" / IMAGE, image)  # a file link inside the root
    os.symlink(root / "linked", root / "alias")  # a folder link inside the root
    response = _register(rooted, alice[1], "alias")
    assert response.status_code == 201, response.text
    assert response.json()["path"] == str((root / "linked").resolve())


def test_other_ways_out_of_the_roots(rooted, alice, roots, factory) -> None:
    root, outside = roots
    os.symlink(outside, root / "door")
    (outside / "sub").mkdir()
    make_phantom_dataset(outside / "ds", num_cases=3, image_size=16)  # a valid dataset, wrongly placed
    cases = {
        "door/sub": "symlink that leads outside the data roots",  # relative, through a link
        "door/ds": "symlink that leads outside the data roots",
        str(outside / "ds"): "outside the data roots",
        f"//{str(outside / 'ds').lstrip('/')}": "outside the data roots",  # a doubled leading slash
        f"{root}/./../outside/ds": "contains '..'",
        "~": "outside the data roots",
        "good\x00": "NUL byte",
        "a" * 300: "cannot be read on the server",  # ENAMETOOLONG: was a 500
        f"{root}/{'b' * 300}/c": "cannot be read on the server",
    }
    for path, words in cases.items():
        _refused(_register(rooted, alice[1], path), words)
    _nothing_stored(factory)


def test_a_symlink_loop_does_not_hang_nor_fail(rooted, alice, roots) -> None:
    root, _ = roots
    shutil.copytree(root / "good", root / "loopy")
    os.symlink(root / "loopy", root / "loopy" / "again")  # a folder linking to its own parent
    os.symlink(root / "loopy" / "b", root / "loopy" / "a")
    os.symlink(root / "loopy" / "a", root / "loopy" / "b")
    response = _register(rooted, alice[1], "loopy")
    assert response.status_code in (201, 422), response.text
    loop = root / "loop"
    os.symlink(loop, loop)
    assert _register(rooted, alice[1], "loop", name="y").status_code == 422
