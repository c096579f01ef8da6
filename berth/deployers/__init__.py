"""Where plans run. ``get_deployer(name)`` returns one by its registry name.

Implementations live in one module each and are imported lazily, so that importing berth never
pulls in Docker clients or vLLM.
"""

from __future__ import annotations

import importlib
from typing import Any

from berth.deployers.base import (
    INSTANCE_LABEL,
    MANAGED_LABEL,
    RAY_HEAD_CONTAINER,
    RUN_CONTAINER,
    Deployer,
    DeployerError,
    DeployerUnavailable,
    InvalidWorkload,
    WorkloadExists,
    WorkloadNotFound,
)

#: registry name -> "module:Class". One line per deployer.
REGISTRY: dict[str, str] = {
    "memory": "berth.deployers.memory:MemoryDeployer",
    "process": "berth.deployers.process:ProcessDeployer",
    "launcher": "berth.deployers.launcher:LauncherDeployer",
    "container": "berth.deployers.container:ContainerDeployer",
}


def get_deployer(name: str, **options: Any) -> Deployer:
    """Build the deployer registered as ``name`` with keyword ``options``."""
    try:
        target = REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise DeployerError(f"unknown deployer {name!r}; choose one of: {known}") from None
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**options)


__all__ = [
    "INSTANCE_LABEL",
    "MANAGED_LABEL",
    "RAY_HEAD_CONTAINER",
    "REGISTRY",
    "RUN_CONTAINER",
    "Deployer",
    "DeployerError",
    "DeployerUnavailable",
    "InvalidWorkload",
    "WorkloadExists",
    "WorkloadNotFound",
    "get_deployer",
]
