"""How the remote commands show the server's answers to people: rich tables and a live job bar."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console, Group
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from client import DownloadProgress

console = Console(highlight=False)


def print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def _when(stamp: str | None) -> str:
    return "-" if not stamp else stamp.replace("T", " ")[:19]


def _num(value: Any, fmt: str = ".4f") -> str:
    return "-" if not isinstance(value, int | float) else format(value, fmt)


def dsc_of(job: dict[str, Any]) -> float | None:
    """The held-out DSC of the latest epoch (validation for retrains, the arch split for searches)."""
    metrics = job.get("latest_metrics") or {}
    return (metrics.get("val") or metrics.get("arch") or {}).get("dsc")


def loss_of(job: dict[str, Any]) -> float | None:
    return ((job.get("latest_metrics") or {}).get("train") or {}).get("loss")


def eta_text(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def key_values(title: str, rows: list[tuple[str, Any]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in rows:
        table.add_row(key, "-" if value is None else str(value))
    return table


# -- datasets ------------------------------------------------------------------------------


def datasets_table(items: list[dict[str, Any]]) -> Table:
    table = Table(title=f"{len(items)} dataset(s)", title_justify="left")
    for col in ("id", "name", "format", "cases", "classes", "status", "created"):
        table.add_column(col)
    for d in items:
        name = d["name"] + (" [dim](synthetic)[/]" if d.get("synthetic") else "")
        table.add_row(d["id"], name, d["format"], str(d["num_cases"]), str(d["num_classes"]), d["status"],
                      _when(d.get("created_at")))
    return table


def dataset_table(d: dict[str, Any]) -> Table:
    report = d.get("report") or {}
    issues = report.get("issues") or []
    labels = ", ".join(f"{k}={v}" for k, v in (d.get("labels") or {}).items())
    return key_values(f"dataset {d['id']}", [
        ("name", d["name"]), ("status", d["status"]), ("format", d["format"]), ("modality", d.get("modality")),
        ("cases", d["num_cases"]), ("classes", d["num_classes"]), ("labels", labels or None),
        ("synthetic", "yes (generated, not patient data)" if d.get("synthetic") else "no"),
        ("path", d["path"]), ("created", _when(d.get("created_at"))),
        ("verification", ("ok" if report.get("ok", True) else "FAILED") + f", {len(issues)} issue(s)"),
    ])


# -- jobs --------------------------------------------------------------------------------------


def jobs_table(items: list[dict[str, Any]]) -> Table:
    table = Table(title=f"{len(items)} job(s)", title_justify="left")
    for col in ("id", "kind", "status", "progress", "epoch", "DSC", "dataset", "created"):
        table.add_column(col)
    for j in items:
        table.add_row(j["id"], j["kind"], j["status"], f"{100 * (j.get('progress') or 0):.0f}%",
                      f"{j.get('epoch', 0)}/{j.get('epochs')}", _num(dsc_of(j)), j["dataset_id"],
                      _when(j.get("created_at")))
    return table


def _architecture(arch: dict[str, Any] | None) -> str | None:
    if not arch:
        return None
    if "baseline" in arch:
        return f"baseline {arch['baseline']}"
    source = arch.get("genotype_id") or arch.get("search_job_id")
    return f"genotype {source}" if source else "genotype (inline)"


def job_table(j: dict[str, Any]) -> Table:
    cfg = j.get("config") or {}
    config = ", ".join(f"{k}={cfg[k]}" for k in ("epochs", "image_size", "batch_size", "channels", "k", "depth",
                                                    "nodes", "lr", "seed") if k in cfg)
    return key_values(f"{j['kind']} job {j['id']}", [
        ("status", j["status"] + (" (cancel requested)" if j.get("cancel_requested") else "")),
        ("progress", f"{100 * (j.get('progress') or 0):.1f}%"), ("epoch", f"{j.get('epoch')}/{j.get('epochs')}"),
        ("ETA", eta_text(j.get("eta_seconds")) if j["status"] == "running" else None),
        ("train loss", _num(loss_of(j))), ("DSC", _num(dsc_of(j))), ("error", j.get("error")),
        ("attempt", f"{j.get('attempt')}/{j.get('max_attempts')}"), ("dataset", j["dataset_id"]),
        ("architecture", _architecture(j.get("architecture"))), ("config", config),
        ("created", _when(j.get("created_at"))), ("started", _when(j.get("started_at"))),
        ("finished", _when(j.get("finished_at"))),
    ])


def artifacts_table(job_id: str, items: list[dict[str, Any]]) -> Table:
    table = Table(title=f"artifacts of job {job_id}", title_justify="left")
    for col in ("name", "kind", "size", "sha256"):
        table.add_column(col)
    for a in items:
        table.add_row(a["name"], a["kind"], f"{a['size']:,}", a["sha256"])
    return table


def genotype_table(g: dict[str, Any]) -> Group:
    """A line naming the genotype and where it came from, then one row per kept edge."""
    geno = g["genotype"]
    origin = f"search job {g['job_id']}" if g.get("job_id") else "uploaded"
    epoch = "final" if g.get("epoch") is None else f"epoch {g['epoch']}"
    params = "" if g.get("params") is None else f", {g['params']:,} params"
    header = Text(f"genotype {g['id']} ({origin}, {epoch}{params}; C={geno.get('C')}, "
                  f"depth={geno.get('depth')}, nodes={geno.get('nodes')})")
    table = Table()
    for col in ("cell", "node", "input", "op"):
        table.add_column(col)
    for cell in ("dn", "up"):
        for i, (op, src) in enumerate(geno.get(cell, [])):
            source = f"in_{src}" if src < 2 else f"node {src - 2}"
            table.add_row(cell, str(i // 2), source, op)
    return Group(header, table)


# -- jobs watch ----------------------------------------------------------------------------


class JobBar:
    """One live bar for a watched job: status, epoch, loss, DSC and the server's ETA (on stderr)."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
            TextColumn("{task.fields[status]}"), TextColumn("epoch {task.fields[epoch]}"),
            TextColumn("loss {task.fields[loss]}"), TextColumn("DSC {task.fields[dsc]}"),
            TextColumn("ETA {task.fields[eta]}"), TimeElapsedColumn(),
            console=Console(stderr=True), transient=False,
        )
        self.task = self.progress.add_task(f"{job['kind']} {job['id']}", total=1.0, **self._fields(job))

    @staticmethod
    def _fields(job: dict[str, Any]) -> dict[str, str]:
        return {"status": job["status"], "epoch": f"{job.get('epoch', 0)}/{job.get('epochs')}",
                "loss": _num(loss_of(job)), "dsc": _num(dsc_of(job)), "eta": eta_text(job.get("eta_seconds"))}

    def update(self, job: dict[str, Any]) -> None:
        self.progress.update(self.task, completed=job.get("progress") or 0.0, **self._fields(job))

    def __enter__(self) -> JobBar:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()


def metrics_tables(m: dict[str, Any]) -> list[Table]:
    """Per epoch: train loss and each split's DSC; then the per-case Dice of the evaluation."""
    epochs = Table(title=f"metrics of job {m['job_id']}", title_justify="left")
    splits = sorted({s for e in m["epochs"] for s in e["splits"]} - {"train"})
    for col in ("epoch", "train loss", *(f"{s} DSC" for s in splits)):
        epochs.add_column(col)
    for e in m["epochs"]:
        row = e["splits"]
        epochs.add_row(str(e["epoch"]), _num((row.get("train") or {}).get("loss")),
                       *(_num((row.get(s) or {}).get("dsc")) for s in splits))
    tables = [epochs]
    if m.get("cases"):
        cases = Table(title="per-case Dice (DSC) and IoU", title_justify="left")
        for col in ("case", "class", "DSC", "IoU"):
            cases.add_column(col)
        for c in m["cases"]:
            cases.add_row(c["case_id"], c["class_name"], _num(c.get("dsc")), _num(c.get("iou")))
        tables.append(cases)
    return tables


class DownloadBar:
    """A transfer bar for ``Client.download(progress=...)`` that says when it resumes or starts over."""

    def __init__(self, name: str, total: int, quiet: bool = False) -> None:
        self.console = Console(stderr=True, highlight=False)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TimeRemainingColumn(), console=self.console, disable=quiet,
        )
        self.task = self.progress.add_task(name, total=total)
        self.quiet, self.resumed_from, self.restarted = quiet, 0, False

    def update(self, event: DownloadProgress) -> None:
        if event.restarted and not self.restarted:
            self.restarted = True
            self._say(f"{event.name}: the partial file did not match the server's sha256; downloading it "
                      f"again from the start")
        elif event.resumed_from and not self.resumed_from and not self.restarted:
            self.resumed_from = event.resumed_from
            self._say(f"resuming {event.name} from byte {event.resumed_from:,} of {event.total:,}")
        self.progress.update(self.task, completed=event.done, total=event.total)

    def _say(self, message: str) -> None:
        if not self.quiet:
            self.progress.console.print(message, soft_wrap=True)

    def __enter__(self) -> DownloadBar:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()
