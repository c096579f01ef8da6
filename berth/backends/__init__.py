"""Backends: plan how an engine runs. ``plan_spec(spec)`` is the one way to plan a spec;
``get_backend(name)`` finds a backend by name.

Built-in: ``vllm``. Others plug in through the ``berth.backends`` entry-point group.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from berth.backends.base import InferenceServer
from berth.backends.plan import NamedPorts, PlanError, RayPorts, ServePlan
from berth.backends.vllm import VLLMServer
from berth.schemas import DeploymentSpec

_BUILTIN: dict[str, type[InferenceServer]] = {"vllm": VLLMServer}


def get_backend(name: str) -> type[InferenceServer]:
    """The backend class for ``name`` (case-insensitive), built-in or by entry point."""
    key = name.strip().lower()
    if key in _BUILTIN:
        return _BUILTIN[key]
    for entry in entry_points(group="berth.backends"):
        if entry.name.lower() == key:
            return entry.load()
    known = sorted(set(_BUILTIN) | {e.name.lower() for e in entry_points(group="berth.backends")})
    raise PlanError(f"model.backend {name!r} is not supported; known backends: {', '.join(known)}")


def plan_spec(spec: DeploymentSpec) -> ServePlan:
    """Plan ``spec`` with its backend. The plan carries every warning (GPUStack fields berth
    does not use included) in ``ServePlan.warnings``. Raises :class:`PlanError`."""
    plan = get_backend(spec.model.backend).from_spec(spec).plan()
    plan.warnings.extend(f"{name} is not a field berth uses; ignored" for name in spec.unknown_fields())
    return plan


__all__ = [
    "InferenceServer",
    "NamedPorts",
    "PlanError",
    "RayPorts",
    "ServePlan",
    "VLLMServer",
    "get_backend",
    "plan_spec",
]
