"""Choosing and building the worker's deployer from its settings.

``auto`` means the launcher when vLLM is importable here, else plain processes. If the launcher
cannot be used (it raises :class:`DeployerUnavailable`), the worker falls back to the process
deployer and logs why. Deployers that keep state on disk get a run dir under the data dir, so
each worker's workloads live apart.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
from typing import Any

from berth.deployers import REGISTRY, get_deployer
from berth.deployers.base import Deployer, DeployerUnavailable
from berth.worker.settings import Settings

__all__ = ["open_deployer", "resolve_deployer_name"]

logger = logging.getLogger(__name__)


def resolve_deployer_name(settings: Settings) -> str:
    if settings.deployer != "auto":
        return settings.deployer
    return "launcher" if importlib.util.find_spec("vllm") is not None else "process"


def _options(name: str, settings: Settings) -> dict[str, Any]:
    """``run_dir=<data_dir>/<name>`` for deployers whose constructor takes one."""
    module_name, _, class_name = REGISTRY[name].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if "run_dir" in inspect.signature(cls).parameters:
        return {"run_dir": str(settings.data_dir / name)}
    return {}


def open_deployer(settings: Settings) -> Deployer:
    """The configured deployer; the process deployer when the launcher is unavailable."""
    name = resolve_deployer_name(settings)
    try:
        return get_deployer(name, **_options(name, settings))
    except (DeployerUnavailable, ImportError) as exc:
        if name != "launcher":
            raise
        logger.warning("the launcher deployer cannot be used (%s); using the process deployer instead", exc)
        return get_deployer("process", **_options("process", settings))
