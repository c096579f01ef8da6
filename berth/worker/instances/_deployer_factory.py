"""Choosing and building the worker's deployer from its settings.

``auto`` (the default) decides per plan: the launcher for what it can run (a ``vllm serve``
instance with one API server: starts in seconds), the process deployer for the rest (a Ray
leader with its ``ray-head`` sidecar, a Ray or ``--headless`` follower, data parallelism); the
launcher is left out where vLLM cannot be imported. A deployer named explicitly is used for
every plan; if that is the launcher and it cannot be had, the worker falls back to the process
deployer and logs why. Local deployers keep their state under ``<data_dir>/<name>``.
"""

from __future__ import annotations

import logging
from typing import Any

from berth.deployers import AUTO, AutoDeployer, get_deployer, run_dir_options
from berth.deployers import open_deployer as open_by_name
from berth.deployers.base import Deployer, DeployerUnavailable
from berth.worker.settings import Settings

logger = logging.getLogger(__name__)


def _options(name: str, settings: Settings) -> dict[str, Any]:
    """``run_dir=<data_dir>/<name>`` for local deployers."""
    return run_dir_options(name, settings.data_dir)


def _build(name: str, settings: Settings) -> Deployer:
    """Deployer ``name``; the process deployer when the launcher cannot be had."""
    try:
        return get_deployer(name, **_options(name, settings))
    except (DeployerUnavailable, ImportError) as exc:
        if name != "launcher":
            raise
        logger.warning("the launcher deployer cannot be used (%s); using the process deployer instead", exc)
        return get_deployer("process", **_options("process", settings))


def open_deployer(settings: Settings) -> Deployer:
    """The configured deployer: ``auto`` over every member that can be built here."""
    if settings.deployer == AUTO:
        return open_by_name(AUTO, settings.data_dir)
    return _build(settings.deployer, settings)


def describe_deployer(deployer: Deployer, settings: Settings) -> str:
    """``auto (launcher, process)``, ``process``, or ``process, fallback`` for a log line."""
    if isinstance(deployer, AutoDeployer):
        return f"{deployer.name} ({', '.join(deployer.member_names)})"
    return deployer.name if deployer.name == settings.deployer else f"{deployer.name}, fallback"
