"""ONNX export of a trained network, checked against PyTorch with onnxruntime.

The graph takes ``image`` ``[B, C, H, W]`` (float32, normalised as in training) and returns
``logits`` ``[B, K, H, W]``; the batch axis is dynamic. By default the spatial size is fixed at
export (the checkpoint's image size unless told otherwise), so the pad-and-crop of
:class:`~nas_core.padding.PadToMultiple` is baked in as constants. With ``dynamic_size`` the
network goes through :func:`nas_core.portable.portable_module` first (the pad-and-crop scripted),
H and W are dynamic axes too, and the parity check runs at a second, odd size as well.

The exporter is torch's TorchScript-based one (``dynamo=False``): the torch.export-based
default needs ``onnxscript``, which this project does not install. The trace runs at
batch 1 and the parity check at batch 2, so a batch size frozen into the graph fails it.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nas_core.checkpoint import load_model
from nas_core.data.frame import Frame, as_hw
from nas_core.io import atomic_write_bytes

Size = int | tuple[int, int] | list[int]

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
PARITY_TOLERANCE = 1e-4
PARITY_BATCH = 2
INPUT_NAME, OUTPUT_NAME = "image", "logits"
METADATA_KEY = "thrifty_nas.preprocessing"


class ExportError(ValueError):
    """The network could not be exported, or the ONNX graph disagrees with PyTorch."""


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote and how closely onnxruntime reproduces PyTorch."""

    onnx: Path
    max_abs_diff: float
    opset: int
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    image_size: tuple[int, int]
    tolerance: float = PARITY_TOLERANCE
    batch: int = PARITY_BATCH
    onnxruntime: str = field(default="")
    #: further sizes the parity was checked at (a dynamic-size export's second size)
    also_checked: tuple[tuple[int, int], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"onnx": str(self.onnx), "max_abs_diff": self.max_abs_diff, "opset": self.opset,
                "inputs": self.inputs, "outputs": self.outputs}

    def describe(self) -> str:
        """One line for people: the parity figure and what it was measured on."""
        sizes = " and ".join(f"{h}x{w}" for h, w in (self.image_size, *self.also_checked))
        return (f"onnxruntime {self.onnxruntime} vs PyTorch: max |difference| of the logits "
                f"{self.max_abs_diff:.2e} (tolerance {self.tolerance:.0e}) on a batch of {self.batch} "
                f"at {sizes}, opset {self.opset}")


def _runtime() -> Any:
    try:
        import onnx  # noqa: F401  (needed by the exporter)
        import onnxruntime
    except ImportError as exc:
        raise ExportError(f"ONNX export needs the onnx and onnxruntime packages ({exc}); "
                          "install them: pip install onnx onnxruntime") from None
    return onnxruntime


def sample_input(in_channels: int, image_size: Size, normalisation: dict[str, Any] | None = None,
                 batch: int = PARITY_BATCH, seed: int = 0) -> torch.Tensor:
    """A deterministic input in the range the network sees after normalisation:
    [0, 1] for a CT window, zero-mean unit-variance otherwise. ``[batch, C, H, W]``."""
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, in_channels, *as_hw(image_size))
    if (normalisation or {}).get("scheme") == "ct_window":
        return torch.rand(shape, generator=gen)
    return torch.randn(shape, generator=gen)


def export_module(model: nn.Module, out: Path | str, in_channels: int, image_size: Size,
                  opset: int = DEFAULT_OPSET, metadata: dict[str, str] | None = None,
                  dynamic_size: bool = False) -> Path:
    """Write ``model`` (eval mode) as ONNX to ``out``, atomically; dynamic batch axis.

    Args:
        model: maps ``[B, in_channels, H, W]`` to ``[B, K, H, W]`` logits.
        out: the ``.onnx`` file to write (its folder is created).
        in_channels, image_size: C and S (or [H, W]) of the traced input.
        opset: ONNX opset version for the exporter.
        metadata: extra string key/values stored in the model's ``metadata_props``.
        dynamic_size: H and W dynamic too (``model`` is made portable first, see
            :func:`nas_core.portable.portable_module`); else they are fixed at ``image_size``.
    """
    _runtime()
    import onnx

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_size else {0: "batch"}
    if dynamic_size:
        from nas_core.portable import portable_module

        model = portable_module(model, in_channels, image_size)
    dummy = sample_input(in_channels, image_size, batch=1)
    with tempfile.TemporaryDirectory(prefix="onnx-") as scratch:
        tmp = str(Path(scratch) / "model.onnx")
        with warnings.catch_warnings(), torch.no_grad():
            # shape checks in forward() become constants: the spatial size is fixed by design
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
            try:
                torch.onnx.export(model, (dummy,), tmp, dynamo=False, opset_version=opset,
                                  input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                  dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
                                  do_constant_folding=True)
            except Exception as exc:  # the exporter raises many types (unsupported op, bad opset...)
                raise ExportError(f"torch.onnx.export failed at opset {opset}: "
                                  f"{exc.__class__.__name__}: {exc}") from exc
        proto = onnx.load(tmp)
    if not dynamic_size:
        _fix_spatial_dims(proto, image_size)
    onnx.checker.check_model(proto)
    if metadata:
        onnx.helper.set_model_props(proto, metadata)
    atomic_write_bytes(out, proto.SerializeToString())
    return out


def _fix_spatial_dims(proto: Any, image_size: Size) -> None:
    """Declare the logits' fixed H and W (the tracer names the crop's output dims symbolically)."""
    for value in proto.graph.output:
        dims = value.type.tensor_type.shape.dim
        for dim, side in zip(list(dims)[2:], as_hw(image_size), strict=False):
            dim.dim_value = side


def _io(values: list[Any]) -> list[dict[str, Any]]:
    return [{"name": v.name, "shape": list(v.shape), "dtype": v.type} for v in values]


@torch.no_grad()
def check_parity(model: nn.Module, onnx_path: Path | str, sample: torch.Tensor) -> tuple[float, Any]:
    """Largest absolute difference between PyTorch's and onnxruntime's logits on ``sample``.

    Returns ``(max_abs_diff, session)``.
    """
    ort = _runtime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    model.eval()
    device = next(model.parameters()).device
    expected = model(sample.to(device)).float().cpu().numpy()
    (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: sample.cpu().numpy().astype(np.float32)})
    if got.shape != expected.shape:
        raise ExportError(f"onnxruntime returned logits of shape {got.shape}, PyTorch {expected.shape}")
    diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
    if not np.isfinite(diff):
        raise ExportError("onnxruntime or PyTorch returned non-finite logits on the parity sample")
    return diff, session


def export_and_check(model: nn.Module, out: Path | str, in_channels: int, image_size: Size,
                     opset: int = DEFAULT_OPSET, tolerance: float = PARITY_TOLERANCE,
                     normalisation: dict[str, Any] | None = None,
                     metadata: dict[str, str] | None = None, dynamic_size: bool = False) -> ExportReport:
    """Export ``model`` and check onnxruntime against it on a batch of 2 (at ``image_size``, and with
    ``dynamic_size`` at a second, odd size too); ExportError (naming the measured difference, the file
    removed) when the largest absolute difference exceeds ``tolerance``."""
    from nas_core.portable import probe_size

    ort = _runtime()
    out = export_module(model, out, in_channels, image_size, opset, metadata, dynamic_size)
    sizes = [as_hw(image_size), *([probe_size(image_size)] if dynamic_size else [])]
    diffs = {}
    try:
        for size in sizes:
            diffs[size], session = check_parity(model, out, sample_input(in_channels, size, normalisation))
            if diffs[size] > tolerance:
                raise ExportError(f"ONNX parity check failed: onnxruntime's logits differ from PyTorch's by "
                                  f"up to {diffs[size]:.3e} (tolerance {tolerance:.0e}) on a batch of "
                                  f"{PARITY_BATCH} at {size[0]}x{size[1]}, opset {opset}")
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    report = ExportReport(out, max(diffs.values()), opset, _io(session.get_inputs()),
                          _io(session.get_outputs()), sizes[0], tolerance, PARITY_BATCH, ort.__version__,
                          tuple(sizes[1:]))
    log.info("exported %s; %s", out, report.describe())
    return report


def preprocessing(meta: dict[str, Any], image_size: Size | None = None) -> dict[str, Any]:
    """What a caller must do to an image before the network (and after), from checkpoint metadata.

    ``image_size``: the slice size [H, W] the caller feeds (an ONNX graph's fixed size); the
    training frame's by default.
    """
    frame = Frame.from_meta(meta)
    h, w = as_hw(image_size) if image_size is not None else frame.size
    spacing = "" if frame.spacing is None or image_size is not None else (
        f" at {frame.spacing[0]:.4g}x{frame.spacing[1]:.4g} mm per pixel")
    return {
        "image_size": [h, w],
        "trained_image_size": list(frame.size),
        "frame": frame.to_dict(),
        "in_channels": meta["in_channels"],
        "channel_names": list(meta.get("channel_names", [])),
        "normalisation": meta["normalisation"],
        "num_classes": meta["num_classes"],
        "class_names": list(meta.get("class_names", [])),
        "input": {"name": INPUT_NAME, "layout": "NCHW", "dtype": "float32",
                  "shape": ["batch", meta["in_channels"], h, w]},
        "output": {"name": OUTPUT_NAME, "layout": "NCHW", "dtype": "float32",
                   "shape": ["batch", meta["num_classes"], h, w]},
        "steps": [
            "normalise the whole case with `normalisation` (zscore: per channel over the case; "
            "ct_foreground: clip each channel to `clip`, subtract `mean`, divide by `std`; "
            "ct_window: clip to the window (HU) and map it to [0, 1]; none: as is)",
            f"resample every 2D slice (bilinear, antialiased) with its aspect ratio kept{spacing}, shrinking it "
            f"if needed to fit {h}x{w}; centre it and pad it to {h}x{w} with each channel's lowest value; "
            "channels stacked as C",
            "run the network; cut the logits to the region the slice occupies and resample them "
            "(bilinear) to the slice's own size",
            "the label of a pixel is the argmax over the logits' class axis (1)",
        ],
    }


def export_checkpoint(checkpoint: Path | str, out: Path | str, image_size: Size | None = None,
                      opset: int = DEFAULT_OPSET, tolerance: float = PARITY_TOLERANCE,
                      dynamic_size: bool = False) -> ExportReport:
    """Export the network of a retrain checkpoint (or bundle) to ONNX with a parity check.

    ``image_size`` defaults to the checkpoint's (with ``dynamic_size``: the size the parity is
    checked at first; the graph takes any H and W); the graph stores the preprocessing in its
    metadata under ``thrifty_nas.preprocessing``.
    """
    model, meta = load_model(checkpoint, "cpu")
    size = Frame.from_meta(meta).size if image_size is None else as_hw(image_size)
    if min(size) < 1:
        raise ExportError(f"image size must be >= 1 pixel, got {list(size)}")
    recipe = preprocessing(meta, None if dynamic_size else size)
    return export_and_check(model, out, meta["in_channels"], size, opset, tolerance, meta["normalisation"],
                            metadata={METADATA_KEY: json.dumps(recipe)}, dynamic_size=dynamic_size)
