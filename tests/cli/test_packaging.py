"""What ships: the image holds every package the project declares; the version and licence are there."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]


def _tree_check(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    """scripts/check-image.sh --tree-only: the image's file tree from the COPY lines, then its checks."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("THRIFTY_")}
    env["CHECK_IMAGE_PYTHON"] = sys.executable
    return subprocess.run(["bash", str(ROOT / "scripts" / "check-image.sh"), "--tree-only", "--dockerfile",
                           str(dockerfile)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_the_image_copies_every_declared_package() -> None:
    result = _tree_check(ROOT / "Dockerfile")
    assert result.returncode == 0 and "check-image: PASS" in result.stdout, result.stdout + result.stderr
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert f"holds {sorted(declared)}" in result.stderr, result.stderr


@pytest.mark.parametrize("package", ["client", "store"])
def test_the_tree_check_fails_when_the_dockerfile_lacks_a_package(tmp_path: Path, package: str) -> None:
    text = (ROOT / "Dockerfile").read_text()
    line = f"COPY {package} ./{package}\n"
    assert line in text
    (tmp_path / "Dockerfile").write_text(text.replace(line, ""))
    result = _tree_check(tmp_path / "Dockerfile")
    assert result.returncode != 0 and "check-image: FAIL" in result.stdout, result.stdout + result.stderr
    assert f"lacks the declared package(s) ['{package}']" in result.stderr, result.stderr


def test_the_tree_check_fails_when_a_copy_leaves_out_tracked_files(tmp_path: Path) -> None:
    """Only part of a package copied (its __init__.py there, its migrations not): the check names them."""
    text = (ROOT / "Dockerfile").read_text().replace("COPY store ./store\n", "COPY store/*.py ./store/\n")
    (tmp_path / "Dockerfile").write_text(text)
    result = _tree_check(tmp_path / "Dockerfile")
    report = result.stdout + result.stderr
    assert result.returncode != 0 and "tracked file(s)" in result.stderr, report
    assert "store/migrations/" in result.stderr, report


def test_licence_file_matches_the_declared_licence() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    assert (ROOT / "LICENSE").read_text().startswith(f"{declared} License")


def test_version_flag() -> None:
    from cli.main import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("thrifty-nas ")
    assert re.search(r"\d+\.\d+\.\d+|not installed", result.output)


def test_format_choices_are_the_registered_readers() -> None:
    from cli.local import FORMATS
    from nas_core.data import REGISTRY

    assert FORMATS == tuple(REGISTRY)
    from cli.main import app

    result = CliRunner().invoke(app, ["verify", "--data", ".", "--format", "dicomish"])
    assert result.exit_code == 2 and "nnunet" in result.output and "folder2d" in result.output


def test_a_wheel_carries_the_migrations(tmp_path) -> None:
    """A non-editable install (the image's, pip install .) must find every migration."""
    import shutil
    import subprocess
    import sys
    import zipfile

    had_build = (ROOT / "build").exists()
    try:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(tmp_path), str(ROOT)], check=True, capture_output=True)
    finally:
        if not had_build:  # setuptools builds in the source tree: leave it as it was
            shutil.rmtree(ROOT / "build", ignore_errors=True)
    wheel = next(tmp_path.glob("thrifty_nas-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.relative_to(ROOT).as_posix() for p in (ROOT / "store" / "migrations").rglob("*")
               if p.is_file() and p.suffix in (".py", ".mako")}
    assert shipped and shipped <= names, sorted(shipped - names)
    assert "nas_core/default_genotype.json" in names
