"""``berth plan SPEC``: show how an instance would run, without running it."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from berth.backends import PlanError, get_backend
from berth.backends.plan import ServePlan
from berth.cli._app import CLIError, app, console, load_spec
from berth.cli._render import print_plan
from berth.schemas import DeploymentSpec
from berth.utils.env import mask_env, mask_secrets_in_args


class Format(str, Enum):
    text = "text"
    json = "json"


def make_plan(spec: DeploymentSpec) -> ServePlan:
    """Plan a spec with its backend; unknown GPUStack fields become warnings."""
    try:
        plan = get_backend(spec.model.backend).from_spec(spec).plan()
    except PlanError as exc:
        raise CLIError(str(exc)) from None
    plan.warnings.extend(f"{name} is not a field berth uses; ignored" for name in spec.unknown_fields())
    return plan


def masked(data: dict) -> dict:
    """The JSON plan with secret env values and secret option values masked everywhere."""
    data = dict(data)
    data["env"] = mask_env(data["env"])
    data["args"] = mask_secrets_in_args(data["args"])
    data["injected"] = mask_secrets_in_args(data["injected"])
    for container in data["workload"].get("containers") or []:
        for item in container.get("envs") or []:
            item["value"] = mask_env({item["name"]: item["value"]})[item["name"]]
        execution = container.get("execution") or {}
        if execution.get("args"):
            execution["args"] = mask_secrets_in_args(execution["args"])
    return data


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
        data = result.to_dict() if show_secrets else masked(result.to_dict())
        typer.echo(json.dumps(data, indent=2))
    else:
        print_plan(console, result)
