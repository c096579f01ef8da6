"""Which berth deployer runs the client's servers: the launcher when vLLM imports here (it
forks servers from a process that preloaded vLLM), else one ``vllm serve`` process each."""

from __future__ import annotations

import importlib.util
import logging

from berth.client.config import DeployerChoice
from berth.deployers import Deployer, DeployerError, get_deployer


logger = logging.getLogger(__name__)


def open_deployer(choice: DeployerChoice, run_dir: str) -> Deployer:
    """A deployer for ``choice`` keeping its state under ``run_dir``.

    ``auto`` tries the launcher when vLLM is importable and falls back to the process
    deployer (with a debug line) when the launcher cannot be had.
    """
    if choice == "process":
        return get_deployer("process", run_dir=run_dir)
    if choice == "launcher":
        return get_deployer("launcher", run_dir=run_dir)
    if importlib.util.find_spec("vllm") is not None:
        try:
            return get_deployer("launcher", run_dir=run_dir)
        except (DeployerError, ImportError, TypeError) as exc:
            logger.debug("launcher deployer unavailable (%s); using the process deployer", exc)
    return get_deployer("process", run_dir=run_dir)


def close_deployer(deployer: Deployer) -> None:
    """Release a deployer the client opened, stopping what it keeps alive on its own (the
    launcher's daemon survives ``close()`` by design; ``shutdown()`` stops it)."""
    shutdown = getattr(deployer, "shutdown", None)
    try:
        if callable(shutdown):
            shutdown()
    finally:
        deployer.close()
