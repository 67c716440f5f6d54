"""Taking a model home: `export` (ONNX with a parity check) and `bundle` (one zip with everything)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cli.errors import friendly

console = Console()

CheckpointOpt = Annotated[Path, typer.Option("--checkpoint", help="a retrain checkpoint (best.pt) or a bundle")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object for scripts")]


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"--checkpoint {path} does not exist or is not a file")


@friendly
def export(
    checkpoint: CheckpointOpt,
    onnx: Annotated[Path, typer.Option("--onnx", help="the .onnx file to write")],
    image_size: Annotated[int | None, typer.Option("--image-size", min=1,
                                                   help="input H = W; default the checkpoint's")] = None,
    opset: Annotated[int, typer.Option("--opset", min=7, max=20, help="ONNX opset version")] = 17,
    as_json: JsonOpt = False,
) -> None:
    """Export the trained network to ONNX and check it against PyTorch with onnxruntime."""
    from nas_core.export import export_checkpoint

    _require_file(checkpoint)
    report = export_checkpoint(checkpoint, onnx, image_size=image_size, opset=opset)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        console.print(f"wrote [bold]{report.onnx}[/] (opset {report.opset}, input "
                      f"{report.inputs[0]['shape']}, output {report.outputs[0]['shape']})")
        console.print(f"parity: {report.describe()}", highlight=False)


@friendly
def bundle(
    checkpoint: CheckpointOpt,
    out: Annotated[Path, typer.Option("--out", help="the bundle .zip to write")],
    as_json: JsonOpt = False,
) -> None:
    """Package a retrain checkpoint as one zip: weights, genotype, preprocessing, ONNX, model card."""
    import zipfile

    from nas_core.bundle import make_bundle

    _require_file(checkpoint)
    path = make_bundle(checkpoint, out)
    with zipfile.ZipFile(path) as zf:
        members = zf.namelist()
    if as_json:
        typer.echo(json.dumps({"bundle": str(path), "members": members}, indent=2))
    else:
        console.print(f"wrote [bold]{path}[/]: {', '.join(members)}")


def register(app: typer.Typer) -> None:
    for command in (export, bundle):
        app.command(command.__name__)(command)
