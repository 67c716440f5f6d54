"""The local command line through its real entry point: outputs, exit codes, messages."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nas_core.data import make_phantom_dataset

EXE = shutil.which("thrifty-nas", path=str(Path(sys.executable).parent)) or "thrifty-nas"


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run([EXE, *args], capture_output=True, text=True, env=env, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:{proc.stdout}\nstderr:{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    return make_phantom_dataset(tmp_path_factory.mktemp("cli") / "ph", num_cases=4, image_size=32, depth=1,
                                num_classes=2, seed=4)


@pytest.mark.parametrize(("arch", "extra", "expected"), [
    ("unet", [], 7_759_521), ("unetpp", [], 9_041_601), ("unet", ["--classes", "2"], 7_759_554),
    ("unet", ["--in-channels", "2"], 7_759_521 + 288),
])
def test_params_json(arch, extra, expected):
    assert json.loads(run("params", arch, "--json", *extra).stdout) == {"arch": arch, "params": expected}


def test_params_thrifty_default_and_file(tmp_path):
    default = json.loads(run("params", "thrifty", "--json").stdout)["params"]
    assert 0 < default <= 610_000
    g = {"version": 1, "C": 8, "depth": 4, "nodes": 2, "dn": [["conv_3x3", 0], ["conv_3x3", 1]] * 2,
         "up": [["skip", 0], ["up_conv", 1]] * 2}
    (tmp_path / "g.json").write_text(json.dumps(g))
    small = json.loads(run("params", "thrifty", "--genotype", str(tmp_path / "g.json"), "--json").stdout)["params"]
    assert small < default


@pytest.mark.parametrize(("args", "message"), [
    (["params", "resnet"], "unknown architecture 'resnet'"),
    (["params", "thrifty", "--genotype", "/nope.json"], "/nope.json"),
    (["search", "--data", "/does/not/exist", "--out", "/tmp/x"], "--data /does/not/exist does not exist"),
    (["verify", "--data", "/does/not/exist"], "/does/not/exist"),
    (["retrain", "--data", "/tmp", "--out", "/tmp/x"], "exactly one of --genotype FILE or --arch"),
    (["retrain", "--data", "/tmp", "--out", "/tmp/x", "--arch", "resnet"], "--arch must be unet or unetpp"),
])
def test_bad_input_gives_message_and_nonzero_exit_without_traceback(args, message):
    proc = run(*args, check=False)
    assert proc.returncode != 0
    assert message in " ".join((proc.stderr + proc.stdout).split())
    assert "Traceback" not in proc.stderr + proc.stdout


def test_bad_genotype_file_is_named(tmp_path):
    (tmp_path / "g.json").write_text('{"version": 1, "C": 8, "depth": 4, "nodes": 2, "dn": [], "up": []}')
    proc = run("params", "thrifty", "--genotype", str(tmp_path / "g.json"), check=False)
    assert proc.returncode == 2 and "dn has 0 entries" in proc.stderr


def test_verify_reports_bad_file(phantom, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(phantom, broken)
    victim = sorted((broken / "labelsTr").iterdir())[0]
    victim.write_bytes(b"not a nifti file")
    proc = run("verify", "--data", str(broken), check=False)
    assert proc.returncode == 1
    assert victim.name in proc.stdout
    assert run("verify", "--data", str(phantom)).returncode == 0


def test_search_retrain_evaluate_predict_round_trip(phantom, tmp_path):
    out = tmp_path / "search"
    summary = json.loads(run("search", "--data", str(phantom), "--out", str(out), "--epochs", "2",
                             "--warmup-epochs", "1", "--image-size", "32", "--batch-size", "2", "--channels", "8",
                             "--k", "2", "--depth", "3", "--json").stdout)
    assert summary["epochs_run"] == 2 and summary["dataset"]["synthetic"] is True
    assert json.loads((out / "genotype.json").read_text()) == summary["genotype"]
    assert len((out / "alphas.jsonl").read_text().splitlines()) == 2
    # --resume on a finished search runs no new epoch and keeps the history
    again = json.loads(run("search", "--data", str(phantom), "--out", str(out), "--epochs", "2",
                           "--warmup-epochs", "1", "--image-size", "32", "--batch-size", "2", "--channels", "8",
                           "--k", "2", "--depth", "3", "--resume", "--json").stdout)
    assert again["genotype"] == summary["genotype"] and again["epochs_run"] == 2

    rt = tmp_path / "retrain"
    metrics = json.loads(run("retrain", "--data", str(phantom), "--genotype", str(out / "genotype.json"),
                             "--out", str(rt), "--epochs", "1", "--image-size", "32", "--batch-size", "2",
                             "--json").stdout)
    assert metrics["architecture"] == "thrifty" and (rt / "best.pt").exists()
    assert json.loads((rt / "metrics.json").read_text())["params"] == metrics["params"]
    evaluated = json.loads(run("evaluate", "--checkpoint", str(rt / "best.pt"), "--data", str(phantom),
                               "--json").stdout)
    assert evaluated["n_cases"] == 4 and len(evaluated["per_case"]) == 4
    written = json.loads(run("predict", "--checkpoint", str(rt / "best.pt"), "--input",
                             str(phantom / "imagesTr"), "--output", str(tmp_path / "pred"), "--json").stdout)
    assert len(written["written"]) == 4 and all(p.endswith(".nii.gz") for p in written["written"])
