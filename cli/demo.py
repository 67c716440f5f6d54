"""`thrifty-nas demo`: the main job end to end through the REST API of an embedded service.

It starts `thrifty-nas up` (SQLite, filesystem broker, one local worker) in a data folder,
creates a user, registers a dataset (a SYNTHETIC phantom unless --data), runs a short
search, retrains the found genotype and U-Net, downloads the best checkpoint (sha256
checked), reloads it, re-scores it, and prints a table of parameters and DSC.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.errors import friendly
from cli.local import DATA_HELP, resolve_data

console = Console(stderr=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_service(home: Path, port: int, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    log = log_path.open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "up", "--home", str(home), "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the embedded service exited with {proc.returncode}; see {log_path}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"the embedded service did not become ready in 120 s; see {log_path}")


def _stop_service(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait(client: Any, job: dict[str, Any], label: str, progress: Progress) -> dict[str, Any]:
    task = progress.add_task(label, total=1.0, info="queued")
    while True:
        job = client.job(job["id"])
        metrics = job.get("latest_metrics") or {}
        dsc = (metrics.get("val") or metrics.get("arch") or {}).get("dsc")
        info = f"{job['status']} epoch {job.get('epoch') or 0}/{job.get('epochs')}" + (
            f" DSC {dsc:.3f}" if isinstance(dsc, float) else "")
        progress.update(task, completed=job.get("progress") or 0.0, info=info)
        if job["status"] in ("succeeded", "failed", "cancelled"):
            if job["status"] != "succeeded":
                raise RuntimeError(f"{label} job {job['id']} {job['status']}: {job.get('error')}")
            return job
        time.sleep(1.0)


def _dataset(home: Path, data: Path | None, image_size: int) -> tuple[Path, bool]:
    if data is not None:
        return data.expanduser().resolve(), False
    from nas_core.data import make_phantom_dataset

    target = home / "datasets" / "phantom"
    if not (target / "dataset.json").exists():
        make_phantom_dataset(target, num_cases=8, image_size=image_size, depth=12, num_classes=3, seed=0)
    return target, True


@friendly
def demo(
    home: Annotated[Path | None, typer.Option("--home", help="data folder",
                                              show_default="a new temp folder")] = None,
    data: Annotated[Path | None, typer.Option("--data", help=f"your dataset instead of the phantom: {DATA_HELP}",
                                              callback=resolve_data, show_default="a SYNTHETIC phantom")] = None,
    image_size: Annotated[int, typer.Option("--image-size")] = 64,
    search_epochs: Annotated[int, typer.Option("--search-epochs")] = 6,
    retrain_epochs: Annotated[int, typer.Option("--retrain-epochs")] = 15,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Run the main job end to end through the REST API of an embedded service."""
    from cli.service import load_settings
    from client import Client
    from nas_core.checkpoint import load_model
    from store.db import session_scope
    from store.migrate import upgrade
    from store.users import create_user_with_key

    if data is not None and not data.is_dir():
        raise FileNotFoundError(f"--data {data} is not a folder")
    home = (home or Path(tempfile.mkdtemp(prefix="thrifty-demo-"))).expanduser().resolve()
    dataset_path, synthetic = _dataset(home, data, image_size)
    env = {**os.environ, "THRIFTY_HOME": str(home),
           "THRIFTY_DATA_ROOTS": ",".join({str(home / "datasets"), str(dataset_path.parent)})}
    os.environ.update(env)
    settings = load_settings(home)
    settings.ensure_dirs()
    upgrade(settings.database_url)
    with session_scope() as session:
        _, key = create_user_with_key(session, f"demo-{int(time.time())}")
    port = _free_port()
    console.print(f"starting the embedded service in {home} on port {port}...")
    t0 = time.perf_counter()
    service = _start_service(home, port, env, home / "service.log")
    try:
        with Client(f"http://127.0.0.1:{port}", key, timeout=120) as client, Progress(
            TextColumn("[bold]{task.description:<16}"), BarColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), console=console, disable=as_json,
        ) as progress:
            ds = client.add_dataset(f"{dataset_path.name}-{port}", str(dataset_path))
            search = client.submit_search(ds["id"], {
                "epochs": search_epochs, "warmup_epochs": max(1, search_epochs // 3), "image_size": image_size,
                "batch_size": 8, "channels": 16, "k": 4, "seed": 0})
            search = _wait(client, search, "search", progress)
            common = {"epochs": retrain_epochs, "image_size": image_size, "batch_size": 8, "seed": 0}
            thrifty = client.submit_retrain(ds["id"], {"search_job_id": search["id"]}, common)
            unet = client.submit_retrain(ds["id"], {"baseline": "unet"}, common)
            thrifty = _wait(client, thrifty, "retrain thrifty", progress)
            unet = _wait(client, unet, "retrain unet", progress)
            downloaded = client.download(thrifty["id"], "best.pt", home / "best.pt")
            genotype = client.job_genotype(search["id"])
            rows = [_row(client, job, name) for job, name in ((thrifty, "thrifty (searched)"), (unet, "U-Net"))]
        model, meta = load_model(downloaded)
        reloaded_params = sum(p.numel() for p in model.parameters())
    finally:
        _stop_service(service)
    summary = {"home": str(home), "dataset": str(dataset_path), "synthetic": synthetic,
               "genotype": genotype.get("genotype", genotype), "models": rows,
               "checkpoint": {"path": str(downloaded), "sha256_verified": True, "reloaded_params": reloaded_params,
                              "class_names": meta["class_names"]},
               "seconds": round(time.perf_counter() - t0, 1)}
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    title = "Thrifty NAS demo" + (" on a SYNTHETIC phantom dataset" if synthetic else f" on {dataset_path}")
    table = Table(title=title)
    for col in ("model", "parameters", "% of U-Net", "val DSC (mean over cases)", "train time"):
        table.add_column(col)
    unet_params = rows[1]["params"]
    for r in rows:
        dsc = "-" if r["mean_dsc"] is None else f"{r['mean_dsc']:.4f}"
        table.add_row(r["model"], f"{r['params']:,}", f"{100 * r['params'] / unet_params:.1f}%", dsc,
                      f"{r['train_seconds']:.0f} s")
    Console().print(table)
    console.print(f"checkpoint {downloaded} downloaded (sha256 verified) and reloaded: {reloaded_params:,} params; "
                  f"all data under {home}; total {summary['seconds']:.0f} s")


def _row(client: Any, job: dict[str, Any], name: str) -> dict[str, Any]:
    metrics = json.loads(_artifact_text(client, job["id"], "metrics.json"))
    return {"model": name, "job_id": job["id"], "params": metrics["params"], "mean_dsc": metrics["best"]["mean_dsc"],
            "train_seconds": metrics["train_seconds"]}


def _artifact_text(client: Any, job_id: str, name: str) -> str:
    return client.http.get(f"/v1/jobs/{job_id}/artifacts/{name}").raise_for_status().text


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
