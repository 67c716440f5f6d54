"""`thrifty-nas jobs plots JOB --out DIR`: save a job's pictures, rendered by the server, via its REST API.

It saves ``alphas``, ``curves``, ``genotype`` and ``grid`` (the job's macro grid) as PNG or
SVG; a picture the job does not have (yet) is skipped with the server's reason: a retrain
has no alpha history, a search has no genotype before its first epoch. Exit codes as the
other remote commands: 0 done, 1 the server failed or could not be reached, 2 the request
was refused (unknown job, missing or wrong API key, nothing to save).

Hook it into the ``jobs`` sub-app with ``cli.plots.register(jobs_app)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

console = Console(stderr=True, highlight=False)

DEFAULT_URL = "http://127.0.0.1:8000"
FORMATS = ("png", "svg")
TIMEOUT_S = 120.0  # rendering a long alpha history takes a few seconds on a busy server
SKIPPABLE = {404: ("alphas_not_ready", "metrics_not_ready", "genotype_not_ready"),
             409: ("not_a_search", "no_genotype")}
KEY_HINT = "set THRIFTY_API_KEY or pass --api-key (an operator creates one with `thrifty-nas keys create NAME`)"


def _error(response: httpx.Response) -> tuple[str, str]:
    """(code, message) of an error response of the API."""
    try:
        err = response.json().get("error") or {}
    except ValueError:
        err = {}
    return str(err.get("code", "http_error")), str(err.get("message") or response.text or response.reason_phrase)


def _fail(message: str, code: int, hint: str | None = None) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
    if hint:
        console.print(f"hint: {hint}", markup=False, soft_wrap=True)
    return typer.Exit(code)


def _refused(response: httpx.Response) -> typer.Exit:
    code, message = _error(response)
    status = response.status_code
    return _fail(f"{message} ({status} {code})", 2 if status < 500 else 1, KEY_HINT if status == 401 else None)


def picture_paths(job: dict[str, Any], fmt: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """{name: (API path, query)} of the pictures a job may have."""
    base = f"/v1/jobs/{job['id']}/plots"
    paths: dict[str, tuple[str, dict[str, Any]]] = {}
    if job.get("kind") == "search":
        paths["alphas"] = (f"{base}/alphas.{fmt}", {})
    paths["curves"] = (f"{base}/curves.{fmt}", {})
    paths["genotype"] = (f"{base}/genotype.{fmt}", {})
    genotype = (job.get("architecture") or {}).get("genotype") or {}
    depth = (job.get("config") or {}).get("depth") or genotype.get("depth")
    if job.get("kind") == "search" or genotype:
        paths["grid"] = (f"/v1/plots/grid.{fmt}", {"depth": depth} if depth else {})
    return paths


def save_plots(http: httpx.Client, job_id: str, out: Path, fmt: str) -> tuple[list[Path], dict[str, str]]:
    """Save every picture of a job into `out` (created if missing); return (saved files, {skipped name: reason})."""
    response = http.get(f"/v1/jobs/{job_id}")
    if response.status_code != 200:
        raise _refused(response)
    out.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []
    skipped: dict[str, str] = {}
    for name, (path, query) in picture_paths(response.json(), fmt).items():
        response = http.get(path, params=query)
        if response.status_code == 200:
            target = out / f"{name}.{fmt}"
            target.write_bytes(response.content)
            saved.append(target)
            continue
        code, message = _error(response)
        if code not in SKIPPABLE.get(response.status_code, ()):
            raise _refused(response)
        skipped[name] = message
    return saved, skipped


def plots(
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="a job id")],
    out: Annotated[Path, typer.Option("--out", help="folder to write the pictures to (created if missing)")] = Path("."),
    url: Annotated[str, typer.Option("--url", envvar="THRIFTY_URL", help="server URL", show_envvar=True)] = DEFAULT_URL,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="THRIFTY_API_KEY", show_envvar=True,
                                                show_default=False, help="your API key")] = None,
    fmt: Annotated[str, typer.Option("--format", help="png or svg")] = "png",
) -> None:
    """Save a job's pictures (alpha history, learning curves, genotype cells, macro grid)."""
    if fmt not in FORMATS:
        raise _fail(f"--format {fmt!r} is not supported; use one of {list(FORMATS)}", 2)
    if out.exists() and not out.is_dir():
        raise _fail(f"--out {out} is a file; give a folder", 2)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=TIMEOUT_S) as http:
            saved, skipped = save_plots(http, job_id, out, fmt)
    except httpx.HTTPError as exc:
        raise _fail(f"cannot reach the server at {url}: {exc.__class__.__name__}: {exc}", 1) from None
    for path in saved:
        console.print(f"saved {path}", markup=False, soft_wrap=True)
    for name, reason in skipped.items():
        console.print(f"skipped {name}: {reason}", markup=False, soft_wrap=True)
    if not saved:
        raise _fail(f"job {job_id} has no pictures yet", 2)


def register(jobs_app: typer.Typer) -> None:
    """Add ``plots`` to the ``jobs`` sub-app (``thrifty-nas jobs plots``)."""
    jobs_app.command("plots")(plots)
