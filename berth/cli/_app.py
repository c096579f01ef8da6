"""The typer application, global options and one-line error reporting."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.console import Console

from berth import __version__
from berth.schemas import DeploymentSpec
from berth.schemas.errors import validation_messages

app = typer.Typer(
    name="berth",
    help="Plan, run and serve vLLM instances on a GPU node.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
console = Console()
err_console = Console(stderr=True)
state: dict[str, object] = {"debug": False, "worker": None}


class CLIError(Exception):
    """An error shown as one line (plus the fix), never a traceback."""


def fail(message: str, code: int = 1) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
    worker: str | None = typer.Option(
        None, "--worker", "-w", envvar="BERTH_WORKER", metavar="URL",
        help="Drive a berth worker's API (run, ps, logs, stop) instead of this machine's deployers. "
        "Token from BERTH_API_TOKEN or BERTH_API_TOKEN_FILE.",
    ),
) -> None:
    state["debug"] = debug
    state["worker"] = worker
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.command()
def version() -> None:
    """Print berth's version."""
    console.print(f"berth {__version__}")


def load_spec(path: Path) -> DeploymentSpec:
    """Read a deployment spec file; every problem becomes one clear error line."""
    if not path.is_file():
        raise CLIError(f"spec file {str(path)!r} not found; pass a YAML or JSON deployment spec")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CLIError(f"cannot read {path}: {exc}") from None
    try:
        return DeploymentSpec.from_text(text, source=str(path))
    except ValidationError as exc:
        raise CLIError(f"{path}: " + "; ".join(validation_messages(exc))) from None
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def main() -> None:
    """Console entry point: run the app, turning known errors into one line."""
    try:
        app()
    except CLIError as exc:
        if state["debug"]:
            raise
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # the last line of defence: one line, not a traceback
        if state["debug"]:
            raise
        err_console.print(
            f"[bold red]error:[/] {type(exc).__name__}: {exc} (run with --debug for details)",
            highlight=False, soft_wrap=True,
        )
        sys.exit(1)
