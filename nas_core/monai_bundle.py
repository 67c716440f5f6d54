"""MONAI bundles: a trained model in the layout MONAI's bundle tools read, with no Thrifty NAS code.

A folder::

    configs/metadata.json    MONAI's bundle metadata (schema meta_schema_20240725): versions, task,
                             network_data_format (inputs ``image``, outputs ``pred``), classes,
                             validation scores; ``thrifty_nas`` holds the full preprocessing
    configs/inference.json   a ``monai.bundle.ConfigParser`` config: ``network_def`` (the TorchScript
                             model via ``$torch.jit.load``), ``network``, ``inferer`` (2D batches),
                             ``slice_inferer`` (3D volumes slice by slice), ``preprocessing`` (read,
                             normalise, place in the training frame: MONAI transforms),
                             ``postprocessing`` (Invertd back to the case's grid, argmax, save) and
                             ``run`` for ``python -m monai.bundle run``
    models/model.ts          TorchScript (saved with MONAI's ``save_net_with_metadata``): any H and W
    models/model.onnx        ONNX with dynamic batch, height and width, checked with onnxruntime
    docs/README.md           the model card, with how to use the bundle

Both model files come from :func:`nas_core.portable.portable_module` and are checked against
the PyTorch network at the training size and at a second, odd size before anything is written.
The preprocessing is Thrifty's own (``nas_core.data.preprocess``: normalise, then place each slice
in the frame) as MONAI transforms; where MONAI's resampling differs a little (no antialiasing,
the frame's exact spacing rather than a whole number of pixels), ``docs/README.md`` says so.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nas_core.bundle import model_card, retrain_state
from nas_core.data.frame import Frame, as_hw
from nas_core.export import (
    DEFAULT_OPSET,
    METADATA_KEY,
    PARITY_BATCH,
    PARITY_TOLERANCE,
    ExportError,
    ExportReport,
    export_and_check,
    preprocessing,
    sample_input,
)
from nas_core.portable import portable_module, probe_size

log = logging.getLogger(__name__)

#: the schema MONAI's model-zoo bundles name; ``monai.bundle.verify_metadata`` downloads it
SCHEMA_URL = ("https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
              "meta_schema_20240725.json")
BUNDLE_VERSION = "0.1.0"
METADATA_FILE, CONFIG_FILE = "configs/metadata.json", "configs/inference.json"
TS_FILE, ONNX_FILE, README_FILE = "models/model.ts", "models/model.onnx", "docs/README.md"
FILES = (METADATA_FILE, CONFIG_FILE, TS_FILE, ONNX_FILE, README_FILE)
REFERENCES = [
    "Xu Y et al. PC-DARTS: Partial Channel Connections for Memory-Efficient Architecture Search. ICLR 2020.",
    "Isensee F et al. nnU-Net: a self-configuring method for deep learning-based biomedical image "
    "segmentation. Nature Methods 18, 203-211 (2021).",
]


@dataclass(frozen=True)
class MonaiBundle:
    """What :func:`write_monai_bundle` wrote and how closely its models reproduce PyTorch."""

    root: Path
    torchscript_max_abs_diff: float
    onnx: ExportReport
    checked_sizes: tuple[tuple[int, int], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"root": str(self.root), "files": list(FILES),
                "torchscript_max_abs_diff": self.torchscript_max_abs_diff,
                "onnx_max_abs_diff": self.onnx.max_abs_diff,
                "checked_sizes": [list(s) for s in self.checked_sizes]}

    def describe(self) -> str:
        sizes = " and ".join(f"{h}x{w}" for h, w in self.checked_sizes)
        return (f"TorchScript vs PyTorch: max |difference| of the logits "
                f"{self.torchscript_max_abs_diff:.2e}; ONNX: {self.onnx.max_abs_diff:.2e} "
                f"(tolerance {self.onnx.tolerance:.0e}; batch of "
                f"{PARITY_BATCH} at {sizes})")


def _versions() -> dict[str, str]:
    import monai

    return {"monai_version": monai.__version__, "pytorch_version": torch.__version__.split("+")[0],
            "numpy_version": np.__version__}


def _class_list(names: list[str]) -> str:
    return ", ".join(f"{i} {name}" for i, name in enumerate(names))


def _tensor(num_channels: int, names: list[str], fmt: str, value_range: list[float]) -> dict[str, Any]:
    """One entry of ``network_data_format``: 2D, any height and width (the network pads internally)."""
    return {"type": "image", "format": fmt, "num_channels": num_channels, "spatial_shape": ["*", "*"],
            "dtype": "float32", "value_range": value_range, "is_patch_data": False,
            "channel_def": {str(i): name for i, name in enumerate(names)}}


def bundle_metadata(state: dict[str, Any], torchscript_diff: float, onnx: ExportReport) -> dict[str, Any]:
    """``configs/metadata.json``: the fields of MONAI's bundle schema, from a retrain checkpoint."""
    ds, norm = state.get("dataset", {}), state["normalisation"]
    classes, channels = list(state.get("class_names", [])), list(state.get("channel_names", []))
    arch = state["architecture"]
    kind = arch.get("baseline") or f"Thrifty NAS (PC-DARTS genotype, C={arch['genotype']['C']})"
    synthetic = " Trained on SYNTHETIC images, not patients: its scores say nothing clinical." \
        if ds.get("synthetic") else ""
    frame = Frame.from_meta(state)
    metrics = state.get("metrics", {})
    scores = {"mean_dice": metrics.get("mean_dsc"), "mean_iou": metrics.get("mean_iou")}
    scores.update({f"dice_{name}": c.get("dsc_mean") for name, c in metrics.get("classes", {}).items()})
    return {
        "schema": SCHEMA_URL,
        "version": BUNDLE_VERSION,
        "changelog": {BUNDLE_VERSION: "exported by Thrifty NAS from a retrain checkpoint "
                                      f"(epoch {state.get('epoch')})"},
        **_versions(),
        "required_packages_version": {},
        "task": f"2D segmentation of {', '.join(classes[1:]) or 'foreground'} in {ds.get('modality', '?')} "
                f"images ({ds.get('name', 'an unnamed dataset')})",
        "description": f"{kind} network, {state.get('params', 0):,} trainable parameters, trained slice by "
                       f"slice on {ds.get('name', '?')} in a {frame} frame with {norm['scheme']} "
                       "normalisation. "
                       f"The network takes any height and width (it pads internally).{synthetic}",
        "authors": "Thrifty NAS (architecture search and training); see docs/README.md",
        "copyright": "The owner of the training data and of this model; Thrifty NAS claims none",
        "data_source": f"{ds.get('name', '?')} ({ds.get('format', '?')} layout"
                       + ("; SYNTHETIC images, not patients)" if ds.get("synthetic") else ")"),
        "data_type": "itk",
        "image_classes": f"{len(channels)} channel(s) ({', '.join(channels) or '-'}), intensities "
                         f"normalised with {norm['scheme']}, 2D slices placed in a {frame} frame "
                         "(configs/inference.json#preprocessing; in words: thrifty_nas#preprocessing#steps)",
        "label_classes": _class_list(classes),
        "pred_classes": f"logits, one channel per class: {_class_list(classes)}; the argmax over channels "
                        "is the label",
        "eval_metrics": {k: v for k, v in scores.items() if v is not None},
        "intended_use": "Research only; validate on your own data before relying on it",
        "references": REFERENCES,
        "network_data_format": {
            "inputs": {"image": _tensor(state["in_channels"], channels, "magnitude",
                                        [0.0, 1.0] if norm["scheme"] == "ct_window" else [])},
            "outputs": {"pred": _tensor(state["num_classes"], classes, "segmentation", [])},
            "post_processed_outputs": {
                "pred": _tensor(1, [_class_list(classes)], "labels", [0, len(classes) - 1])},
        },
        "thrifty_nas": {"preprocessing": preprocessing(state), "architecture": arch,
                        "parity": {"torchscript_max_abs_diff": torchscript_diff,
                                   "onnx_max_abs_diff": onnx.max_abs_diff, "tolerance": onnx.tolerance}},
    }


#: MONAI reads a volume as [C, x, y, z], so a MONAI slice is [x, y]; Thrifty trained on slices as
#: [row (y), column (x)]: the network sees each MONAI slice transposed, and gives its logits back
SLICE_NETWORK = "$lambda x: @network(x.transpose(-2, -1)).transpose(-2, -1)"
#: Thrifty pads the placed slices with each channel's lowest value: pad with NaN, then fill it in
FILL_PADDING = ("$lambda x: torch.where(x.isnan(), x.nan_to_num(nan=float('inf')).flatten(1).amin(1)"
                ".view([-1] + [1] * (x.dim() - 1)), x)")
#: masks named as Thrifty's predict (and nnU-Net) name them: CASE.nii.gz for CASE_0000.nii.gz...
MASK_NAME = ("$lambda meta, saver: {'subject': os.path.basename(str(meta['filename_or_obj'])).replace('_0000.', '.'), "
             "'idx': meta.get('patch_index')}")
#: the cases ``run`` segments: nnU-Net's layout, CASE_0000.nii.gz, CASE_0001.nii.gz... in ``input_dir``
DATALIST = ("$[{{'image': [f[:-len('_0000.nii.gz')] + '_%04d.nii.gz' % c for c in range({channels})]}} "
            "for f in sorted(glob.glob(os.path.join(@input_dir, '*_0000.nii.gz')))]")


def _intensity_transforms(norm: dict[str, Any]) -> list[dict[str, Any]]:
    """The normalisation as MONAI dictionary transforms on ``image``, one channel-first case."""
    scheme, key = norm["scheme"], "image"
    if scheme == "zscore":  # per channel over the whole case, population std, as nnU-Net does
        return [{"_target_": "NormalizeIntensityd", "keys": key, "channel_wise": True}]
    if scheme == "ct_window":
        low, high = norm["window"]
        return [{"_target_": "ScaleIntensityRanged", "keys": key, "a_min": low, "a_max": high, "b_min": 0.0,
                 "b_max": 1.0, "clip": True}]
    if scheme == "ct_foreground":  # the training foreground's fixed percentiles (not this case's), mean, std
        lows, highs = ([float(c[i]) for c in norm["clip"]] for i in (0, 1))
        shape = "[-1] + [1] * (x.dim() - 1)"
        return [{"_target_": "Lambdad", "keys": key,
                 "func": f"$lambda x: x.clamp(min=torch.tensor({lows}).view({shape}), "
                         f"max=torch.tensor({highs}).view({shape}))"},
                {"_target_": "NormalizeIntensityd", "keys": key, "subtrahend": [float(m) for m in norm["mean"]],
                 "divisor": [max(float(s), 1e-8) for s in norm["std"]], "channel_wise": True}]
    if scheme == "none":
        return []
    raise ExportError(f"no MONAI transform for normalisation {scheme!r}")


def _placement_transforms(frame: Frame) -> list[dict[str, Any]]:
    """``Frame.place`` as MONAI transforms on [C, x, y, z]: every slice resampled to the frame's
    in-plane spacing (the slice axis kept), centred and padded to the frame with each channel's
    lowest value. ``scale_extent`` sizes and aligns the grid by the voxels' extent, as Thrifty's
    resampling (``align_corners=False``) does; Invertd undoes these steps on the logits."""
    rows, cols = frame.size
    steps: list[dict[str, Any]] = []
    if frame.spacing is not None:  # a pixdim <= 0 keeps that axis' own spacing
        steps.append({"_target_": "Spacingd", "keys": "image", "pixdim": [frame.spacing[1], frame.spacing[0], 0.0],
                      "mode": "bilinear", "scale_extent": True, "align_corners": True,
                      "dtype": "$torch.float32"})
    return [*steps,
            {"_target_": "SpatialPadd", "keys": "image", "spatial_size": [cols, rows, -1], "method": "symmetric",
             "mode": "constant", "value": "$float('nan')"},
            {"_target_": "Lambdad", "keys": "image", "func": FILL_PADDING}]


def inference_config(meta: dict[str, Any]) -> dict[str, Any]:
    """``configs/inference.json``: components MONAI's ConfigParser instantiates, and ``run`` for
    ``python -m monai.bundle run``: every case of ``input_dir`` through ``preprocessing`` (read,
    normalise, place in the training frame), the network slice by slice, and ``postprocessing``
    (back to the case's own grid, argmax, written to ``output_dir``). ``bundle_root`` is the bundle
    folder (``.`` when run from it; override it otherwise)."""
    frame = Frame.from_meta(meta)
    return {
        "imports": ["$import glob", "$import os", "$import numpy", "$import torch"],
        "bundle_root": ".",
        "input_dir": "$@bundle_root + '/input'",
        "output_dir": "$@bundle_root + '/eval'",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": "$torch.jit.load(@bundle_root + '/" + TS_FILE + "', map_location=@device)",
        "network": "$@network_def.to(@device).eval()",
        "slice_network": SLICE_NETWORK,
        "inferer": {"_target_": "SimpleInferer"},
        "slice_inferer": {"_target_": "SliceInferer", "roi_size": [-1, -1], "spatial_dim": 2,
                          "sw_batch_size": 16, "progress": False},
        "intensity": {"_target_": "Compose", "transforms": [
            {"_target_": "EnsureTyped", "keys": "image", "data_type": "tensor", "dtype": "$torch.float32"},
            *_intensity_transforms(meta["normalisation"])]},
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image", "image_only": True},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            "@intensity",
            *_placement_transforms(frame)]},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
             "nearest_interp": False, "to_tensor": True, "device": "cpu"},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "",
             "output_name_formatter": MASK_NAME, "output_dtype": "$numpy.uint8", "resample": False,
             "separate_folder": False, "print_log": False}]},
        "datalist": DATALIST.format(channels=meta["in_channels"]),
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "predict": "$torch.no_grad()(lambda d: @postprocessing(dict(d, pred=@slice_inferer("
                   "d['image'][None].to(@device), @slice_network)[0])))",
        "run": ["$[@predict(d) for d in @dataset]"],
    }


_USAGE = """This folder is a MONAI bundle: MONAI alone runs it, Thrifty NAS is not needed.

Segment every case of a folder laid out as nnU-Net's (`CASE_0000.nii.gz`, `CASE_0001.nii.gz`...: one file
per channel); each mask is written as `CASE.nii.gz` on the case's own grid:

```bash
python -m monai.bundle run --config_file configs/inference.json --meta_file configs/metadata.json \\
    --bundle_root . --input_dir /path/to/images --output_dir /path/to/masks
```

(MONAI's command line needs the `fire` package; from Python, `monai.bundle.run(config_file=...,
meta_file=..., bundle_root=..., input_dir=..., output_dir=...)` does the same.
`--datalist "[{{'image': ['a_0000.nii.gz', 'a_0001.nii.gz']}}]"` names the cases instead; add
`--device "\\$torch.device('cpu')"` to stay off the GPU.) `configs/inference.json` does what Thrifty NAS's own
`predict` does, with MONAI transforms:

- `preprocessing`: `LoadImaged` and `EnsureChannelFirstd` (the channel files stacked in order);
  `intensity`, the training's normalisation: {normalisation};
  the slices placed in the training frame: {placement}
- the network slice by slice (`slice_inferer` with `slice_network`: MONAI holds a volume as [C, x, y, z], the
  network was trained on [row, column] slices, so each slice is transposed on its way in and out);
- `postprocessing`: `Invertd` (the logits cut back to the case's region and resampled, bilinear, to its own
  grid), `AsDiscreted` (argmax) and `SaveImaged` (uint8, the case's geometry).

There is no `Orientationd`: Thrifty NAS trains on slices in the order the files store them, never
reoriented, so the bundle feeds them the same way.

What differs from Thrifty NAS's `predict`, so masks may differ at a few boundary pixels (its tests find the
same mask where a slice's extent is a whole number of frame pixels, and 97% or more of the voxels equal
otherwise): Thrifty smooths (antialiases) a slice it shrinks, `Spacingd` does not (and, for an image whose
origin lies within half a pixel of 0 mm, as synthetic images' often does, MONAI places a shrunk slice's grid
up to half a pixel off); `Spacingd` keeps the frame's spacing exactly where Thrifty stretches the slice to a
whole number of pixels (up to half a pixel at the far edge); and a slice larger than the frame is shrunk to
fit by Thrifty, but run at its full size here (the network takes any size).{no_spacing}

In your own loop:

```python
import torch
from monai.bundle import ConfigParser

parser = ConfigParser()
parser.read_config("configs/inference.json")
parser.read_meta("configs/metadata.json")
parser["bundle_root"] = "."             # this folder
preprocess, postprocess = (parser.get_parsed_content(k) for k in ("preprocessing", "postprocessing"))
network, inferer = parser.get_parsed_content("slice_network"), parser.get_parsed_content("slice_inferer")
item = preprocess({{"image": ["CASE_0000.nii.gz"]}})   # one file per channel
with torch.no_grad():
    item["pred"] = inferer(item["image"][None], network)[0]
postprocess(item)                       # writes <output_dir>/CASE.nii.gz
```

`network` itself takes 2D batches `[B, C, H, W]` already in the frame (`inferer`). Check it against the
metadata with MONAI's tool:
`python -m monai.bundle verify_net_in_out network --meta_file configs/metadata.json
--config_file configs/inference.json --bundle_root . --any 64`.

`models/model.ts` loads with `torch.jit.load` alone and `models/model.onnx` with ONNX Runtime; both take
`[batch, C, H, W]` float32 of any H and W. `metadata.json` (`thrifty_nas` -> `preprocessing` -> `steps`)
describes the preprocessing in words, for other tools.
"""

_NORMALISATION_TEXT = {
    "zscore": "each channel z-scored over the whole case, `NormalizeIntensityd`",
    "ct_window": "the CT window mapped to [0, 1], `ScaleIntensityRanged`",
    "ct_foreground": "each channel clipped at the training foreground's 0.5 and 99.5 percentiles, then "
                     "z-scored with that foreground's mean and std, `Lambdad` and `NormalizeIntensityd`",
    "none": "none",
}


def _usage(meta: dict[str, Any]) -> str:
    """The "How to use it" text of ``docs/README.md``, with this checkpoint's frame and normalisation."""
    frame = Frame.from_meta(meta)
    (rows, cols), spacing = frame.size, frame.spacing
    pad = (f"`SpatialPadd` to {cols} x {rows} (x by y), centred, filled with each channel's lowest value "
           "(padded with NaN, then filled by a `Lambdad`);")
    if spacing is None:
        placement = pad
        no_spacing = (f"\n\nThis checkpoint's frame records no spacing: Thrifty NAS scales every slice to fill "
                      f"{rows} x {cols} with its aspect ratio kept, which no MONAI transform does per case, so "
                      "the bundle runs each slice at its own size (padded up to the frame); resample your slices "
                      "to about that size first to get Thrifty's results.")
    else:
        placement = (f"`Spacingd` to the frame's in-plane spacing, {spacing[1]:.4g} x {spacing[0]:.4g} mm (x by "
                     f"y; the slice axis kept), then {pad}")
        no_spacing = ""
    return _USAGE.format(normalisation=_NORMALISATION_TEXT[meta["normalisation"]["scheme"]],
                         placement=placement, no_spacing=no_spacing)


@torch.no_grad()
def torchscript_parity(model: nn.Module, scripted: torch.jit.ScriptModule, in_channels: int,
                       sizes: list[tuple[int, int]], normalisation: dict[str, Any] | None = None) -> float:
    """Largest absolute difference between the eager and the TorchScript logits over ``sizes``."""
    diff = 0.0
    for size in sizes:
        x = sample_input(in_channels, size, normalisation)
        diff = max(diff, float((model(x) - scripted(x)).abs().max()))
    return diff


def _replace_folder(new: Path, out: Path) -> None:
    """Put the finished bundle ``new`` at ``out``; an earlier bundle there is replaced, other content
    refused (a wrong --monai-bundle must not wipe a folder)."""
    if out.exists() and any(out.iterdir()):
        if not (out / METADATA_FILE).is_file():
            raise FileExistsError(f"{out} exists and is not a MONAI bundle; choose an empty or new folder")
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(new, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        if out.exists():
            out.rmdir()
        os.replace(new, out)


def write_monai_bundle(checkpoint: str | Path, out: str | Path, *, opset: int = DEFAULT_OPSET,
                       tolerance: float = PARITY_TOLERANCE) -> MonaiBundle:
    """Write a retrain checkpoint (or bundle zip) as a MONAI bundle folder at ``out``.

    Nothing appears at ``out`` unless both the TorchScript and the ONNX model reproduce the
    PyTorch logits within ``tolerance`` at the training size and at a second, odd size
    (ExportError otherwise); a bundle already at ``out`` is replaced.
    """
    from monai.data import save_net_with_metadata

    from nas_core.checkpoint import load_model

    out = Path(out)
    state = retrain_state(checkpoint)
    model, meta = load_model(checkpoint, "cpu")
    size, channels, norm = as_hw(Frame.from_meta(meta).size), meta["in_channels"], meta["normalisation"]
    sizes = [size, probe_size(size)]
    scripted = portable_module(model, channels, size)
    ts_diff = torchscript_parity(model, scripted, channels, sizes, norm)
    if ts_diff > tolerance:
        raise ExportError(f"TorchScript parity check failed: its logits differ from PyTorch's by up to "
                          f"{ts_diff:.3e} (tolerance {tolerance:.0e})")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        root = Path(tmp) / "bundle"
        for folder in ("configs", "models", "docs"):
            (root / folder).mkdir(parents=True)
        report = export_and_check(model, root / ONNX_FILE, channels, size, opset, tolerance, norm,
                                  metadata={METADATA_KEY: json.dumps(preprocessing(meta))}, dynamic_size=True)
        metadata = bundle_metadata(state, ts_diff, report)
        config = inference_config(meta)
        with warnings.catch_warnings():  # torch.jit.save is deprecated; MONAI bundles still use TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            save_net_with_metadata(scripted, str(root / TS_FILE), meta_values=metadata,
                                   more_extra_files={"inference.json": json.dumps(config).encode()})
        (root / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
        (root / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        result = MonaiBundle(out, ts_diff, replace(report, onnx=out / ONNX_FILE), tuple(sizes))
        card = model_card(state, report, usage=f"{_usage(meta)}\nParity: {result.describe()}.\n")
        (root / README_FILE).write_text(card)
        _replace_folder(root, out)
    log.info("wrote MONAI bundle %s; %s", out, result.describe())
    return result
