"""Model bundles: one zip that takes a trained model home.

Members:

* ``model.pt``: the retrain checkpoint without its optimiser, scheduler and RNG state
  (weights, architecture, classes, normalisation, config, metrics); loads with
  ``nas_core.checkpoint.load_model``.
* ``genotype.json``: the searched architecture (absent for a baseline).
* ``preprocessing.json``: normalisation, image size, channel and class names, the
  network's input and output.
* ``model.onnx``: the network in ONNX, checked against PyTorch with onnxruntime (absent
  when the export failed; ``MODEL_CARD.md`` then says why).
* ``MODEL_CARD.md``: architecture, parameters, dataset, training, DSC per case and per
  class, ONNX parity, how to use it.

A bundle is recognised by its content (a zip holding ``model.pt`` and
``preprocessing.json``), not its name: ``load_checkpoint``/``load_model`` and
``thrifty-nas predict --checkpoint`` take one where they take a checkpoint. The member names and
that check live in ``nas_core.bundle_format``, which ``nas_core.checkpoint`` reads bundles with.
"""

from __future__ import annotations

import json
import logging
import tempfile
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

from nas_core.bundle_format import (
    CARD_MEMBER,
    CHECKPOINT_MEMBER,
    GENOTYPE_MEMBER,
    MEMBERS,
    ONNX_MEMBER,
    PREPROCESSING_MEMBER,
    REQUIRED,
    is_bundle,
)
from nas_core.checkpoint import CheckpointError, inference_architecture, load_checkpoint, save_checkpoint
from nas_core.data.frame import Frame
from nas_core.export import DEFAULT_OPSET, ExportReport, export_checkpoint, preprocessing
from nas_core.io import atomic_copy, atomic_write

log = logging.getLogger(__name__)

#: checkpoint entries a bundle leaves out: they only serve resuming the training
TRAINING_ONLY = ("optimizers", "schedulers", "rng")


def read_member(path: str | Path, name: str) -> bytes:
    """The bytes of one member of a bundle; CheckpointError naming what it holds if absent."""
    if not is_bundle(path):
        raise CheckpointError(f"{path} is not a model bundle (a zip with {sorted(REQUIRED)})")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        if name not in names:
            raise CheckpointError(f"bundle {path} has no {name!r}; it holds {sorted(names)}")
        return zf.read(name)


def read_json(path: str | Path, name: str = PREPROCESSING_MEMBER) -> dict[str, Any]:
    """A JSON member of a bundle (``preprocessing.json`` by default)."""
    return json.loads(read_member(path, name))


def extract_bundle(path: str | Path, dest: str | Path) -> Path:
    """Write the bundle's known members into folder ``dest``; return ``dest``."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if not is_bundle(path):
        raise CheckpointError(f"{path} is not a model bundle (a zip with {sorted(REQUIRED)})")
    with zipfile.ZipFile(path) as zf:
        for name in set(zf.namelist()) & set(MEMBERS):  # only our flat names: nothing escapes dest
            (dest / name).write_bytes(zf.read(name))
    return dest


def _write_zip(out: Path, members: list[tuple[str, Path | bytes]]) -> None:
    """Write ``members`` into ``out`` atomically; weights stored as is, text deflated."""
    def write(fh: BinaryIO) -> None:
        with zipfile.ZipFile(fh, "w") as zf:
            for name, data in members:
                method = zipfile.ZIP_STORED if isinstance(data, Path) else zipfile.ZIP_DEFLATED
                if isinstance(data, Path):
                    zf.write(data, name, compress_type=method)
                else:
                    zf.writestr(name, data, compress_type=method)

    atomic_write(out, write)


def _num(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def _architecture_lines(state: dict[str, Any]) -> list[str]:
    arch = state["architecture"]
    if "genotype" in arch:
        g = arch["genotype"]
        kind = f"Thrifty NAS network from a PC-DARTS genotype (C={g['C']}, depth {g['depth']}, {g['nodes']} nodes)"
    else:
        kind = {"unet": "U-Net baseline", "unetpp": "UNet++ baseline"}.get(arch.get("baseline"), str(arch))
    classes = ", ".join(f"{i} {name}" for i, name in enumerate(state.get("class_names", [])))
    h, w = Frame.from_meta(state).size
    lines = [f"- Architecture: {kind}", f"- Trainable parameters: {state.get('params', 0):,}",
             f"- Input `image`: float32 [batch, {state['in_channels']}, {h}, {w}] "
             f"(channels: {', '.join(state.get('channel_names', [])) or '-'})",
             f"- Output `logits`: float32 [batch, {state['num_classes']}, {h}, {w}]; "
             f"the label is the argmax over axis 1 ({classes})"]
    if "genotype" in arch:
        lines += ["", "Genotype (also in `genotype.json`):", "", "```json", json.dumps(arch["genotype"]), "```"]
    return lines


def _data_lines(state: dict[str, Any]) -> list[str]:
    ds = state.get("dataset", {})
    norm = state["normalisation"]
    window = f", window {norm['window']}" if norm.get("window") else ""
    return [f"- Dataset: {ds.get('name', '?')} (format {ds.get('format', '?')}, modality {ds.get('modality', '?')})",
            f"- SYNTHETIC: {'yes' if ds.get('synthetic') else 'no'}",
            f"- Cases: {len(ds.get('train_cases', []))} for training, {len(ds.get('held_out_cases', []))} "
            f"held out for validation ({', '.join(ds.get('held_out_cases', [])) or '-'})",
            f"- Preprocessing: {norm['scheme']} normalisation{window}; 2D slices placed in a "
            f"{Frame.from_meta(state)} frame, aspect ratio kept (see `preprocessing.json`)"]


def _training_lines(state: dict[str, Any]) -> list[str]:
    cfg = state.get("config", {})
    best = state.get("best", {})
    lines = [f"- Weights saved after epoch {state.get('epoch')} of {cfg.get('epochs', '?')}; best validation DSC "
             f"by then {_num(best.get('dsc'))} (epoch {best.get('epoch', '-')})",
             "", "| option | value |", "| --- | --- |"]
    return lines + [f"| {k} | {v} |" for k, v in cfg.items()]


def _results_lines(metrics: dict[str, Any]) -> list[str]:
    if not metrics.get("classes"):
        return ["No validation metrics are stored in this checkpoint."]
    lines = [f"Mean foreground DSC {_num(metrics.get('mean_dsc'))}, IoU {_num(metrics.get('mean_iou'))} "
             f"over {metrics.get('n_cases', 0)} validation case(s) (they chose this epoch), each scored at its "
             "own size: logits resampled (bilinear) to the scan, then argmax.", "", "DSC per class:", "",
             "| class | label | DSC mean | DSC std | IoU mean | cases |", "| --- | --- | --- | --- | --- | --- |"]
    classes = metrics["classes"]
    for name, c in classes.items():
        lines.append(f"| {name} | {c['label']} | {_num(c['dsc_mean'])} | {_num(c['dsc_std'])} | "
                     f"{_num(c['iou_mean'])} | {c['n']} |")
    labels = [(str(c["label"]), name) for name, c in classes.items()]
    lines += ["", "DSC per case:", "", "| case | " + " | ".join(name for _, name in labels) + " |",
              "| --- |" + " --- |" * len(labels)]
    for case in metrics.get("per_case", []):
        cells = " | ".join(_num(case["dsc"].get(label)) for label, _ in labels)
        lines.append(f"| {case['case_id']} | {cells} |")
    return lines


def _onnx_lines(report: ExportReport | None, error: str | None) -> list[str]:
    if report is None:
        return [f"No `model.onnx` in this bundle: the export failed ({error}).",
                "The PyTorch weights in `model.pt` are complete; retry with "
                "`thrifty-nas export --checkpoint bundle.zip --onnx model.onnx`."]
    shapes = lambda io: ", ".join(f"`{v['name']}` {v['shape']}" for v in io)  # noqa: E731
    dynamic = all(isinstance(side, str) for side in report.inputs[0]["shape"][2:])
    return [f"- `model.onnx`: opset {report.opset}; inputs {shapes(report.inputs)}; outputs {shapes(report.outputs)}",
            f"- Parity: {report.describe()}",
            "- The batch, height and width axes are dynamic; the network pads each slice internally and "
            "crops the logits back, but it was trained on the frame above: place slices in it as "
            "`preprocessing` says."
            if dynamic else "- The batch axis is dynamic; the spatial size is fixed at export."]


_USAGE = """With Thrifty NAS installed (the `thrifty-nas` command):

```bash
thrifty-nas predict --checkpoint bundle.zip --input scans/ --output masks/
thrifty-nas evaluate --checkpoint bundle.zip --data DATASET_FOLDER
```

In Python, `model, meta = nas_core.checkpoint.load_model("bundle.zip")` gives the network in eval
mode and its metadata.

With ONNX Runtime alone (no PyTorch), after preparing `x` as `preprocessing.json` says
(normalise the case, resize each slice, float32 [batch, C, S, S]):

```python
import onnxruntime as ort

session = ort.InferenceSession("model.onnx")
labels = session.run(["logits"], {"image": x})[0].argmax(axis=1)
```
"""


def model_card(state: dict[str, Any], report: ExportReport | None, error: str | None = None,
               usage: str = _USAGE) -> str:
    """MODEL_CARD.md of a retrain checkpoint's bundle (markdown); ``usage``: the "How to use it" text."""
    ds = state.get("dataset", {})
    name = {"unet": "U-Net", "unetpp": "UNet++"}.get(state["architecture"].get("baseline"), "Thrifty NAS network")
    title = f"# Model card: {name} for {ds.get('name', 'an unnamed dataset')}"
    warning = ("> **SYNTHETIC data**: trained and validated on generated images, not patients; these scores say "
               "nothing about clinical performance." if ds.get("synthetic") else
               "> Trained on real images. Research use only: validate on your own data before relying on it.")
    sections = [[title, "", warning], ["## Architecture", "", *_architecture_lines(state)],
                ["## Data", "", *_data_lines(state)], ["## Training", "", *_training_lines(state)],
                ["## Validation results (held-out cases)", "", *_results_lines(state.get("metrics", {}))],
                ["## ONNX export", "", *_onnx_lines(report, error)], ["## How to use it", "", usage.rstrip()],
                ["## Limitations", "", "- 2D, slice by slice; volumes are segmented one slice at a time.",
                 "- Scores come from the held-out cases above only; they are not a clinical validation."]]
    return "\n\n".join("\n".join(lines) for lines in sections) + "\n"


def retrain_state(checkpoint: str | Path) -> dict[str, Any]:
    """The state of a retrain checkpoint (or bundle); CheckpointError naming the fix for any other kind."""
    state = load_checkpoint(checkpoint)
    inference_architecture(state)  # refuses a search checkpoint, naming the fix
    if state.get("kind") != "retrain":
        raise CheckpointError(f"{checkpoint} is a {state.get('kind')!r} checkpoint; "
                              "bundle a retrain's best.pt")
    return state


def make_bundle(checkpoint: str | Path, out_path: str | Path, *, onnx_out: str | Path | None = None,
                opset: int = DEFAULT_OPSET) -> Path:
    """Package a retrain checkpoint as a bundle zip at ``out_path`` (written atomically).

    The ONNX export is attempted; if it fails (or its parity check does), the bundle is
    made without ``model.onnx`` and its model card records the reason: packaging never
    fails because of the export. ``onnx_out``: also keep the ONNX file there (removed
    there when the export failed).
    """
    out_path = Path(out_path)
    state = retrain_state(checkpoint)
    arch = state["architecture"]
    weights = {k: v for k, v in state.items() if k not in TRAINING_ONLY}
    with tempfile.TemporaryDirectory(prefix="bundle-") as tmp:
        ckpt = save_checkpoint(weights, Path(tmp) / CHECKPOINT_MEMBER)
        onnx_path = Path(tmp) / ONNX_MEMBER
        report: ExportReport | None = None
        error = None
        try:
            report = export_checkpoint(ckpt, onnx_path, opset=opset)
        except Exception as exc:  # any export failure is reported in the card, never fatal
            error = f"{exc.__class__.__name__}: {exc}"
            log.warning("ONNX export of %s failed; the bundle goes without model.onnx: %s", checkpoint, error,
                        exc_info=True)
        members: list[tuple[str, Path | bytes]] = [(CHECKPOINT_MEMBER, ckpt)]
        if "genotype" in arch:
            members.append((GENOTYPE_MEMBER, json.dumps(arch["genotype"], indent=2).encode()))
        members.append((PREPROCESSING_MEMBER, json.dumps(preprocessing(state), indent=2).encode()))
        if report is not None:
            members.append((ONNX_MEMBER, onnx_path))
        members.append((CARD_MEMBER, model_card(state, report, error).encode()))
        _write_zip(out_path, members)
        if onnx_out is not None:
            if report is not None:
                atomic_copy(onnx_path, Path(onnx_out))
            else:
                Path(onnx_out).unlink(missing_ok=True)
    log.info("wrote bundle %s (%s)", out_path, ", ".join(name for name, _ in members))
    return out_path

