"""What ships: the image holds every package the project declares; the version and licence are there."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]


def test_the_image_copies_every_declared_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set(re.findall(r"^COPY\s+(\S+)\s+\./\1\s*$", (ROOT / "Dockerfile").read_text(), re.MULTILINE))
    assert declared - copied == set(), f"the Dockerfile does not COPY {sorted(declared - copied)}"
    for package in declared:  # and each is a real package folder
        assert (ROOT / package / "__init__.py").is_file(), package


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
