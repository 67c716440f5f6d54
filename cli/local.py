"""Commands that need no service: params, verify, search, retrain, evaluate, predict."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cli.errors import friendly
from cli.progress import ProgressBar
from nas_core.config import RetrainConfig, SearchConfig  # torch-free: the defaults --help shows

console = Console()


def config_default(config: type, name: str, none: str = "none") -> str:
    """A config field's default as --help shows it, read from nas_core.config (its one source)."""
    value = next(f.default for f in dataclasses.fields(config) if f.name == name)
    if value is None:
        return none
    return ("on" if value else "off") if isinstance(value, bool) else str(value)


def _config_opt(config: type, name: str, kind: type, decls: tuple[str, ...], help: str | None,
                none: str) -> Any:
    """An optional override of config field ``name`` (None: the config decides) whose --help shows
    the config's default."""
    shown = config_default(config, name, none)
    return Annotated[kind | None, typer.Option(*decls, help=help, show_default=shown)]


def search_opt(name: str, kind: type = int, *decls: str, help: str | None = None, none: str = "none") -> Any:
    """A search option of type ``kind`` (see :func:`_config_opt`); ``decls``: flags, if not the name's."""
    return _config_opt(SearchConfig, name, kind, decls, help, none)


def retrain_opt(name: str, kind: type = int, *decls: str, help: str | None = None, none: str = "none") -> Any:
    """A retrain option of type ``kind`` (see :func:`_config_opt`); ``decls``: flags, if not the name's."""
    return _config_opt(RetrainConfig, name, kind, decls, help, none)


# The search's own options, shared by `search` and `submit search`.
SearchEpochsOpt = search_opt("epochs")
SearchWarmupOpt = search_opt("warmup_epochs", help="epochs that train the weights only")
SearchBatchOpt = search_opt("batch_size")
SearchChannelsOpt = search_opt("channels", help="cell width C")
SearchNodesOpt = search_opt("nodes", help="intermediate nodes per cell")
SearchDepthOpt = search_opt("depth", help="down/up levels")
SearchKOpt = search_opt("k", help="PC-DARTS partial-channel factor K (1/K of the channels)")
SearchSeedOpt = search_opt("seed")


def resolve_data(value: Path | None) -> Path | None:
    """--data as given, or the folder an nnU-Net dataset name or id names under $nnUNet_raw."""
    if value is None:
        return None
    from nas_core.data.errors import DatasetError
    from nas_core.data.nnunet_ids import resolve_dataset_path  # no image library: a quick start

    try:
        return resolve_dataset_path(value)
    except DatasetError as exc:
        raise typer.BadParameter(str(exc)) from None


DATA_HELP = ("dataset folder (nnU-Net/MSD, PROMISE12, CHAOS CT, 2D folder); with $nnUNet_raw set, also an "
             "nnU-Net dataset name or id (Dataset003_ACDC, 3)")
DataOpt = Annotated[Path, typer.Option("--data", help=DATA_HELP, callback=resolve_data)]
# The dataset readers' names (nas_core.data.REGISTRY, checked by a test; listed here so that the
# command line starts without importing the ML stack).
FORMATS = ("nnunet", "promise12", "chaos_ct", "folder2d")
FORMAT_HELP = f"dataset format, one of {', '.join(FORMATS)}"
FORMAT_DEFAULT = "auto-detected"


def check_format(value: str | None) -> str | None:
    if value is not None and value not in FORMATS:
        raise typer.BadParameter(f"{value!r} is not a dataset format; choose one of {', '.join(FORMATS)}")
    return value


FormatOpt = Annotated[str | None, typer.Option("--format", help=FORMAT_HELP, callback=check_format,
                                               show_default=FORMAT_DEFAULT)]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object for scripts")]
BudgetOpt = Annotated[float | None, typer.Option(
    "--time-budget-minutes", help="stop after this much wall-clock time; the schedule is laid over it",
    show_default="no limit")]
VAL_DEFAULT = "fold 0 of the dataset's splits_final.json, else a seeded --val-fraction"
ValCasesOpt = Annotated[str | None, typer.Option(
    "--val-cases", help="comma-separated case ids that choose the best epoch (instead of --val-fraction)",
    show_default=VAL_DEFAULT)]
FoldOpt = Annotated[int | None, typer.Option(
    "--fold", min=0, help="validation cases: this fold of nnU-Net's splits_final.json (in the dataset folder "
    "or $nnUNet_preprocessed/NAME)", show_default="0 when the file exists")]
TestCasesOpt = Annotated[str | None, typer.Option(
    "--test-cases", help="comma-separated case ids scored only at the end (besides the dataset's imagesTs)",
    show_default="the dataset's imagesTs only")]
AUGMENT_HELP = "none, basic (flips, small affine warps) or nnunet (nnU-Net's 2D pipeline)"
DEEP_FLAGS = "--deep-supervision/--no-deep-supervision"
DEEP_HELP = "a loss on every head (UNet++ and Thrifty nets)"
StepsOpt = Annotated[int | None, typer.Option("--steps-per-epoch", help="batches per epoch",
                                              show_default="every batch of the training slices")]
ImageSizeOpt = Annotated[int | None, typer.Option("--image-size", help="frame size H = W",
                                                  show_default="the dataset plan's frame")]
DEVICE_HELP = "auto, cpu, cuda or cuda:N"
ResumeOpt = Annotated[bool, typer.Option("--resume", help="continue from the last checkpoint in --out")]


def _cases(text: str | None) -> list[str] | None:
    return None if text is None else [c.strip() for c in text.split(",") if c.strip()]


def _val_cases(data: Path, text: str | None, fold: int | None) -> list[str] | None:
    """--val-cases, or the --fold of the dataset's splits_final.json (None: the config's default)."""
    if fold is None:
        return _cases(text)
    if text is not None:
        raise ValueError("give --val-cases or --fold, not both")
    from nas_core.data.splits import PREPROCESSED_ENV, SPLITS_FILE, fold_val_cases

    cases = fold_val_cases(data, fold)
    if cases is None:
        raise FileNotFoundError(f"--fold {fold} needs {SPLITS_FILE} in {data} or in "
                                f"${PREPROCESSED_ENV}/{data.name}; there is none")
    return cases


def _print_json(obj: object) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


@friendly
def params(
    arch: Annotated[str, typer.Argument(help="unet, unetpp or thrifty")],
    genotype: Annotated[Path | None, typer.Option("--genotype", help="genotype JSON (thrifty only)",
                                                  show_default="the default genotype")] = None,
    in_channels: Annotated[int, typer.Option("--in-channels", min=1)] = 1,
    classes: Annotated[int, typer.Option("--classes", min=1, help="output channels (1 = sigmoid head)")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Print the trainable parameter count of an architecture."""
    from nas_core.genotype import Genotype
    from nas_core.models import build_model, count_parameters, default_genotype

    if arch == "thrifty":
        spec = {"genotype": Genotype.load(genotype) if genotype else default_genotype()}
    elif arch in ("unet", "unetpp"):
        if genotype:
            raise ValueError("--genotype only applies to 'thrifty'")
        spec = {"baseline": arch}
    else:
        raise ValueError(f"unknown architecture {arch!r}; choose one of unet, unetpp, thrifty")
    n = count_parameters(build_model(spec, in_channels, classes))
    if as_json:
        _print_json({"arch": arch, "params": n})
    else:
        console.print(f"{arch}: [bold]{n:,}[/] trainable parameters")


@friendly
def verify(data: DataOpt, data_format: FormatOpt = None, as_json: JsonOpt = False) -> None:
    """Check a dataset file by file; exit 1 when it has errors."""
    from nas_core.data import verify_dataset

    report = verify_dataset(data, format=data_format)
    if as_json:
        _print_json(report.to_dict())
    else:
        typer.echo(report.render())
    if not report.ok:
        raise typer.Exit(1)


def _search_config(**kwargs: object):  # noqa: ANN202
    from nas_core.config import SearchConfig

    return SearchConfig.from_dict({k: v for k, v in kwargs.items() if v is not None})


@friendly
def search(
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", help="output folder (checkpoints, genotype.json, alphas.jsonl)")],
    epochs: SearchEpochsOpt = None,
    warmup_epochs: SearchWarmupOpt = None,
    image_size: ImageSizeOpt = None,
    batch_size: SearchBatchOpt = None,
    channels: SearchChannelsOpt = None,
    nodes: SearchNodesOpt = None,
    depth: SearchDepthOpt = None,
    k: SearchKOpt = None,
    seed: SearchSeedOpt = None,
    early_stop_patience: search_opt("early_stop_patience", none="off",
                                    help="stop after this many evaluations without improvement") = None,
    eval_every: search_opt("eval_every",
                           help="score the architecture half every N epochs (and at the end)") = None,
    latency_weight: search_opt("latency_weight", float,
                               help="weight of the expected latency in the architecture loss (0: off)"
                               ) = None,
    latency_target_ms: search_opt("latency_target_ms", float, help="latency the term is relative to",
                                  none="uniform weights' latency") = None,
    latency_channels: search_opt("latency_channels", help="width the latency table is measured at "
                                 "(the retrain's)", none="channels") = None,
    latency_image_size: search_opt("latency_image_size", help="square frame side the latency table is "
                                   "measured at (the retrain's)", none="the search's frame") = None,
    max_params: search_opt("max_params", help="parameter budget the derived genotype must respect",
                           none="no budget") = None,
    steps_per_epoch: StepsOpt = None,
    device: search_opt("device", str, help=DEVICE_HELP) = None,
    time_budget_minutes: BudgetOpt = None,
    val_cases: ValCasesOpt = None,
    fold: FoldOpt = None,
    test_cases: TestCasesOpt = None,
    augmentation: search_opt("augmentation", str,
                             help=f"of the weight half's batches: {AUGMENT_HELP}") = None,
    deep_supervision: search_opt("deep_supervision", bool, DEEP_FLAGS, help=DEEP_HELP) = None,
    data_format: FormatOpt = None,
    resume: ResumeOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Search the Thrifty NAS space with PC-DARTS; writes genotype.json and the alpha history."""
    from nas_core.search import run_search

    config = _search_config(epochs=epochs, warmup_epochs=warmup_epochs, image_size=image_size,
                            batch_size=batch_size, channels=channels, nodes=nodes, depth=depth, k=k, seed=seed,
                            early_stop_patience=early_stop_patience, steps_per_epoch=steps_per_epoch,
                            device=device, time_budget_minutes=time_budget_minutes, eval_every=eval_every,
                            augmentation=augmentation, deep_supervision=deep_supervision,
                            latency_weight=latency_weight, latency_target_ms=latency_target_ms, max_params=max_params,
                            latency_channels=latency_channels, latency_image_size=latency_image_size,
                            val_cases=_val_cases(data, val_cases, fold), test_cases=_cases(test_cases))
    _require_dir(data)
    with ProgressBar("search", quiet=as_json) as bar:
        result = run_search(data, config, out, callbacks=bar, resume=resume, data_format=data_format,
                            cache_dir=out / "cache")
    if as_json:
        _print_json({**result.summary, "out": str(out)})
    else:
        console.print(f"genotype written to [bold]{out / 'genotype.json'}[/] after {result.epochs_run} epochs")
        console.print_json(json.dumps(result.genotype.to_dict()))


def _require_dir(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"--data {path} does not exist")
    if not path.is_dir():
        raise NotADirectoryError(f"--data {path} is not a folder")


@friendly
def retrain(
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", help="output folder (best.pt, final.pt, metrics.json)")],
    genotype: Annotated[Path | None, typer.Option("--genotype", help="genotype JSON to train")] = None,
    arch: Annotated[str | None, typer.Option("--arch", help="baseline instead: unet or unetpp")] = None,
    epochs: retrain_opt("epochs") = None,
    image_size: ImageSizeOpt = None,
    batch_size: retrain_opt("batch_size") = None,
    lr: retrain_opt("lr", float, help="learning rate") = None,
    optimizer: retrain_opt("optimizer", str, help="adam, adamw or sgd") = None,
    seed: retrain_opt("seed") = None,
    val_fraction: retrain_opt("val_fraction", float, help="share of the cases that validate (without "
                              "--val-cases, --fold or a splits_final.json)") = None,
    steps_per_epoch: StepsOpt = None,
    device: retrain_opt("device", str, help=DEVICE_HELP) = None,
    channels: retrain_opt("channels", help="width C of the genotype at retrain",
                          none="the genotype's own") = None,
    time_budget_minutes: BudgetOpt = None,
    val_cases: ValCasesOpt = None,
    fold: FoldOpt = None,
    test_cases: TestCasesOpt = None,
    augmentation: retrain_opt("augmentation", str, help=AUGMENT_HELP) = None,
    deep_supervision: retrain_opt("deep_supervision", bool, DEEP_FLAGS, help=DEEP_HELP) = None,
    data_format: FormatOpt = None,
    resume: ResumeOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a genotype (or a baseline) from scratch; writes the checkpoints and metrics.json."""
    from nas_core.config import RetrainConfig
    from nas_core.genotype import Genotype
    from nas_core.retrain import run_retrain

    if (genotype is None) == (arch is None):
        raise ValueError("give exactly one of --genotype FILE or --arch unet|unetpp")
    if arch is not None and arch not in ("unet", "unetpp"):
        raise ValueError(f"--arch must be unet or unetpp, got {arch!r}")
    if channels is not None and genotype is None:
        raise ValueError("--channels applies to a genotype (--genotype), not to a baseline")
    spec = {"genotype": Genotype.load(genotype).to_dict()} if genotype else {"baseline": arch}
    options = dict(epochs=epochs, image_size=image_size, batch_size=batch_size, lr=lr, seed=seed, optimizer=optimizer,
                   val_fraction=val_fraction, steps_per_epoch=steps_per_epoch, device=device, channels=channels,
                   time_budget_minutes=time_budget_minutes, val_cases=_val_cases(data, val_cases, fold),
                   test_cases=_cases(test_cases), augmentation=augmentation, deep_supervision=deep_supervision)
    config = RetrainConfig.from_dict({k: v for k, v in options.items() if v is not None})
    _require_dir(data)
    with ProgressBar(f"retrain {arch or 'thrifty'}", quiet=as_json) as bar:
        result = run_retrain(data, spec, config, out, callbacks=bar, resume=resume, data_format=data_format,
                             cache_dir=out / "cache", search_cases=_search_cases(genotype))
    if as_json:
        _print_json({**result.metrics, "out": str(out)})
    else:
        _metrics_table(result.metrics["best"], f"{result.metrics['architecture']} "
                       f"({result.metrics['params']:,} params), best epoch {result.metrics['best_epoch']}")


def _search_cases(genotype: Path | None) -> list[str] | None:
    """The cases the search that wrote ``genotype`` used, from its summary.json beside it."""
    summary = None if genotype is None else genotype.parent / "summary.json"
    if summary is None or not summary.is_file():
        return None
    try:
        return list(json.loads(summary.read_text()).get("search_cases") or []) or None
    except (OSError, ValueError):
        return None


def _metrics_table(summary: dict, title: str) -> None:
    table = Table(title=title)
    for col in ("class", "DSC mean", "DSC std", "IoU mean", "cases"):
        table.add_column(col)
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    for name, c in summary.get("classes", {}).items():
        table.add_row(name, fmt(c["dsc_mean"]), fmt(c["dsc_std"]), fmt(c["iou_mean"]), str(c["n"]))
    table.add_row("[bold]mean", fmt(summary.get("mean_dsc")), "", fmt(summary.get("mean_iou")),
                  str(summary.get("n_cases")))
    console.print(table)


@friendly
def evaluate(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="a retrain checkpoint (best.pt/final.pt)")],
    data: DataOpt,
    data_format: FormatOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score a trained checkpoint on every case of a dataset (hard DSC per case and class)."""
    from nas_core.inference import evaluate_checkpoint

    _require_dir(data)
    result = evaluate_checkpoint(checkpoint, data, data_format=data_format)
    if as_json:
        _print_json(result)
    else:
        _metrics_table(result, f"{checkpoint.name} on {data}")


@friendly
def predict(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="a retrain checkpoint or bundle")],
    input_path: Annotated[Path, typer.Option("--input", help="an image file or a folder of them")],
    output: Annotated[Path, typer.Option("--output", help="folder for the predicted masks")],
    tta: Annotated[bool, typer.Option("--tta", help="average the logits over the four mirrorings")] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=512, help="slices per forward pass")] = 16,
    as_json: JsonOpt = False,
) -> None:
    """Segment images; masks are written in the input's format and geometry."""
    from nas_core.inference import predict_paths

    if not input_path.exists():
        raise FileNotFoundError(f"--input {input_path} does not exist")
    import sys

    progress = None if as_json or sys.stdout.isatty() else typer.echo  # a line per case in logs and pipes
    written = predict_paths(checkpoint, input_path, output, device=device, tta=tta, batch_size=batch_size,
                            progress=progress)
    if as_json:
        _print_json({"written": [str(p) for p in written]})
    elif progress is None:
        for p in written:
            console.print(f"wrote {p}")


def register(app: typer.Typer) -> None:
    for command in (params, verify, search, retrain, evaluate, predict):
        app.command(command.__name__)(command)
