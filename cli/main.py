"""`thrifty-nas`: the command line. Each subcommand lives in its own module."""

from __future__ import annotations

import typer

from cli import demo, export, local, remote, service

app = typer.Typer(
    name="thrifty-nas",
    help="Thrifty NAS: search tiny, accurate medical-image segmentation networks (PC-DARTS).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"thrifty-nas {version('thrifty-nas')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            typer.echo("thrifty-nas (not installed)")
        raise typer.Exit()


@app.callback()
def _main(
    show_version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="print the version and exit"),
) -> None:
    """Thrifty NAS: search tiny, accurate medical-image segmentation networks (PC-DARTS)."""
local.register(app)
service.register(app)
demo.register(app)
export.register(app)
remote.register(app)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
