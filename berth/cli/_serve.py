"""``berth serve``: run the worker (API + instance manager) on this node.

Settings come from flags, then ``BERTH_*`` variables, then ``--config FILE``; ``--set KEY=VALUE``
reaches any setting, and ``--help-settings`` prints them all as one table.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError

from berth.cli._app import CLIError, app, err_console
from berth.schemas.errors import validation_messages
from berth.worker.settings import ENV_PREFIX, Settings, settings_table


def _pairs(items: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise CLIError(f"--set {item!r}: use KEY=VALUE, e.g. --set restart_policy=on-failure")
        if key not in Settings.model_fields:
            raise CLIError(f"--set {key}: no such setting; see `berth serve --help-settings`")
        values[key] = _value(value)
    return values


def _value(text: str) -> Any:
    """JSON lists and objects (``entrypoint``, ``gpu_devices``, ``images``) decoded; the rest as text."""
    if text.strip()[:1] in ("[", "{"):
        try:
            return json.loads(text)
        except ValueError:
            raise CLIError(f"--set value {text[:60]!r} is not valid JSON") from None
    return text


def load_settings(flags: dict[str, Any], pairs: list[str]) -> Settings:
    """Settings from flags (and ``--set`` pairs, which flags override), env and file."""
    given = {**_pairs(pairs), **{k: v for k, v in flags.items() if v is not None}}
    try:
        return Settings.load(**given)
    except ValidationError as exc:
        problems = "; ".join(validation_messages(exc))
        raise CLIError(f"invalid settings: {problems} (set by a flag, {ENV_PREFIX}<NAME> or the config file)") from None
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per readiness probe otherwise


def _run(settings: Settings) -> None:
    import uvicorn

    from berth.worker import ServeManager, WorkerError, create_app
    from berth.worker.app import freeze_startup_objects, limit_malloc_arenas
    from berth.worker.app import KEEP_ALIVE_S
    from berth.worker.instances import describe_deployer

    limit_malloc_arenas()  # before the worker starts any thread
    manager = ServeManager(settings)
    try:
        manager.start()
    except (WorkerError, OSError) as exc:
        raise CLIError(f"cannot start the worker: {exc}") from None
    err_console.print(
        f"berth worker on http://{settings.host}:{settings.port} "
        f"(deployer {describe_deployer(manager.deployer, settings)}, "
        f"data {settings.data_dir}, auth {'on' if settings.api_token else 'off'}"
        f"{', GPUStack ' + settings.gpustack_url if settings.gpustack_url else ''})", highlight=False)
    try:
        app = create_app(manager, start=False)
        freeze_startup_objects()
        uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, log_level=settings.log_level,
                    timeout_graceful_shutdown=5, timeout_keep_alive=KEEP_ALIVE_S)
    finally:
        manager.close()  # when uvicorn never started (the lifespan closes it otherwise)


@app.command()
def serve(
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML or JSON settings file (BERTH_CONFIG_FILE)."),
    host: str | None = typer.Option(None, "--host", help="Address to bind (default 127.0.0.1)."),
    port: int | None = typer.Option(None, "--port", "-p", help="Port to listen on (default 8001)."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Registry, run dirs and logs."),
    deployer: str | None = typer.Option(None, "--deployer", "-d", help="auto, launcher, process, container or memory."),
    api_token_file: Path | None = typer.Option(None, "--api-token-file", help="File holding the bearer token."),
    restart_policy: str | None = typer.Option(None, "--restart-policy", help="never or on-failure."),
    log_level: str | None = typer.Option(None, "--log-level", help="debug, info, warning or error."),
    gpustack_url: str | None = typer.Option(
        None, "--gpustack-url", help="Join this GPUStack server as one of its workers (BERTH_GPUSTACK_URL)."),
    gpustack_token: str | None = typer.Option(
        None, "--gpustack-token", help="GPUStack registration token (BERTH_GPUSTACK_TOKEN; prefer the variable)."),
    set_: list[str] = typer.Option([], "--set", help="Any setting as KEY=VALUE (repeatable)."),
    help_settings: bool = typer.Option(False, "--help-settings", help="Print every setting as a table and exit."),
) -> None:
    """Run the worker: the launcher-compatible and spec APIs over this node's instances."""
    if help_settings:
        typer.echo(settings_table())
        raise typer.Exit()
    flags = {"config_file": config, "host": host, "port": port, "data_dir": data_dir, "deployer": deployer,
             "api_token_file": api_token_file, "restart_policy": restart_policy, "log_level": log_level,
             "gpustack_url": gpustack_url, "gpustack_token": gpustack_token}
    settings = load_settings(flags, set_)
    for secret in ("API_TOKEN", "GPUSTACK_TOKEN"):  # instances inherit the environment; tokens stay here
        os.environ.pop(f"{ENV_PREFIX}{secret}", None)
    _configure_logging(settings.log_level)
    _run(settings)
