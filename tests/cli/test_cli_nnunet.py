"""The command line by nnU-Net's conventions (--data by name or id, --fold), and help that shows defaults."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from nas_core.checkpoint import load_checkpoint
from nas_core.config import RetrainConfig, SearchConfig
from nas_core.data import make_phantom_dataset

EXE = shutil.which("thrifty-nas", path=str(Path(sys.executable).parent)) or "thrifty-nas"
GENOTYPE = {"version": 1, "C": 8, "depth": 2, "nodes": 1, "dn": [["conv_3x3", 0], ["conv_3x3", 1]] * 1,
            "up": [["skip", 0], ["up_conv", 1]] * 1}
FOLDS = [{"train": ["phantom_002", "phantom_003", "phantom_004"], "val": ["phantom_000", "phantom_001"]},
         {"train": ["phantom_000", "phantom_001", "phantom_004"], "val": ["phantom_002", "phantom_003"]}]


def run(*args: str, raw: Path | None, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    env.update({"COLUMNS": "200"}, **({"nnUNet_raw": str(raw)} if raw else {}))
    proc = subprocess.run([EXE, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:{proc.stdout}\nstderr:{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nnUNet_raw")
    data = make_phantom_dataset(root / "Dataset009_Phantom", num_cases=5, image_size=32, depth=1,
                                num_classes=2, seed=2)
    (data / "splits_final.json").write_text(json.dumps(FOLDS))
    return root


def test_verify_finds_a_dataset_by_id_and_name(raw, tmp_path):
    for value in ("9", "009", "Dataset009_Phantom"):
        proc = run("verify", "--data", value, raw=raw, cwd=tmp_path)
        assert "SYNTHETIC phantom" in proc.stdout and "no problems found" in proc.stdout


@pytest.mark.parametrize(("command", "env_set", "message"), [
    (["verify"], True, "looked for nnUNet_raw/Dataset007_* in"),
    (["evaluate", "--checkpoint", "best.pt"], True, "it holds Dataset009_Phantom"),
    (["search", "--out", "o"], False, "nnUNet_raw is not set"),
    (["retrain", "--out", "o", "--arch", "unet"], False, "nnUNet_raw is not set"),
])
def test_an_unknown_id_is_a_usage_error_naming_what_was_looked_for(raw, tmp_path, command, env_set, message):
    proc = run(*command, "--data", "7", raw=raw if env_set else None, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert message in " ".join(proc.stderr.replace("│", " ").split())


def test_retrain_by_id_validates_on_the_chosen_fold(raw, tmp_path):
    (tmp_path / "g.json").write_text(json.dumps(GENOTYPE))
    common = ("retrain", "--data", "9", "--genotype", str(tmp_path / "g.json"), "--epochs", "1",
              "--image-size", "32", "--batch-size", "2", "--json")
    run(*common, "--out", str(tmp_path / "fold1"), "--fold", "1", raw=raw, cwd=tmp_path)
    held_out = load_checkpoint(tmp_path / "fold1" / "best.pt")["dataset"]["held_out_cases"]
    assert held_out == FOLDS[1]["val"]
    run(*common, "--out", str(tmp_path / "fold0"), raw=raw, cwd=tmp_path)  # fold 0 by default
    assert load_checkpoint(tmp_path / "fold0" / "best.pt")["dataset"]["held_out_cases"] == FOLDS[0]["val"]

    proc = run(*common, "--out", str(tmp_path / "x"), "--fold", "1", "--val-cases", "phantom_004", raw=raw,
               cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "give --val-cases or --fold, not both" in proc.stderr
    proc = run(*common, "--out", str(tmp_path / "x"), "--fold", "4", raw=raw, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "there is no fold 4" in " ".join(proc.stderr.split())


def test_fold_without_splits_final_says_where_it_looked(tmp_path):
    data = make_phantom_dataset(tmp_path / "plain", num_cases=3, image_size=16, depth=1, num_classes=2)
    proc = run("search", "--data", str(data), "--out", str(tmp_path / "o"), "--fold", "0", raw=None,
               cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert f"--fold 0 needs splits_final.json in {data}" in " ".join(proc.stderr.split())


# --- help -------------------------------------------------------------------------------------------------

SERVICE = {"up", "worker", "migrate", "keys"}  # cli/service.py, documented separately
#: options without a default by design: one of a group is required, or nothing is sent unless given
NO_DEFAULT = {("retrain", "--genotype"), ("retrain", "--arch"), ("export", "--onnx"),
              ("export", "--monai-bundle"),
              ("submit retrain", "--genotype-id"), ("submit retrain", "--search-job"),
              ("submit retrain", "--baseline"), ("submit search", "--config"), ("submit retrain", "--config"),
              ("submit search", "--idempotency-key"), ("submit retrain", "--idempotency-key"),
              ("genotypes show", "--job")}


def _options(command, path=()):
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from _options(sub, (*path, name))
    elif path[0] not in SERVICE:
        for param in command.params:
            if param.param_type_name == "option":
                yield " ".join(path), param


def test_every_optional_option_shows_its_default():
    from cli.main import app

    missing = [(cmd, p.opts[0]) for cmd, p in _options(get_command(app))
               if not p.required and not (p.is_flag and not p.secondary_opts) and p.show_default is not False
               and p.default is None and not isinstance(p.show_default, str)
               and (cmd, p.opts[0]) not in NO_DEFAULT]
    assert missing == []


@pytest.mark.parametrize(("command", "shown"), [
    (["search"], [f"[default: ({SearchConfig().epochs})]", f"[default: ({SearchConfig().warmup_epochs})]",
                  "one of nnunet, promise12, chaos_ct, folder2d", "Dataset003_ACDC"]),
    (["retrain"], [f"[default: ({RetrainConfig().epochs})]", f"[default: ({RetrainConfig().lr})]",
                   f"[default: ({RetrainConfig().augmentation})]", "[default: (0 when the file exists)]"]),
    (["submit", "retrain"], [f"[default: ({RetrainConfig().epochs})]", "<unet|unetpp>"]),
    (["jobs", "plots"], ["png or svg", "[default: png]"]),
    (["export"], ["[default: 17]", "[default: (the checkpoint's)]"]),
])
def test_help_shows_defaults_and_choices(command, shown):
    from cli.main import app

    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "250"}, terminal_width=250)
    assert result.exit_code == 0
    text = " ".join(result.output.replace("│", " ").split())
    for piece in shown:
        assert piece in text, piece
