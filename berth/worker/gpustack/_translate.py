"""GPUStack's objects in berth's terms, purely: which instance a routing header or a GPUStack
model instance means here, what part this worker plays in it, and the deployment spec berth
plans for it.

A GPUStack model instance ``N`` is the berth instance ``gpustack-N`` on every worker that runs a
part of it (the main worker serves it; a subordinate worker runs its follower). GPUStack's own
fields travel unchanged in the spec (berth keeps the ones it does not use), except the instance's
``name``, which becomes the berth id (GPUStack's is kept as ``gpustack_name``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

from berth.schemas import DeploymentSpec, Worker

INSTANCE_PREFIX = "gpustack-"
#: ``model-<model id>-<instance id>[-<alias>].<type>``, as GPUStack's gateway names a destination.
_HEADER = re.compile(r"^model-\d+-(\d+)(?:-[^.]+)?\.[^.]+$")


class Role(str, Enum):
    """What this worker does for a GPUStack instance."""

    MAIN = "main"
    SUBORDINATE = "subordinate"
    NONE = "none"


def berth_id(instance_id: int) -> str:
    return f"{INSTANCE_PREFIX}{instance_id}"


def gpustack_id(berth_instance_id: str) -> int | None:
    """The GPUStack instance id behind a berth id, or None for instances GPUStack did not ask for."""
    digits = berth_instance_id.removeprefix(INSTANCE_PREFIX)
    if digits == berth_instance_id or not digits.isdigit():
        return None
    return int(digits)


def instance_from_header(value: str) -> str | None:
    """The berth id an ``X-GPUStack-Model-Instance`` value names, or None when malformed."""
    match = _HEADER.match(value.strip())
    return berth_id(int(match.group(1))) if match else None


def _subordinates(instance: dict[str, Any]) -> list[dict[str, Any]]:
    servers = instance.get("distributed_servers") or {}
    return list(servers.get("subordinate_workers") or [])


def subordinate_index(instance: dict[str, Any], worker_id: int) -> int | None:
    for index, entry in enumerate(_subordinates(instance)):
        if entry.get("worker_id") == worker_id:
            return index
    return None


def role_of(instance: dict[str, Any], worker_id: int) -> Role:
    if instance.get("worker_id") == worker_id:
        return Role.MAIN
    if subordinate_index(instance, worker_id) is not None:
        return Role.SUBORDINATE
    return Role.NONE


@dataclass(frozen=True, slots=True)
class Assignment:
    """What berth needs to start its part of a GPUStack instance."""

    instance: dict[str, Any]
    model: dict[str, Any]
    worker: Worker
    model_path: str


def model_path_of(instance: dict[str, Any]) -> str | None:
    """Where the weights are on this node: the path GPUStack resolved, else the model's local path."""
    return instance.get("resolved_path") or instance.get("local_path") or None


def to_spec(assignment: Assignment) -> DeploymentSpec:
    """The deployment spec berth plans for its part of ``assignment.instance``.

    Raises ``pydantic.ValidationError`` naming the GPUStack field berth cannot accept.
    """
    instance = dict(assignment.instance)
    gpustack_name = instance.get("name")
    instance["name"] = berth_id(int(instance["id"]))
    if gpustack_name:
        instance["gpustack_name"] = gpustack_name
    instance.setdefault("model_name", assignment.model.get("name"))
    model = {key: value for key, value in assignment.model.items() if value is not None}
    return DeploymentSpec.model_validate({
        "model": model,
        "instance": {key: value for key, value in instance.items() if value is not None},
        "worker": assignment.worker.model_dump(mode="json", exclude_none=True),
        "model_path": assignment.model_path,
    })
