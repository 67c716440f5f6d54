"""Taking a model home: `export` (ONNX and/or a MONAI bundle, parity-checked) and `bundle` (one zip)."""

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
    onnx: Annotated[Path | None, typer.Option("--onnx", help="the .onnx file to write")] = None,
    monai_bundle: Annotated[Path | None, typer.Option(
        "--monai-bundle", help="a folder to write a MONAI bundle into (configs/, models/model.ts and "
        "model.onnx, docs/); an earlier bundle there is replaced")] = None,
    image_size: Annotated[int | None, typer.Option("--image-size", min=1, show_default="the checkpoint's",
                                                   help="--onnx input H = W")] = None,
    dynamic_size: Annotated[bool, typer.Option(
        "--dynamic-size", help="--onnx takes any height and width (always so in a MONAI bundle)")] = False,
    opset: Annotated[int, typer.Option("--opset", min=7, max=20, help="ONNX opset version")] = 17,
    as_json: JsonOpt = False,
) -> None:
    """Export the trained network to ONNX and/or a MONAI bundle, checked against PyTorch."""
    from nas_core.export import export_checkpoint

    _require_file(checkpoint)
    if onnx is None and monai_bundle is None:
        raise typer.BadParameter("give --onnx FILE, --monai-bundle DIR or both")
    result: dict = {}
    if onnx is not None:
        report = export_checkpoint(checkpoint, onnx, image_size=image_size, opset=opset,
                                   dynamic_size=dynamic_size)
        result.update(report.to_dict())
        if not as_json:
            console.print(f"wrote [bold]{report.onnx}[/] (opset {report.opset}, input "
                          f"{report.inputs[0]['shape']}, output {report.outputs[0]['shape']})")
            console.print(f"parity: {report.describe()}", highlight=False)
    if monai_bundle is not None:
        from nas_core.monai_bundle import write_monai_bundle

        written = write_monai_bundle(checkpoint, monai_bundle, opset=opset)
        result["monai_bundle"] = written.to_dict()
        if not as_json:
            files = ", ".join(written.to_dict()["files"])
            console.print(f"wrote MONAI bundle [bold]{written.root}[/]: {files}")
            console.print(f"parity: {written.describe()}", highlight=False)
    if as_json:
        typer.echo(json.dumps(result, indent=2))


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
