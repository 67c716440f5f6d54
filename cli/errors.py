"""One mapping from domain errors to a clear message and a non-zero exit, never a traceback."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def _user_errors() -> tuple[type[BaseException], ...]:
    from nas_core.callbacks import TrainingDiverged
    from nas_core.checkpoint import CheckpointError
    from nas_core.config import ConfigError
    from nas_core.data.errors import DatasetError
    from nas_core.genotype import InvalidGenotype
    from nas_core.models import InvalidArchitecture
    from nas_core.ops import UnknownOp

    return (DatasetError, InvalidGenotype, ConfigError, CheckpointError, InvalidArchitecture, UnknownOp,
            TrainingDiverged, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError,
            ValueError)


def friendly(func: F) -> F:
    """Turn a known error into 'error: <message>' on stderr and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]; resume with --resume")
            raise typer.Exit(130) from None
        except _user_errors() as exc:
            logging.getLogger("thrifty").debug("command failed", exc_info=True)
            err_console.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]
