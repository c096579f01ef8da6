"""``berth plan SPEC``: show how an instance would run, without running it."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from berth.backends import PlanError, plan_spec
from berth.backends.plan import ServePlan
from berth.cli._app import CLIError, app, console, load_spec
from berth.cli._render import print_plan
from berth.schemas import DeploymentSpec
from berth.worker.redact import masked_plan


class Format(str, Enum):
    text = "text"
    json = "json"


def make_plan(spec: DeploymentSpec) -> ServePlan:
    """Plan a spec with its backend; unknown GPUStack fields become warnings."""
    try:
        return plan_spec(spec)
    except PlanError as exc:
        raise CLIError(str(exc)) from None


@app.command()
def plan(
    spec: Path = typer.Argument(..., help="Deployment spec (YAML or JSON): model, instance, worker, config, model_path."),
    format: Format = typer.Option(Format.text, "--format", "-f", help="text for people, json for programs."),
    show_secrets: bool = typer.Option(
        False, "--show-secrets", help="Print secret env values and secret options unmasked."
    ),
) -> None:
    """Show the plan for SPEC: image, command line, env (secrets masked), ports, mounts, resources."""
    result = make_plan(load_spec(spec))
    if format is Format.json:
        data = result.to_dict() if show_secrets else masked_plan(result.to_dict())
        typer.echo(json.dumps(data, indent=2))
    else:
        print_plan(console, result)
