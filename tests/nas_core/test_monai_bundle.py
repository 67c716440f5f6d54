"""MONAI bundles: written by `thrifty-nas export --monai-bundle`, read and run by MONAI alone.

The central tests run MONAI's own bundle tools in a separate interpreter that cannot import
any Thrifty NAS code (``-I -S``: no repo on the path, no editable-install hook; only the
environment's site-packages). One compares what MONAI computes with the PyTorch network of the
checkpoint: 1e-4 absolute on the logits (float32; the measured gap is ~1e-7). The other runs the
bundle (``monai.bundle.run``: read, normalise, place in the frame, infer, invert, save) on
non-square cases whose spacing differs from the frame's and compares the masks with Thrifty's own
``predict``: identical where a slice's extent is a whole number of frame pixels (measured 100%),
at least 97% of the voxels equal otherwise (measured 98.9% and 98.3%).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import SimpleITK as sitk
import torch

from nas_core.checkpoint import load_checkpoint, load_model
from nas_core.config import RetrainConfig
from nas_core.data import Normalisation, make_phantom_dataset, normalise
from nas_core.inference import predict_paths
from nas_core.models import build_model
from nas_core.monai_bundle import FILES, inference_config, write_monai_bundle
from nas_core.portable import portable_module
from nas_core.retrain import run_retrain

EXE = shutil.which("thrifty-nas", path=str(Path(sys.executable).parent)) or "thrifty-nas"
TOLERANCE = 1e-4
#: small, every family of ops, depth 3 (inputs padded to multiples of 8)
GENOTYPE = {"version": 1, "C": 8, "depth": 3, "nodes": 2,
            "dn": [["conv_3x3", 0], ["max_pool", 1], ["sep_conv_3x3", 0], ["dil_conv_3x3", 2]],
            "up": [["up_conv", 1], ["skip", 0], ["conv_3x3", 2], ["skip", 1]]}
#: MONAI's bundle schema (meta_schema_20240725.json): the fields it requires, and their JSON types
SCHEMA_REQUIRED = {"schema": str, "version": str, "monai_version": str, "pytorch_version": str,
                   "numpy_version": str, "required_packages_version": dict, "task": str, "description": str,
                   "authors": str, "copyright": str, "network_data_format": dict}
TENSOR_REQUIRED = {"type", "format", "num_channels", "spatial_shape", "dtype", "value_range"}

#: runs in an interpreter without Thrifty NAS: argv = site-packages, bundle folder, work folder
MONAI_SIDE = r'''
import json, os, sys
site, bundle, work = sys.argv[1:4]
sys.path.append(site)  # plain path: no .pth file runs, so no editable-install hook either
try:
    import nas_core  # noqa: F401
    importable = True
except ImportError:
    importable = False
import numpy as np
import torch
from monai.bundle import ConfigParser, load, verify_net_in_out

meta_file, config_file = (os.path.join(bundle, "configs", f) for f in ("metadata.json", "inference.json"))
parser = ConfigParser()
parser.read_config(config_file)
parser.read_meta(meta_file)
parser["bundle_root"] = bundle
parser["device"] = "$torch.device('cpu')"
network = parser.get_parsed_content("network")
inferer, slices = parser.get_parsed_content("inferer"), parser.get_parsed_content("slice_inferer")
intensity = parser.get_parsed_content("intensity")
inputs = np.load(os.path.join(work, "inputs.npz"))
out = {}
with torch.no_grad():
    for key in ("frame", "odd"):
        out[key] = inferer(torch.from_numpy(inputs[key]), network).numpy()
    out["volume"] = slices(torch.from_numpy(inputs["volume"]), network).numpy()
out["pre"] = np.asarray(intensity({"image": inputs["raw"]})["image"])
for size in (1, 37):  # 1x1 and 37x37 inputs, from the metadata's shapes
    verify_net_in_out(net_id="network", meta_file=meta_file, config_file=config_file, bundle_root=bundle,
                      device="cpu", any=size)
ts, ts_meta, _ = load(name=os.path.basename(bundle), bundle_dir=os.path.dirname(bundle), load_ts_module=True,
                      device="cpu")
np.savez(os.path.join(work, "outputs.npz"), **out)
report = {"importable": importable, "loaded": sorted(m for m in sys.modules if m.split(".")[0] == "nas_core"),
          "network": type(network).__name__, "ts_task": ts_meta.get("task"),
          "pred_channels": parser.get("_meta_#network_data_format#outputs#pred#num_channels")}
with open(os.path.join(work, "report.json"), "w") as fh:
    json.dump(report, fh)
'''


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A 1-epoch retrain on a SYNTHETIC phantom: 2 channels, 3 classes."""
    root = tmp_path_factory.mktemp("monai")
    data = make_phantom_dataset(root / "phantom", num_cases=4, image_size=32, depth=1, num_classes=3,
                                channels=2, seed=5)
    return run_retrain(data, {"genotype": GENOTYPE}, RetrainConfig(epochs=1, image_size=32, batch_size=2),
                       root / "run").best_checkpoint


@pytest.fixture(scope="module")
def bundle(trained, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("monai_bundle") / "thrifty_phantom"
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run([EXE, "export", "--checkpoint", str(trained), "--monai-bundle", str(out), "--json"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    written = json.loads(proc.stdout)["monai_bundle"]
    assert written["files"] == list(FILES) and written["checked_sizes"] == [[32, 32], [35, 37]]
    assert written["torchscript_max_abs_diff"] < TOLERANCE and written["onnx_max_abs_diff"] < TOLERANCE
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(FILES)
    return out


def test_monai_alone_loads_and_runs_the_bundle_like_pytorch(trained, bundle, tmp_path):
    gen = torch.Generator().manual_seed(0)
    inputs = {"frame": torch.randn(2, 2, 32, 32, generator=gen),       # the training frame
              "odd": torch.randn(1, 2, 27, 45, generator=gen),         # another, odd, non-square size
              "volume": torch.randn(1, 2, 30, 41, 3, generator=gen),   # 3 slices along the last axis
              "raw": 300 * torch.rand(2, 30, 41, generator=gen) + 50}  # a case before normalisation
    np.savez(tmp_path / "inputs.npz", **{k: v.numpy() for k, v in inputs.items()})
    (tmp_path / "monai_side.py").write_text(MONAI_SIDE)
    site = sysconfig.get_paths()["purelib"]
    proc = subprocess.run([sys.executable, "-I", "-S", str(tmp_path / "monai_side.py"), site, str(bundle),
                           str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["importable"] is False and report["loaded"] == []  # no Thrifty NAS code took part
    assert report["network"] == "RecursiveScriptModule" and report["pred_channels"] == 3
    assert report["ts_task"] == json.loads((bundle / "configs/metadata.json").read_text())["task"]

    got = np.load(tmp_path / "outputs.npz")
    model, meta = load_model(trained)
    with torch.no_grad():
        for key in ("frame", "odd"):
            expected = model(inputs[key]).numpy()
            assert got[key].shape == expected.shape
            np.testing.assert_allclose(got[key], expected, atol=TOLERANCE, rtol=0)
        volume = inputs["volume"]
        per_slice = torch.stack([model(volume[..., i]) for i in range(volume.shape[-1])], dim=-1).numpy()
    np.testing.assert_allclose(got["volume"], per_slice, atol=TOLERANCE, rtol=0)
    ours = normalise(inputs["raw"].numpy(), Normalisation.from_dict(meta["normalisation"]))
    np.testing.assert_allclose(got["pre"], ours, atol=TOLERANCE, rtol=0)


#: runs MONAI's bundle runner in an interpreter without Thrifty NAS: argv = site-packages, bundle, images, masks
RUN_SIDE = r'''
import json, os, sys
site, bundle, images, masks = sys.argv[1:5]
sys.path.append(site)
from monai.bundle import run

run(config_file=os.path.join(bundle, "configs", "inference.json"),
    meta_file=os.path.join(bundle, "configs", "metadata.json"), bundle_root=bundle, input_dir=images,
    output_dir=masks, device="$torch.device('cpu')")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "nas_core")))
'''
#: away from 0 mm in-plane: MONAI's Spacingd misplaces a shrunk grid by up to half a pixel at origin 0
ORIGIN = (-100.3, -120.7, 30.0)
#: case: (size x, y in pixels, spacing x, y in mm, least share of voxels equal to Thrifty's mask). The
#: training frame is 32 x 32 at 1 x 1 mm and the cases hold about 25 x 30 mm of the phantom.
CASES = {
    "exact": ((20, 24), (1.3, 1.25), 0.999),    # upsampled to 26 x 30 frame pixels: the same grid (100%)
    "rounded": ((19, 25), (1.3, 1.25), 0.97),   # 24.7 x 31.25 -> 25 x 31: Thrifty stretches (98.9%)
    "finer": ((30, 36), (0.8, 0.75), 0.97),     # shrunk: only Thrifty antialiases (98.3%)
}


def _write_case(folder: Path, name: str, channels: list[np.ndarray], size: tuple[int, int],
                spacing: tuple[float, float]) -> None:
    """``channels`` ([D, 32, 32] at 1 mm) resampled to ``size`` pixels of ``spacing`` mm, as CASE_000c.nii.gz."""
    for c, volume in enumerate(channels):
        image = sitk.GetImageFromArray(volume.astype(np.float32))
        image.SetSpacing((1.0, 1.0, 2.0))
        image.SetOrigin(ORIGIN)
        case = sitk.Resample(image, [*size, volume.shape[0]], sitk.Transform(), sitk.sitkLinear, ORIGIN,
                             (*spacing, 2.0), image.GetDirection(), 0.0)
        sitk.WriteImage(case, str(folder / f"{name}_{c:04d}.nii.gz"))


def test_monai_runs_the_bundle_on_a_scan_as_thrifty_predicts_it(trained, bundle, tmp_path):
    """The whole recipe (normalise, place in the frame, infer slice by slice, back to the case's grid)
    as MONAI transforms, against ``nas_core.inference``'s predict on the same checkpoint and cases."""
    phantom = make_phantom_dataset(tmp_path / "phantom", num_cases=3, image_size=32, channels=2, seed=7)
    channels = [np.concatenate([sitk.GetArrayFromImage(sitk.ReadImage(str(
        phantom / "imagesTr" / f"phantom_{i:03d}_{c:04d}.nii.gz"))) for i in range(3)]) for c in range(2)]
    images = tmp_path / "images"
    images.mkdir()
    for name, (size, spacing, _) in CASES.items():
        _write_case(images, name, channels, size, spacing)

    predict_paths(trained, images, tmp_path / "thrifty", device="cpu")
    (tmp_path / "run_side.py").write_text(RUN_SIDE)
    proc = subprocess.run([sys.executable, "-I", "-S", str(tmp_path / "run_side.py"),
                           sysconfig.get_paths()["purelib"], str(bundle), str(images), str(tmp_path / "monai")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []  # no Thrifty NAS code took part

    assert sorted(p.name for p in (tmp_path / "monai").iterdir()) == sorted(f"{n}.nii.gz" for n in CASES)
    for name, (size, spacing, least) in CASES.items():
        ours = sitk.ReadImage(str(tmp_path / "thrifty" / f"{name}.nii.gz"))
        theirs = sitk.ReadImage(str(tmp_path / "monai" / f"{name}.nii.gz"))
        assert theirs.GetSize() == (*size, 3) and theirs.GetOrigin() == pytest.approx(ORIGIN)
        assert theirs.GetSpacing() == pytest.approx((*spacing, 2.0))
        a, b = sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(theirs)
        shares = np.bincount(a.ravel(), minlength=3) / a.size
        assert (shares >= 0.1).sum() >= 2, (name, shares)  # a mask with boundaries, not one class
        assert (a == b).mean() >= least, (name, (a == b).mean())


def test_the_onnx_model_takes_any_height_and_width(trained, bundle):
    session = ort.InferenceSession(str(bundle / "models/model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.shape for i in session.get_inputs()] == [["batch", 2, "height", "width"]]
    assert [o.shape for o in session.get_outputs()] == [["batch", 3, "height", "width"]]
    model, _ = load_model(trained)
    for shape in ((3, 2, 32, 32), (1, 2, 45, 27), (2, 2, 64, 17)):
        x = torch.randn(*shape)
        (got,) = session.run(["logits"], {"image": x.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(got, model(x).numpy(), atol=TOLERANCE, rtol=0)


def test_metadata_has_monai_schema_fields_and_the_checkpoint_facts(trained, bundle):
    meta = json.loads((bundle / "configs/metadata.json").read_text())
    for key, kind in SCHEMA_REQUIRED.items():
        assert isinstance(meta[key], kind), key
    state = load_checkpoint(trained)
    io = meta["network_data_format"]
    image, pred = io["inputs"]["image"], io["outputs"]["pred"]
    assert TENSOR_REQUIRED <= set(image) and TENSOR_REQUIRED <= set(pred)
    assert image["num_channels"] == 2 and image["spatial_shape"] == ["*", "*"] and image["dtype"] == "float32"
    assert list(image["channel_def"].values()) == state["channel_names"]
    assert pred["num_channels"] == 3 and list(pred["channel_def"].values()) == state["class_names"]
    assert meta["eval_metrics"]["mean_dice"] == state["metrics"]["mean_dsc"]
    assert meta["thrifty_nas"]["preprocessing"]["normalisation"] == state["normalisation"]
    assert "SYNTHETIC" in meta["description"] and "SYNTHETIC" in meta["data_source"]

    extra = {"metadata.json": ""}
    torch.jit.load(str(bundle / "models/model.ts"), _extra_files=extra)  # MONAI's layout: metadata inside
    assert json.loads(extra["metadata.json"])["network_data_format"] == io
    card = (bundle / "docs/README.md").read_text()
    assert card.startswith("# Model card") and f"{state['params']:,}" in card and "ConfigParser" in card
    assert "The batch, height and width axes are dynamic" in card and "TorchScript vs PyTorch" in card


def test_metadata_passes_monai_verify_metadata_given_the_schema(bundle):
    """MONAI's verify_metadata downloads the schema: offline, point MONAI_META_SCHEMA at a copy of
    meta_schema_20240725.json (and install jsonschema) to run it; otherwise this is skipped."""
    schema = os.environ.get("MONAI_META_SCHEMA")
    pytest.importorskip("jsonschema")
    if not schema or not Path(schema).is_file():
        pytest.skip("MONAI_META_SCHEMA names no schema file (its URL is not reachable offline)")
    from monai.bundle import verify_metadata

    verify_metadata(meta_file=str(bundle / "configs/metadata.json"), filepath=schema)


@pytest.mark.parametrize("norm", [
    {"scheme": "zscore", "window": None},
    {"scheme": "ct_window", "window": [-100.0, 200.0]},
    {"scheme": "ct_foreground", "window": None, "clip": [[-50.0, 300.0], [0.0, 100.0]], "mean": [40.0, 30.0],
     "std": [50.0, 20.0]},
    {"scheme": "none", "window": None},
])
def test_the_bundles_preprocessing_is_the_training_normalisation(norm):
    from monai.bundle import ConfigParser

    parser = ConfigParser(inference_config({"normalisation": norm, "image_size": 32, "in_channels": 2}))
    case = np.random.default_rng(0).normal(60, 120, (2, 3, 20, 24)).astype(np.float32)  # [C, D, H, W]
    got = np.asarray(parser.get_parsed_content("intensity")({"image": case})["image"])
    np.testing.assert_allclose(got, normalise(case, Normalisation.from_dict(norm)), atol=TOLERANCE, rtol=1e-5)



@pytest.mark.parametrize("spacing", [[0.5, 0.7], None])
def test_the_placement_follows_the_checkpoints_frame(spacing):
    """MONAI holds slices as [x, y], the frame is [rows (y), columns (x)]: sizes and spacings swap."""
    meta = {"frame": {"size": [32, 40], "spacing": spacing}, "image_size": [32, 40], "in_channels": 1,
            "normalisation": {"scheme": "zscore", "window": None}}
    steps = {t["_target_"]: t for t in inference_config(meta)["preprocessing"]["transforms"] if isinstance(t, dict)}
    assert steps["SpatialPadd"]["spatial_size"] == [40, 32, -1]
    if spacing is None:  # nothing to resample to: the slices keep their own size
        assert "Spacingd" not in steps
    else:
        assert steps["Spacingd"]["pixdim"] == [0.7, 0.5, 0.0] and steps["Spacingd"]["scale_extent"] is True

@pytest.mark.parametrize(("spec", "deep"), [({"genotype": GENOTYPE}, False), ({"baseline": "unet"}, False),
                                            ({"baseline": "unetpp"}, True)])
def test_the_portable_module_matches_the_network_at_any_size(spec, deep):
    model = build_model(spec, 1, 2, deep_supervision=deep).eval()
    scripted = portable_module(model, 1, 32)
    for size in ((32, 32), (21, 50), (5, 7), (1, 1)):
        x = torch.randn(2, 1, *size)
        with torch.no_grad():
            expected, got = model(x), scripted(x)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, atol=TOLERANCE, rtol=0)


def test_a_second_export_replaces_the_bundle_and_a_foreign_folder_is_refused(trained, tmp_path):
    out = tmp_path / "b"
    write_monai_bundle(trained, out)
    (out / "docs" / "stale.txt").write_text("from before")
    write_monai_bundle(trained, out)
    assert not (out / "docs" / "stale.txt").exists() and (out / "models" / "model.ts").is_file()
    assert not list(tmp_path.glob(".b*"))  # no temporary folder left beside it

    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"jpeg")
    with pytest.raises(FileExistsError, match="is not a MONAI bundle"):
        write_monai_bundle(trained, foreign)
    assert [p.name for p in foreign.iterdir()] == ["holiday.jpg"]
