"""Commands that talk to a Thrifty NAS server over its REST API (through ``client.Client``).

``datasets add|upload|list|show``, ``submit search|retrain``, ``jobs list|show|watch|cancel|artifacts|metrics``,
``download JOB [NAME]`` and ``genotypes show``. The server and key come from ``THRIFTY_URL`` and
``THRIFTY_API_KEY`` (or ``--url`` / ``--api-key``); every command prints tables for people and one
JSON document with ``--json``. Exit codes are listed in ``cli.remote_errors``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from cli import plots
from cli.local import (
    FORMAT_DEFAULT,
    FORMAT_HELP,
    ImageSizeOpt,
    SearchBatchOpt,
    SearchChannelsOpt,
    SearchDepthOpt,
    SearchEpochsOpt,
    SearchKOpt,
    SearchNodesOpt,
    SearchSeedOpt,
    SearchWarmupOpt,
    StepsOpt,
    check_format,
    retrain_opt,
    search_opt,
)
from cli.remote_errors import err_console, remote_errors
from cli.remote_output import (
    DownloadBar,
    JobBar,
    artifacts_table,
    console,
    dataset_table,
    datasets_table,
    dsc_of,
    genotype_table,
    job_table,
    jobs_table,
    metrics_tables,
    print_json,
)
from client import Client

DEFAULT_URL = "http://127.0.0.1:8000"
PANEL = "Client of a Thrifty NAS server (THRIFTY_URL, THRIFTY_API_KEY)"

UrlOpt = Annotated[str, typer.Option("--url", envvar="THRIFTY_URL", help="server URL", show_envvar=True)]
KeyOpt = Annotated[str | None, typer.Option("--api-key", envvar="THRIFTY_API_KEY", show_envvar=True,
                                            show_default=False, help="your API key")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]
DatasetOpt = Annotated[str, typer.Option("--dataset", help="dataset id (see `datasets list`)")]
ConfigFileOpt = Annotated[Path | None, typer.Option("--config", help="JSON file of further config fields; "
                                                                     "the flags above override it")]
IdemOpt = Annotated[str | None, typer.Option("--idempotency-key", help="resubmitting with it returns the same job")]
WatchOpt = Annotated[bool, typer.Option("--watch", help="then follow the job like `jobs watch`")]
PollOpt = Annotated[float, typer.Option("--interval", min=0.1, help="seconds between polls")]
RemoteFormatOpt = Annotated[str | None, typer.Option("--format", help=FORMAT_HELP, callback=check_format,
                                                     show_default=f"{FORMAT_DEFAULT} by the server")]
DEVICE_HELP = "auto, cpu, cuda, cuda:N"

datasets_app = typer.Typer(help="Datasets on the server: register, upload, list, show.", no_args_is_help=True)
submit_app = typer.Typer(help="Submit a search or a retrain job.", no_args_is_help=True)
jobs_app = typer.Typer(help="Jobs: list, show, watch, cancel, artifacts, metrics.", no_args_is_help=True)
genotypes_app = typer.Typer(help="Genotypes found by searches.", no_args_is_help=True)


def _client(url: str, api_key: str | None) -> Client:
    return Client(url, api_key)


def _show(obj: Any, as_json: bool, render: Callable[[Any], Any]) -> None:
    """JSON for scripts, else the rich rendering of it for people."""
    if as_json:
        print_json(obj)
    else:
        console.print(render(obj))


# -- datasets --------------------------------------------------------------------------------------


@datasets_app.command("add")
@remote_errors
def datasets_add(
    name: Annotated[str, typer.Argument(help="a name unique among your datasets")],
    path: Annotated[str, typer.Argument(help="folder on the SERVER, under one of its data roots; or an nnU-Net "
                                             "dataset name or id (Dataset003_ACDC, 3) if the server sets nnUNet_raw")],
    data_format: RemoteFormatOpt = None,
    url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None, as_json: JsonOpt = False,
) -> None:
    """Register a dataset already on the server (verified file by file first)."""
    with _client(url, api_key) as client:
        dataset = client.add_dataset(name, path, data_format)
    _show(dataset, as_json, dataset_table)


@datasets_app.command("upload")
@remote_errors
def datasets_upload(
    name: Annotated[str, typer.Argument(help="a name unique among your datasets")],
    archive: Annotated[Path, typer.Argument(help="a .zip, .tar or .tar.gz of the dataset folder")],
    data_format: RemoteFormatOpt = None,
    url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None, as_json: JsonOpt = False,
) -> None:
    """Upload a dataset archive; the server unpacks and verifies it."""
    if not archive.is_file():
        raise FileNotFoundError(f"archive {archive} does not exist or is not a file")
    with _client(url, api_key) as client:
        dataset = client.upload_dataset(name, archive, data_format)
    _show(dataset, as_json, dataset_table)


@datasets_app.command("list")
@remote_errors
def datasets_list(url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """Your datasets, newest first."""
    with _client(url, api_key) as client:
        items = client.datasets()
    _show(items, as_json, datasets_table)


@datasets_app.command("show")
@remote_errors
def datasets_show(
    dataset_id: Annotated[str, typer.Argument(metavar="ID")],
    url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None, as_json: JsonOpt = False,
) -> None:
    """One dataset with its verification summary."""
    with _client(url, api_key) as client:
        dataset = client.dataset(dataset_id)
    _show(dataset, as_json, dataset_table)


# -- submit --------------------------------------------------------------------------------------


def _config(config_file: Path | None, **flags: Any) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if config_file is not None:
        config = json.loads(config_file.read_text())
        if not isinstance(config, dict):
            raise ValueError(f"--config {config_file} must hold a JSON object of config fields")
    return {**config, **{k: v for k, v in flags.items() if v is not None}}


def _submitted(client: Client, job: dict[str, Any], as_json: bool, watch: bool, poll: float) -> None:
    if watch:
        raise typer.Exit(_watch(client, job["id"], as_json, poll))
    if as_json:
        print_json(job)
        return
    console.print(f"submitted {job['kind']} job [bold]{job['id']}[/] ({job['status']}); follow it with "
                  f"[bold]thrifty-nas jobs watch {job['id']}[/]")


@submit_app.command("search")
@remote_errors
def submit_search(
    dataset: DatasetOpt,
    epochs: SearchEpochsOpt = None,
    warmup_epochs: SearchWarmupOpt = None,
    image_size: ImageSizeOpt = None,
    batch_size: SearchBatchOpt = None,
    channels: SearchChannelsOpt = None,
    nodes: SearchNodesOpt = None,
    depth: SearchDepthOpt = None,
    k: SearchKOpt = None,
    seed: SearchSeedOpt = None,
    steps_per_epoch: StepsOpt = None,
    device: search_opt("device", str, help=DEVICE_HELP) = None,
    amp: search_opt("amp", bool, "--amp/--no-amp", help="mixed precision on a GPU") = None,
    config_file: ConfigFileOpt = None, idempotency_key: IdemOpt = None, watch: WatchOpt = False,
    interval: PollOpt = 2.0, url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None, as_json: JsonOpt = False,
) -> None:
    """Queue a PC-DARTS architecture search on a dataset."""
    config = _config(config_file, epochs=epochs, warmup_epochs=warmup_epochs, image_size=image_size,
                     batch_size=batch_size, channels=channels, nodes=nodes, depth=depth, k=k, seed=seed,
                     steps_per_epoch=steps_per_epoch, device=device, amp=amp)
    with _client(url, api_key) as client:
        _submitted(client, client.submit_search(dataset, config, idempotency_key), as_json, watch, interval)


@submit_app.command("retrain")
@remote_errors
def submit_retrain(
    dataset: DatasetOpt,
    genotype_id: Annotated[str | None, typer.Option("--genotype-id", help="one of your genotypes")] = None,
    search_job: Annotated[str | None, typer.Option("--search-job", help="a succeeded search: its genotype")] = None,
    baseline: Annotated[Literal["unet", "unetpp"] | None, typer.Option("--baseline", help="a baseline")] = None,
    epochs: retrain_opt("epochs") = None,
    image_size: ImageSizeOpt = None,
    batch_size: retrain_opt("batch_size") = None,
    lr: retrain_opt("lr", float, help="learning rate") = None,
    seed: retrain_opt("seed") = None,
    steps_per_epoch: StepsOpt = None,
    device: retrain_opt("device", str, help=DEVICE_HELP) = None,
    amp: retrain_opt("amp", bool, "--amp/--no-amp", help="mixed precision on a GPU") = None,
    config_file: ConfigFileOpt = None, idempotency_key: IdemOpt = None, watch: WatchOpt = False,
    interval: PollOpt = 2.0, url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None, as_json: JsonOpt = False,
) -> None:
    """Queue a retrain from scratch of a genotype, a search's result, or a baseline."""
    chosen = {k: v for k, v in {"genotype_id": genotype_id, "search_job_id": search_job,
                                "baseline": baseline}.items() if v is not None}
    if len(chosen) != 1:
        raise ValueError("give exactly one of --genotype-id ID, --search-job JOB or --baseline unet|unetpp")
    config = _config(config_file, epochs=epochs, image_size=image_size, batch_size=batch_size, lr=lr, seed=seed,
                     steps_per_epoch=steps_per_epoch, device=device, amp=amp)
    with _client(url, api_key) as client:
        job = client.submit_retrain(dataset, chosen, config, idempotency_key)
        _submitted(client, job, as_json, watch, interval)


# -- jobs ----------------------------------------------------------------------------------------


@jobs_app.command("list")
@remote_errors
def jobs_list(
    kind: Annotated[Literal["search", "retrain"] | None, typer.Option("--kind", show_default="both")] = None,
    status: Annotated[list[str] | None, typer.Option("--status", help="queued, running, succeeded, failed, "
                                                                      "cancelled; repeat for several",
                                                     show_default="any")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="only the N newest",
                                              show_default="all")] = None,
    url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None, as_json: JsonOpt = False,
) -> None:
    """Your jobs, newest first."""
    with _client(url, api_key) as client:
        items = client.jobs(kind, status, limit=min(limit or 50, 200), max_items=limit)
    _show(items, as_json, jobs_table)


@jobs_app.command("show")
@remote_errors
def jobs_show(job_id: Annotated[str, typer.Argument(metavar="ID")],
              url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """Status, progress, metrics and error of one job."""
    with _client(url, api_key) as client:
        job = client.job(job_id)
    _show(job, as_json, job_table)


def _watch(client: Client, job_id: str, as_json: bool, poll: float) -> int:
    """Follow a job until it ends; 0 when it succeeded, 1 when it failed or was cancelled."""
    states = client.watch(job_id, poll=poll)
    job = next(states)
    if as_json:
        typer.echo(json.dumps(job, default=str))
        for job in states:
            typer.echo(json.dumps(job, default=str))
    else:
        with JobBar(job) as bar:
            for job in states:
                bar.update(job)
    if job["status"] == "succeeded":
        if not as_json:
            dsc = dsc_of(job)
            console.print(f"{job['kind']} job [bold]{job['id']}[/] succeeded"
                          + ("" if dsc is None else f" (DSC {dsc:.4f})")
                          + f"; get its checkpoint with [bold]thrifty-nas download {job['id']}[/]")
        return 0
    err_console.print(f"[bold red]{job['kind']} job {job['id']} {job['status']}[/]"
                      + (f": {job['error']}" if job.get("error") else ""), soft_wrap=True)
    return 1


@jobs_app.command("watch")
@remote_errors
def jobs_watch(job_id: Annotated[str, typer.Argument(metavar="ID")], interval: PollOpt = 2.0,
               url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """Follow a job with a live bar (epoch, loss, DSC, ETA) until it ends: exit 0 if it succeeded,
    1 if it failed or was cancelled. With --json: one JSON line per change."""
    with _client(url, api_key) as client:
        try:
            code = _watch(client, job_id, as_json, interval)
        except KeyboardInterrupt:
            err_console.print(f"stopped watching; job {job_id} goes on (cancel it with "
                              f"`thrifty-nas jobs cancel {job_id}`)")
            raise typer.Exit(130) from None
    raise typer.Exit(code)


@jobs_app.command("logs")
@remote_errors
def jobs_logs(job_id: Annotated[str, typer.Argument(metavar="ID")],
              follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing until the job ends")] = False,
              tail: Annotated[int | None, typer.Option("--tail", min=1, help="only the last N lines",
                                                       show_default="every line")] = None,
              url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None) -> None:
    """Print a job's log lines (also while it runs); --follow keeps printing until it ends."""
    with _client(url, api_key) as client:
        if not follow:
            for line in client.logs(job_id, tail=tail)["lines"]:
                typer.echo(line)
            return
        try:
            for line in client.follow_logs(job_id):
                typer.echo(line)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None


@jobs_app.command("cancel")
@remote_errors
def jobs_cancel(job_id: Annotated[str, typer.Argument(metavar="ID")],
                url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """Cancel a queued job now, or a running one within a training step."""
    with _client(url, api_key) as client:
        job = client.cancel(job_id)
    if as_json:
        print_json(job)
    elif job["status"] == "cancelled":
        console.print(f"job [bold]{job_id}[/] cancelled")
    else:
        console.print(f"job [bold]{job_id}[/] is {job['status']}: cancel requested, it stops within a step")


@jobs_app.command("artifacts")
@remote_errors
def jobs_artifacts(job_id: Annotated[str, typer.Argument(metavar="ID")],
                   url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """The files a finished job left (checkpoints, genotype, metrics) with size and sha256."""
    with _client(url, api_key) as client:
        items = client.artifacts(job_id)
    _show(items, as_json, lambda rows: artifacts_table(job_id, rows))


@jobs_app.command("metrics")
@remote_errors
def jobs_metrics(job_id: Annotated[str, typer.Argument(metavar="ID")],
                 url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """Metrics per epoch and split, and the per-case Dice of a retrain's evaluation."""
    with _client(url, api_key) as client:
        metrics = client.metrics(job_id)
    if as_json:
        print_json(metrics)
        return
    for table in metrics_tables(metrics):
        console.print(table)


# -- download and genotypes --------------------------------------------------------------------------


@remote_errors
def download(
    job_id: Annotated[str, typer.Argument(metavar="JOB")],
    name: Annotated[str | None, typer.Argument(help="artifact name (default: best.pt of a retrain, last.pt "
                                                     "of a search; see `jobs artifacts JOB`)")] = None,
    out: Annotated[Path, typer.Option("--out", help="folder to write it to (created if missing)")] = Path("."),
    url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None, as_json: JsonOpt = False,
) -> None:
    """Download a job's artifact; resumes an interrupted download and checks its sha256."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    with _client(url, api_key) as client:
        if name is None:
            name = client.main_artifact(client.job(job_id))
        meta = client.artifact(job_id, name)
        with DownloadBar(name, meta["size"], quiet=as_json) as bar:
            path = client.download(job_id, name, out, progress=bar.update)
    summary = {"job_id": job_id, "name": name, "path": str(path.resolve()), "size": meta["size"],
               "sha256": meta["sha256"], "resumed_from": bar.resumed_from, "restarted": bar.restarted}
    if as_json:
        print_json(summary)
    else:
        console.print(f"{path} ({meta['size']:,} bytes, sha256 {meta['sha256']} verified)", soft_wrap=True)


@genotypes_app.command("show")
@remote_errors
def genotypes_show(
    genotype_id: Annotated[str | None, typer.Argument(metavar="[ID]", help="a genotype id")] = None,
    job: Annotated[str | None, typer.Option("--job", help="a search job: its latest (final) genotype")] = None,
    url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None, as_json: JsonOpt = False,
) -> None:
    """A genotype as a table of its cells' edges (--json: the record with the genotype JSON)."""
    if (genotype_id is None) == (job is None):
        raise ValueError("give a genotype ID or --job SEARCH_JOB (one of them)")
    with _client(url, api_key) as client:
        record = client.genotype(genotype_id) if genotype_id else client.job_genotype(job or "")
    _show(record, as_json, genotype_table)


def register(app: typer.Typer) -> None:
    app.add_typer(datasets_app, name="datasets", rich_help_panel=PANEL)
    app.add_typer(submit_app, name="submit", rich_help_panel=PANEL)
    plots.register(jobs_app)  # `jobs plots` (cli/plots.py)
    app.add_typer(jobs_app, name="jobs", rich_help_panel=PANEL)
    app.command("download", rich_help_panel=PANEL)(download)
    app.add_typer(genotypes_app, name="genotypes", rich_help_panel=PANEL)

