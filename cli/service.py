"""Commands that run the service: up, worker, migrate, keys create.

``thrifty-nas up`` is the embedded mode in one command: SQLite and Celery's filesystem
transport under one folder, a local worker process and the API. ``thrifty-nas worker``
starts one single-job Celery worker per GPU for a production deployment (PostgreSQL +
Redis from ``THRIFTY_*``).

Workers use Celery's solo pool: the job runs in the worker's own main process, which
is not daemonic, so PyTorch DataLoader workers can start (prefork pool children are
daemonic and may not have children), and CUDA is never initialised before a fork.
One process per GPU, selected with ``CUDA_VISIBLE_DEVICES``, gives one job per GPU.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from cli.errors import friendly

console = Console()
err_console = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])

HomeOpt = Annotated[Path | None, typer.Option("--home", help="data folder of the embedded mode (THRIFTY_HOME)",
                                              show_default="$THRIFTY_HOME or ~/.thrifty-nas")]
STOP_GRACE_S = 60.0

keys_app = typer.Typer(help="API keys: create a user and print their key.", no_args_is_help=True)


def service_errors(func: F) -> F:
    """Database and broker connection failures as one clear line and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from sqlalchemy.exc import OperationalError

        try:
            return func(*args, **kwargs)
        except OperationalError as exc:
            err_console.print(f"[bold red]error:[/] cannot reach the database: {exc.orig or exc}; check "
                              f"THRIFTY_DATABASE_URL and that the server is running", highlight=False)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def load_settings(home: Path | None) -> Any:
    """The settings, after pointing ``THRIFTY_HOME`` at ``home`` when given (child processes inherit it)."""
    from store.db import get_engine, get_sessionmaker
    from store.settings import get_settings

    if home is not None:
        os.environ["THRIFTY_HOME"] = str(home.expanduser().resolve())
    for cached in (get_settings, get_engine, get_sessionmaker):
        cached.cache_clear()
    return get_settings()


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _migrate(settings: Any) -> str | None:
    from store import migrate

    settings.ensure_dirs()
    migrate.upgrade(settings.database_url)
    return migrate.current_revision(settings.database_url)


# -- processes -------------------------------------------------------------------------------


def celery_worker_argv(name: str, queues: str, loglevel: str = "info") -> list[str]:
    """The command line of one single-job worker process (solo pool, concurrency 1, prefetch 1)."""
    return [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--pool", "solo", "--concurrency", "1",
            "--prefetch-multiplier", "1", "-Q", queues, "-n", name, "--loglevel", loglevel,
            "--without-mingle", "--without-gossip"]


def spawn_worker(name: str, queues: str, *, gpu: str | None = None, loglevel: str = "info",
                 env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start one worker process in its own session (a terminal's Ctrl-C reaches only its parent,
    which then stops it gracefully)."""
    from worker.app import PARENT_ENV

    child_env = dict(os.environ if env is None else env)
    child_env[PARENT_ENV] = str(os.getpid())  # the worker stops by itself if this process vanishes
    if gpu is not None:
        child_env["CUDA_VISIBLE_DEVICES"] = gpu
    return subprocess.Popen(celery_worker_argv(name, queues, loglevel), env=child_env, start_new_session=True)


def stop_processes(procs: list[subprocess.Popen], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM (a warm shutdown: a running job stops at its next step and is re-queued), then SIGKILL."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def forwarding_signals(procs: list[subprocess.Popen]) -> Iterator[None]:
    """While inside, SIGINT/SIGTERM to this process stop the children instead of killing this one."""

    def forward(signum: int, _frame: Any) -> None:
        err_console.print(f"stopping {len(procs)} worker(s) (running jobs are re-queued)...")
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Stopped(Exception):
    """SIGTERM or SIGHUP reached ``up``: leave uvicorn and run the cleanup that stops the worker."""


@contextmanager
def stopping_on(*signums: int) -> Iterator[None]:
    """Turn these signals into :class:`Stopped` while inside.

    uvicorn handles SIGTERM itself (graceful shutdown) and then re-raises it with the handler
    it found: with the default handler that would end the process before ``up`` stops its
    worker (SIGTERM from systemd, Docker or ``kill`` left the worker running, reparented).
    With this handler installed first, the re-raised signal lands here instead. Other
    signals (SIGHUP, which uvicorn ignores) are turned into a SIGTERM, so the server stops
    the same graceful way.
    """

    def stop(signum: int, _frame: Any) -> None:
        if signum != signal.SIGTERM:
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Stopped(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in signums}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def parse_gpus(gpus: str | None) -> list[str] | None:
    """``"0,1"`` -> ["0", "1"]; ``"all"`` -> every visible GPU; None -> None (one unpinned worker)."""
    if gpus is None:
        return None
    if gpus.strip().lower() == "all":
        import torch

        count = torch.cuda.device_count()
        if count == 0:
            raise ValueError("--gpus all: no CUDA GPU is visible; check the driver (nvidia-smi) or omit --gpus")
        return [str(i) for i in range(count)]
    ids = [part.strip() for part in gpus.split(",") if part.strip()]
    if not ids or not all(part.isdigit() for part in ids) or len(set(ids)) != len(ids):
        raise ValueError(f"--gpus {gpus!r}: give distinct GPU indices separated by commas (e.g. 0,1) or 'all'")
    return ids


# -- commands --------------------------------------------------------------------------------


@friendly
@service_errors
def worker(
    gpus: Annotated[str | None, typer.Option("--gpus", help="GPU indices (0,1) or 'all': one worker per GPU",
                                                 show_default="none: one worker, default device")] = None,
    queues: Annotated[str, typer.Option("--queues", help="queues to consume, comma-separated")] = "gpu",
    loglevel: Annotated[str, typer.Option("--loglevel")] = "info",
    home: HomeOpt = None,
) -> None:
    """Start single-job Celery workers: one per GPU (--gpus), else one on this machine's default device."""
    from store.migrate import is_up_to_date
    from worker.app import Queue

    unknown = sorted(set(q.strip() for q in queues.split(",")) - {q.value for q in Queue})
    if unknown:
        raise ValueError(f"--queues: unknown queue(s) {unknown}; known: {[q.value for q in Queue]}")
    gpu_ids = parse_gpus(gpus)
    settings = load_settings(home)
    settings.ensure_dirs()
    if settings.uses_sqlite:
        _migrate(settings)
    elif not is_up_to_date(settings.database_url):
        raise ValueError(f"the database at {_safe_url(settings.database_url)} is not migrated to this version; "
                         f"run `thrifty-nas migrate` first")
    if gpu_ids is None:
        procs = [spawn_worker("worker@%h", queues, loglevel=loglevel)]
    else:
        procs = [spawn_worker(f"gpu{gpu}@%h", queues, gpu=gpu, loglevel=loglevel) for gpu in gpu_ids]
    err_console.print(f"started {len(procs)} worker(s) on queue(s) {queues} "
                      f"({'GPUs ' + ','.join(gpu_ids) if gpu_ids else 'default device'}); Ctrl-C stops them")
    with forwarding_signals(procs):
        codes = [proc.wait() for proc in procs]
    failed = [code for code in codes if code not in (0, -signal.SIGTERM)]
    if failed:
        raise typer.Exit(failed[0] if failed[0] > 0 else 1)


@friendly
@service_errors
def migrate(home: HomeOpt = None) -> None:
    """Create or upgrade the database schema (THRIFTY_DATABASE_URL) to this version."""
    settings = load_settings(home)
    revision = _migrate(settings)
    console.print(f"database {_safe_url(settings.database_url)} is at revision [bold]{revision}[/]")


@friendly
@service_errors
def create_key(
    name: Annotated[str, typer.Argument(help="the new user's name (unique)")],
    home: HomeOpt = None,
) -> None:
    """Create a user with an API key; the key is printed once, on stdout."""
    from store.db import session_scope
    from store.users import create_user_with_key, get_user_by_name

    settings = load_settings(home)
    _migrate(settings)
    with session_scope() as session:
        if get_user_by_name(session, name) is not None:
            raise ValueError(f"user {name!r} already exists; choose another name")
        user, key = create_user_with_key(session, name)
    err_console.print(f"created user [bold]{name}[/] ({user.id}); their API key, shown only this once:")
    typer.echo(key)


@friendly
@service_errors
def list_keys(
    name: Annotated[str, typer.Argument(help="the user's name")],
    home: HomeOpt = None,
) -> None:
    """A user's API keys (id, prefix, created, revoked); the secrets themselves are never stored."""
    from store.db import session_scope
    from store.users import get_user_by_name
    from store.users import list_keys as keys_of

    load_settings(home)
    with session_scope() as session:
        user = get_user_by_name(session, name)
        if user is None:
            raise ValueError(f"no user {name!r}; create one with: thrifty-nas keys create {name}")
        for key in keys_of(session, user.id):
            revoked = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
            typer.echo(f"{key.id}  tnas_{key.prefix}...  created {key.created_at:%Y-%m-%d %H:%M}  {revoked}")


@friendly
@service_errors
def revoke_key(
    key_id: Annotated[str, typer.Argument(help="the key's id (see: thrifty-nas keys list NAME)")],
    home: HomeOpt = None,
) -> None:
    """Revoke an API key: its next request gets 401."""
    from store.db import session_scope
    from store.users import revoke_key as revoke

    load_settings(home)
    with session_scope() as session:
        if not revoke(session, key_id):
            raise ValueError(f"no active key {key_id!r}; list a user's keys with: thrifty-nas keys list NAME")
    err_console.print(f"revoked {key_id}")


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@friendly
@service_errors
def up(
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    home: HomeOpt = None,
) -> None:
    """Run everything on this machine: database, queue, one worker and the API (Ctrl-C stops all)."""
    import uvicorn

    from worker.reaper import reaper_for

    settings = load_settings(home)
    if not _port_free(host, port):
        raise ValueError(f"{host}:{port} is already in use; pick another port with --port")
    revision = _migrate(settings)
    home_arg = f" --home {settings.home}" if home is not None else ""
    err_console.print(f"data folder {settings.home} (database {_safe_url(settings.database_url)}, revision "
                      f"{revision}; broker {settings.broker_url.split('://')[0]})")
    proc = spawn_worker("local@%h", "gpu,control")
    reaper = reaper_for(settings).start()
    err_console.print(f"[bold green]Thrifty NAS[/] at http://{host}:{port} (API docs: http://{host}:{port}/docs)")
    err_console.print(f"get an API key: [bold]thrifty-nas keys create NAME{home_arg}[/]; Ctrl-C stops everything")
    try:
        with stopping_on(signal.SIGTERM, signal.SIGHUP):
            uvicorn.run("api.main:app", host=host, port=port, log_level="info")
    except (KeyboardInterrupt, Stopped):
        pass
    finally:
        reaper.stop()
        err_console.print("stopping the worker (a running job is re-queued and resumes next time)...")
        try:
            stop_processes([proc])
        except KeyboardInterrupt:
            proc.kill()
    err_console.print("stopped")


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.command("worker")(worker)
    app.command("migrate")(migrate)
    keys_app.command("create")(create_key)
    keys_app.command("list")(list_keys)
    keys_app.command("revoke")(revoke_key)
    app.add_typer(keys_app, name="keys")
