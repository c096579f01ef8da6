"""Which berth deployer runs the client's servers: the launcher when vLLM imports here (it
forks servers from a process that preloaded vLLM), else one ``vllm serve`` process each."""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile

from berth.client.config import DeployerChoice, ServeConfig
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


class ServerDeployer:
    """The deployer a client object's servers run on: the one it was given, else one it opens
    on first use, with a run dir for their state (``run_dir`` of the owner's
    :class:`ServeConfig`, else a temporary directory that :meth:`close` removes)."""

    def __init__(self, given: Deployer | None = None) -> None:
        self._given = given
        self._opened: Deployer | None = None
        self.run_dir: str | None = None

    @property
    def current(self) -> Deployer | None:
        """The deployer in use, or ``None`` while none is open."""
        return self._given if self._given is not None else self._opened

    def get(self, config: ServeConfig) -> Deployer:
        """The deployer in use, opened now by ``config`` when there is none."""
        if self._given is not None:
            return self._given
        if self._opened is None:
            self.run_dir = config.run_dir or tempfile.mkdtemp(prefix="berth-client-")
            self._opened = open_deployer(config.deployer_choice(), self.run_dir)
        return self._opened

    def close(self, config: ServeConfig) -> None:
        """Close the deployer this opened (a given one is its owner's to close)."""
        if self._opened is None:
            return
        close_deployer(self._opened)
        self._opened = None
        if self.run_dir is not None and config.run_dir is None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        self.run_dir = None
