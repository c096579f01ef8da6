"""Where plans run. ``open_deployer(choice, data_dir)`` returns one by its registry name (or
``auto``), ``get_deployer(name, **options)`` builds one with explicit options.

Each implementation is a sub-package (``container/``, ``process/``, ``launcher/``) imported
lazily, so that importing berth never pulls in Docker clients or vLLM; ``memory`` is the fake.
Adding a deployer: its folder, and one line in :data:`REGISTRY`. Every name list elsewhere
(the worker's settings, the CLI's ``--deployer``, the client's ``deployer``) is derived from it.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from typing import Any

from berth.deployers.auto import AutoDeployer
from berth.deployers.base import (
    INSTANCE_LABEL,
    MANAGED_LABEL,
    RAY_HEAD_CONTAINER,
    RUN_CONTAINER,
    STOPPED_BY_BERTH,
    Deployer,
    DeployerError,
    DeployerUnavailable,
    InvalidWorkload,
    LocalDeployer,
    WorkloadExists,
    WorkloadNotFound,
)
from berth.deployers._stdlib.names import MAX_NAME_LENGTH, NAME_PATTERN, name_problem

logger = logging.getLogger(__name__)

#: What ``auto`` means: its registry name in settings, the CLI and the client.
AUTO = "auto"


@dataclass(frozen=True, slots=True)
class Registered:
    """One deployer of the registry."""

    #: ``"module:Class"``, imported on first use.
    target: str
    #: Starts processes on this host and keeps its state in ``<data_dir>/<name>`` (``run_dir``).
    local: bool = False
    #: Its workloads outlive the berth process (false for the in-memory fake).
    durable: bool = True
    #: Place in ``auto``'s order of preference (lowest first); ``None``: never chosen by ``auto``.
    auto_rank: int | None = None


#: registry name -> the deployer. One line per deployer.
REGISTRY: dict[str, Registered] = {
    "memory": Registered("berth.deployers.memory:MemoryDeployer", durable=False),
    "launcher": Registered("berth.deployers.launcher:LauncherDeployer", local=True, auto_rank=0),
    "process": Registered("berth.deployers.process:ProcessDeployer", local=True, auto_rank=1),
    "container": Registered("berth.deployers.container:ContainerDeployer"),
}


def deployer_names(*, local: bool | None = None, durable: bool | None = None) -> tuple[str, ...]:
    """Registry names, in registry order, optionally only the local or durable ones."""
    return tuple(
        name for name, entry in REGISTRY.items()
        if (local is None or entry.local == local) and (durable is None or entry.durable == durable)
    )


def _entry(name: str) -> Registered:
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise DeployerError(f"unknown deployer {name!r}; choose one of: {known}") from None


def get_deployer(name: str, **options: Any) -> Deployer:
    """Build the deployer registered as ``name`` with keyword ``options``."""
    module_name, _, class_name = _entry(name).target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**options)


def run_dir_options(name: str, data_dir: str | os.PathLike[str] | None) -> dict[str, Any]:
    """``{"run_dir": <data_dir>/<name>}`` for a local deployer when ``data_dir`` is given."""
    if data_dir is None or not _entry(name).local:
        return {}
    return {"run_dir": os.path.join(os.fspath(data_dir), name)}


def auto_members() -> tuple[str, ...]:
    """The deployers ``auto`` chooses among, most preferred first."""
    ranked = [(entry.auto_rank, name) for name, entry in REGISTRY.items() if entry.auto_rank is not None]
    return tuple(name for _, name in sorted(ranked))


def open_deployer(choice: str, data_dir: str | os.PathLike[str] | None = None) -> Deployer:
    """The deployer for ``choice`` (a registry name or ``auto``), local ones under ``data_dir``.

    ``auto`` chooses per plan among :func:`auto_members` that can be built here (the launcher
    needs vLLM importable; one that cannot be had is skipped with a log line).
    """
    if choice != AUTO:
        return get_deployer(choice, **run_dir_options(choice, data_dir))
    members = []
    for name in auto_members():
        try:
            members.append(get_deployer(name, **run_dir_options(name, data_dir)))
        except (DeployerUnavailable, ImportError) as exc:
            logger.info("auto: the %s deployer cannot be used here (%s)", name, exc)
    return AutoDeployer(members)


__all__ = [
    "AUTO",
    "INSTANCE_LABEL",
    "MANAGED_LABEL",
    "MAX_NAME_LENGTH",
    "NAME_PATTERN",
    "RAY_HEAD_CONTAINER",
    "REGISTRY",
    "RUN_CONTAINER",
    "STOPPED_BY_BERTH",
    "AutoDeployer",
    "Deployer",
    "DeployerError",
    "DeployerUnavailable",
    "InvalidWorkload",
    "LocalDeployer",
    "Registered",
    "WorkloadExists",
    "WorkloadNotFound",
    "auto_members",
    "deployer_names",
    "get_deployer",
    "name_problem",
    "open_deployer",
    "run_dir_options",
]
