"""ONNX export (every op of the search space, the baselines, the padding) and model bundles."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import SimpleITK as sitk
import torch
from torch import nn

from nas_core import bundle as bundle_module
from nas_core.bundle import CHECKPOINT_MEMBER, is_bundle, make_bundle, read_json
from nas_core.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from nas_core.config import RetrainConfig
from nas_core.data import make_phantom_dataset
from nas_core.export import METADATA_KEY, ExportError, export_and_check, export_checkpoint
from nas_core.genotype import Genotype
from nas_core.inference import predict_paths
from nas_core.models import build_model
from nas_core.ops import OPS
from nas_core.retrain import run_retrain
from nas_core.topology import CellType, edge_family

EXE = shutil.which("thrifty-nas", path=str(Path(sys.executable).parent)) or "thrifty-nas"

#: Every non-`none` op of every family, at least once (checked below).
ALL_OPS = {
    "version": 1, "C": 8, "depth": 3, "nodes": 4,
    "dn": [["max_pool", 0], ["avg_pool", 1], ["skip", 0], ["conv_3x3", 1], ["dil_conv_3x3", 0],
           ["sep_conv_3x3", 1], ["max_pool_3x3", 2], ["avg_pool_3x3", 3]],
    "up": [["skip", 0], ["skip", 1], ["conv_3x3", 0], ["up_conv", 1], ["conv_3x3", 1], ["sep_conv_3x3", 2],
           ["dil_conv_3x3", 1], ["dil_conv_3x3", 4]],
}


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run([EXE, *args], capture_output=True, text=True, env=env, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:{proc.stdout}\nstderr:{proc.stderr}")
    return proc


def randomise_batchnorm(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so BN's export is really checked."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.2 * torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            if m.affine:
                m.weight.data.copy_(0.5 + torch.rand(m.num_features, generator=gen))
                m.bias.data.copy_(0.2 * torch.randn(m.num_features, generator=gen))
    return model.eval()


def test_the_all_ops_genotype_uses_every_op_of_every_family():
    g = Genotype.from_dict(ALL_OPS)
    used = {(edge_family(t, src), op) for t in CellType for op, src in g.cell(t)}
    every = {(family, op) for family, ops in OPS.items() for op in ops if op != "none"}
    assert used == every


@pytest.mark.parametrize(("spec", "in_channels", "classes", "size", "deep"), [
    ({"genotype": ALL_OPS}, 1, 3, 32, False),   # divisible: no padding
    ({"genotype": ALL_OPS}, 2, 2, 30, False),   # reflect padding to 32, crop back
    ({"genotype": ALL_OPS}, 1, 2, 3, False),    # pad wider than the image: zero padding
    ({"genotype": ALL_OPS}, 1, 3, 32, True),    # deep supervision: mean of the heads
    ({"baseline": "unet"}, 1, 2, 20, False),
    ({"baseline": "unetpp"}, 1, 3, 24, False),
])
def test_onnx_matches_pytorch(tmp_path, spec, in_channels, classes, size, deep):
    model = randomise_batchnorm(build_model(spec, in_channels, classes, deep_supervision=deep))
    report = export_and_check(model, tmp_path / "m.onnx", in_channels, size)
    assert report.max_abs_diff < 1e-4
    assert report.inputs == [{"name": "image", "shape": ["batch", in_channels, size, size], "dtype": "tensor(float)"}]
    assert report.outputs == [{"name": "logits", "shape": ["batch", classes, size, size], "dtype": "tensor(float)"}]
    # the batch axis is dynamic (traced at 1, checked at 2; here 3)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(3, in_channels, size, size)
    (got,) = session.run(["logits"], {"image": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-4, rtol=0)


def test_the_exported_graph_keeps_the_ops_semantics(tmp_path):
    model = randomise_batchnorm(build_model({"genotype": ALL_OPS}, 1, 2))
    export_and_check(model, tmp_path / "m.onnx", 1, 30)
    nodes = onnx.load(str(tmp_path / "m.onnx")).graph.node
    attrs = lambda n: {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}  # noqa: E731
    kinds = {n.op_type for n in nodes}
    assert {"ConvTranspose", "Resize", "MaxPool", "AveragePool", "Pad", "Slice", "BatchNormalization"} <= kinds
    assert {attrs(n)["mode"] for n in nodes if n.op_type == "Pad"} == {b"reflect", b"constant"}
    assert {attrs(n)["count_include_pad"] for n in nodes if n.op_type == "AveragePool"} == {0}
    assert {(attrs(n)["mode"], attrs(n)["coordinate_transformation_mode"]) for n in nodes
            if n.op_type == "Resize"} == {(b"linear", b"half_pixel")}


def test_a_failed_parity_check_names_the_difference_and_leaves_no_file(tmp_path):
    model = build_model({"genotype": ALL_OPS}, 1, 2).eval()
    with pytest.raises(ExportError, match=r"differ from PyTorch's by up to \d\.\d{3}e[-+]\d+ \(tolerance"):
        export_and_check(model, tmp_path / "m.onnx", 1, 32, tolerance=-1.0)
    assert not (tmp_path / "m.onnx").exists()


# --- a real checkpoint: a 1-epoch retrain on a SYNTHETIC phantom --------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("export")
    data = make_phantom_dataset(root / "phantom", num_cases=4, image_size=32, depth=1, num_classes=2, seed=3)
    result = run_retrain(data, {"genotype": ALL_OPS}, RetrainConfig(epochs=1, image_size=32, batch_size=2),
                         root / "run")
    return data, result.best_checkpoint


@pytest.fixture(scope="module")
def bundled(trained, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "bundle.zip"
    listed = json.loads(run("bundle", "--checkpoint", str(trained[1]), "--out", str(out), "--json").stdout)
    assert listed == {"bundle": str(out), "members": ["model.pt", "genotype.json", "preprocessing.json",
                                                      "model.onnx", "MODEL_CARD.md"]}
    return out


def test_export_cli_writes_onnx_and_reports_parity(trained, tmp_path):
    _, best = trained
    report = json.loads(run("export", "--checkpoint", str(best), "--onnx", str(tmp_path / "m.onnx"), "--json").stdout)
    assert set(report) == {"onnx", "max_abs_diff", "opset", "inputs", "outputs"}
    assert report["onnx"] == str(tmp_path / "m.onnx") and report["opset"] == 17
    assert 0 <= report["max_abs_diff"] < 1e-4
    assert report["inputs"][0]["name"] == "image" and report["inputs"][0]["shape"] == ["batch", 1, 32, 32]
    assert report["outputs"][0]["name"] == "logits" and report["outputs"][0]["shape"] == ["batch", 2, 32, 32]
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(props[METADATA_KEY])["class_names"] == ["background", "organ_1"]

    text = run("export", "--checkpoint", str(best), "--onnx", str(tmp_path / "s.onnx"), "--image-size", "24",
               "--opset", "13").stdout
    assert "max |difference| of the logits" in text and "at 24x24, opset 13" in text
    assert onnx.load(str(tmp_path / "s.onnx")).opset_import[0].version == 13


def test_export_cli_dynamic_size_runs_at_other_sizes(trained, tmp_path):
    _, best = trained
    report = json.loads(run("export", "--checkpoint", str(best), "--onnx", str(tmp_path / "d.onnx"),
                            "--dynamic-size", "--json").stdout)
    assert report["inputs"][0]["shape"] == ["batch", 1, "height", "width"]
    assert report["outputs"][0]["shape"] == ["batch", 2, "height", "width"]
    assert 0 <= report["max_abs_diff"] < 1e-4
    text = run("export", "--checkpoint", str(best), "--onnx", str(tmp_path / "e.onnx"),
               "--dynamic-size").stdout
    assert "at 32x32 and 35x37, opset 17" in " ".join(text.split())  # checked at a second, odd size too
    session = ort.InferenceSession(str(tmp_path / "d.onnx"), providers=["CPUExecutionProvider"])
    model, _ = load_model(best)
    for shape in ((2, 1, 32, 32), (1, 1, 19, 52)):
        x = torch.randn(*shape)
        (got,) = session.run(["logits"], {"image": x.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(got, model(x).numpy(), atol=1e-4, rtol=0)


def test_export_cli_errors_are_messages(tmp_path):
    proc = run("export", "--checkpoint", str(tmp_path / "nope.pt"), "--onnx", str(tmp_path / "m.onnx"), check=False)
    assert proc.returncode == 2 and "nope.pt does not exist" in proc.stderr
    (tmp_path / "x.pt").write_bytes(b"")
    proc = run("export", "--checkpoint", str(tmp_path / "x.pt"), check=False)
    assert proc.returncode == 2 and "give --onnx FILE, --monai-bundle DIR or both" in proc.stderr


def test_bundle_holds_weights_genotype_preprocessing_onnx_and_card(trained, bundled):
    _, best = trained
    state = load_checkpoint(best)
    with zipfile.ZipFile(bundled) as zf:
        card = zf.read("MODEL_CARD.md").decode()
        assert json.loads(zf.read("genotype.json")) == ALL_OPS
        onnx.checker.check_model(onnx.load_from_string(zf.read("model.onnx")))
    pre = read_json(bundled)
    assert (pre["image_size"], pre["in_channels"], pre["num_classes"]) == ([32, 32], 1, 2)
    assert pre["normalisation"] == state["normalisation"] and pre["class_names"] == ["background", "organ_1"]
    assert pre["channel_names"] == state["channel_names"]
    inner = load_checkpoint(bundled)  # the checkpoint member, read in place
    assert not {"optimizers", "schedulers", "rng"} & set(inner)
    assert all(torch.equal(inner["model"][k], v) for k, v in state["model"].items())

    assert f"{state['params']:,}" in card and "SYNTHETIC: yes" in card and "SYNTHETIC phantom" in card
    for case in state["metrics"]["per_case"]:
        assert f"| {case['case_id']} | {case['dsc']['1']:.4f} |" in card
    organ = state["metrics"]["classes"]["organ_1"]
    assert f"| organ_1 | 1 | {organ['dsc_mean']:.4f} |" in card
    assert "max |difference| of the logits" in card and "thrifty-nas predict --checkpoint bundle.zip" in card
    for key, value in state["config"].items():
        assert f"| {key} | {value} |" in card


def test_a_bundle_loads_and_predicts_like_its_checkpoint(trained, bundled, tmp_path):
    data, best = trained
    assert is_bundle(bundled) and not is_bundle(best)  # a torch checkpoint is a zip too
    model_pt, _ = load_model(best)
    model_zip, meta = load_model(bundled)
    assert meta["class_names"] == ["background", "organ_1"]
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model_pt(x), model_zip(x))

    expected = predict_paths(best, data / "imagesTr", tmp_path / "pt", device="cpu")
    run("predict", "--checkpoint", str(bundled), "--input", str(data / "imagesTr"), "--output", str(tmp_path / "zip"))
    assert len(expected) == 4
    for path in expected:
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "zip" / path.name)))
        np.testing.assert_array_equal(a, b)


def test_a_failed_export_still_bundles_and_says_why(trained, tmp_path, monkeypatch):
    _, best = trained

    def broken(*args, **kwargs):
        raise ExportError("ONNX parity check failed: differ by up to 3.000e-02")

    monkeypatch.setattr(bundle_module, "export_checkpoint", broken)
    (tmp_path / "model.onnx").write_bytes(b"stale")
    out = make_bundle(best, tmp_path / "b.zip", onnx_out=tmp_path / "model.onnx")
    with zipfile.ZipFile(out) as zf:
        assert "model.onnx" not in zf.namelist() and CHECKPOINT_MEMBER in zf.namelist()
        card = zf.read("MODEL_CARD.md").decode()
    assert "No `model.onnx` in this bundle: the export failed (ExportError: ONNX parity check failed" in card
    assert not (tmp_path / "model.onnx").exists()


def test_a_search_checkpoint_is_not_bundled(tmp_path):
    path = save_checkpoint({"kind": "search", "architecture": {"supernet": {}}}, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match="retrain its genotype"):
        make_bundle(path, tmp_path / "b.zip")
    with pytest.raises(CheckpointError, match="retrain its genotype"):
        export_checkpoint(path, tmp_path / "m.onnx")
    assert not (tmp_path / "b.zip").exists()
