"""The deployer contract: where a ``WorkloadPlan`` runs.

Every deployer answers the same calls with the same meaning; the worker, the CLI and the client
never ask which one they hold. The public methods below are the contract and are written once,
here: they check the plan, add berth's labels, validate log ranges, order listings and shape the
result of a delete. An implementation fills in the underscored steps (``_create``, ``_list``,
``_logs``, ``_delete``, and ``get``), plus :meth:`Deployer.check` for what it cannot run.

The same everywhere:

* ``check(plan)`` says why this deployer cannot run ``plan`` (``None``: it can); ``create``
  refuses such a plan with :class:`InvalidWorkload` carrying that reason. Names follow one rule
  (:mod:`berth.deployers._stdlib.names`).
* Every created workload carries :data:`MANAGED_LABEL` and :data:`INSTANCE_LABEL`; ``list``
  returns only workloads with :data:`MANAGED_LABEL`, sorted by name.
* States: ``running`` while a workload's processes run (whether the server inside answers is
  the worker's readiness probe, not the deployer's business); ``stopped`` after exit code 0 or a
  stop berth asked for; ``failed`` otherwise, with the reason; ``pending``/``starting`` only while
  the deployer itself has not started every process yet.
* ``logs``: ``start < 0`` or ``end < start - 1`` is a ``ValueError``; ``start`` past the end is an
  empty chunk whose ``total`` is the log's size.
* ``delete`` returns ``None`` when nothing of that name existed, else the last status: a
  workload that was still live is ``stopped`` with reason :data:`STOPPED_BY_BERTH` (each of its
  live containers too), one that had ended already keeps the state and reason it ended with.
* ``close()`` releases what this object holds (clients, threads) and never stops a workload;
  ``shutdown()`` stops the helper processes a deployer keeps beside its workloads (the
  launcher's daemon), which ends the workloads that live inside them.

Adding a deployer: a sub-package ``berth/deployers/<name>/`` whose ``__init__`` exports the
class, plus one line in :data:`berth.deployers.REGISTRY`. Deployers run what the plan says;
they never build or edit vLLM arguments.
"""

from __future__ import annotations

import copy
import os
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

from gpustack_runtime.deployer import WorkloadPlan

from berth.deployers._stdlib.files import default_run_dir
from berth.deployers._stdlib.names import name_problem
from berth.schemas.workload import ContainerStatus, LogChunk, WorkloadState, WorkloadStatus, aggregate_state

#: Label set on every workload berth creates, so it can find its own after a restart.
MANAGED_LABEL = "berth.io/managed"
#: Label carrying the berth instance name.
INSTANCE_LABEL = "berth.io/instance"
#: Name of the run container in every plan.
RUN_CONTAINER = "default"
#: Name of the Ray head sidecar of a distributed leader.
RAY_HEAD_CONTAINER = "ray-head"
#: Default cap on one log read, as the launcher API specifies (1 MiB).
MAX_LOG_READ = 1 << 20
#: The reason of a workload (and of each container) that was live when berth deleted it.
STOPPED_BY_BERTH = "stopped by berth"


class DeployerError(Exception):
    """Base of every error a deployer raises; the message is meant for a person."""


class DeployerUnavailable(DeployerError):
    """The engine behind the deployer (Docker, vLLM, ...) cannot be reached or imported."""


class WorkloadNotFound(DeployerError):
    """No workload (or container) of that name is known to this deployer."""


class WorkloadExists(DeployerError):
    """A workload of that name already exists."""


class InvalidWorkload(DeployerError):
    """The plan cannot run here as given (bad option, missing image, name too long...)."""


def plan_problem(plan: WorkloadPlan) -> str | None:
    """What no deployer accepts: a bad workload name, no container, bad or repeated container names."""
    problem = name_problem("workload", plan.name)
    if problem is not None:
        return problem
    names = [c.name for c in plan.containers or []]
    if not names:
        return f"plan {plan.name!r} has no container; give it at least the {RUN_CONTAINER!r} container"
    for name in names:
        problem = name_problem("container", name)
        if problem is not None:
            return f"plan {plan.name!r}: {problem}"
    if len(set(names)) != len(names):
        return f"plan {plan.name!r} names a container twice ({', '.join(names)}); give each its own name"
    return None


def labelled(plan: WorkloadPlan) -> WorkloadPlan:
    """A copy of ``plan`` carrying berth's labels (the plan's own values win)."""
    copied = copy.deepcopy(plan)
    copied.labels = {MANAGED_LABEL: "true", INSTANCE_LABEL: str(plan.name), **(plan.labels or {})}
    return copied


def check_range(start: int, end: int | None) -> None:
    """``ValueError`` for a log range no deployer serves (see the module docstring)."""
    if start < 0 or (end is not None and end < start - 1):
        raise ValueError(f"bad log range start={start} end={end}; need 0 <= start and end >= start - 1")


def stopped_status(before: WorkloadStatus | None, after: WorkloadStatus | None) -> WorkloadStatus | None:
    """What ``delete`` returns, from the status just before the stop and the last one seen."""
    last = after or before
    if last is None or before is None or before.state.terminal:
        return last
    live = {c.name for c in before.containers if not c.state.terminal}
    containers = [_stopped(c) if c.name in live else c for c in last.containers]
    state = aggregate_state([c.state for c in containers]) if containers else WorkloadState.STOPPED
    return last.model_copy(update={"containers": containers, "state": state, "reason": STOPPED_BY_BERTH})


def _stopped(container: ContainerStatus) -> ContainerStatus:
    return container.model_copy(update={"state": WorkloadState.STOPPED, "reason": STOPPED_BY_BERTH})


class Deployer(ABC):
    """Runs workload plans. Implementations must be safe to call from several threads."""

    #: Registry name, e.g. ``container``, ``process``, ``launcher``, ``memory``.
    name: ClassVar[str] = "abstract"

    # -- the contract --------------------------------------------------------------------

    def check(self, plan: WorkloadPlan) -> str | None:
        """Why this deployer cannot run ``plan`` (a sentence naming the fix), or ``None``.

        Cheap and side-effect free: no engine is called and nothing is started. Implementations
        extend it with what only they refuse (call ``super().check(plan)`` first).
        """
        return plan_problem(plan)

    def create(self, plan: WorkloadPlan) -> WorkloadStatus:
        """Start every container of ``plan``; return its first status.

        Raises :class:`InvalidWorkload` (with :meth:`check`'s reason, or the engine's),
        :class:`WorkloadExists` or :class:`DeployerUnavailable`.
        """
        problem = self.check(plan)
        if problem is not None:
            raise InvalidWorkload(problem)
        return self._create(labelled(plan))

    @abstractmethod
    def get(self, name: str) -> WorkloadStatus:
        """Current status of workload ``name``; raises :class:`WorkloadNotFound`."""

    def list(self) -> list[WorkloadStatus]:
        """Every workload this deployer created for berth (:data:`MANAGED_LABEL`), by name."""
        mine = [s for s in self._list() if s.labels.get(MANAGED_LABEL)]
        return sorted(mine, key=lambda status: status.name)

    def logs(
        self,
        name: str,
        *,
        container: str = RUN_CONTAINER,
        start: int = 0,
        end: int | None = None,
    ) -> LogChunk:
        """Bytes ``start..end`` (inclusive; ``end=None`` means to the end) of one container's log.

        ``start`` past the end returns an empty chunk whose ``total`` is the log's size; a bad
        range is a ``ValueError``. Raises :class:`WorkloadNotFound` for an unknown workload or
        container.
        """
        check_range(start, end)
        return self._logs(name, container, start, end)

    def delete(self, name: str, *, timeout: float = 10.0) -> WorkloadStatus | None:
        """Stop gracefully (SIGTERM, then kill after ``timeout`` s) and remove every trace.

        Returns ``None`` when nothing of that name existed, else the last status (see the
        module docstring).
        """
        try:
            before: WorkloadStatus | None = self.get(name)
        except WorkloadNotFound:
            before = None
        return stopped_status(before, self._delete(name, timeout))

    def adopt(self, name: str, identity: dict[str, str]) -> WorkloadStatus:
        """Re-attach to a workload created by an earlier berth process, from its identity.

        Deployers whose ``get`` already finds workloads by name need not override this.
        """
        return self.get(name)

    def follow(
        self,
        name: str,
        *,
        container: str = RUN_CONTAINER,
        start: int = 0,
        poll: float = 0.25,
        stop: threading.Event | None = None,
    ) -> Iterator[bytes]:
        """Yield new log bytes as they are written, until the workload ends or ``stop`` is set."""
        return self._follow(name, container, start, poll, stop)

    def _follow(
        self, name: str, container: str, start: int, poll: float, stop: threading.Event | None
    ) -> Iterator[bytes]:
        """How :meth:`follow` streams: by default, polling :meth:`logs`; deployers with a
        native log stream override this."""
        offset = start
        while stop is None or not stop.is_set():
            chunk = self.logs(name, container=container, start=offset, end=offset + MAX_LOG_READ - 1)
            if chunk.data:
                offset += len(chunk.data)
                yield chunk.data
                continue
            try:
                if self.get(name).state.terminal:
                    return
            except WorkloadNotFound:
                return
            time.sleep(poll)

    def serves(self, deployer: str) -> bool:
        """Whether workloads that deployer ``deployer`` (a registry name) created are reached
        through this one: itself, or one of its members for ``auto``."""
        return deployer == self.name

    def close(self) -> None:
        """Release the clients and threads this object holds. Never stops a workload."""

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Stop the helper processes this deployer keeps beside its workloads (the launcher's
        daemon), ending the workloads that live inside them; wait up to about ``timeout`` s.

        Returns whether there was such a process to stop; deployers without one return ``False``.
        """
        return False

    # -- what an implementation provides ---------------------------------------------------

    @abstractmethod
    def _create(self, plan: WorkloadPlan) -> WorkloadStatus:
        """Start ``plan`` (checked, berth's labels added); raise :class:`WorkloadExists` for a taken name."""

    @abstractmethod
    def _list(self) -> Iterable[WorkloadStatus]:
        """Every workload this deployer can find (filtered and ordered by :meth:`list`)."""

    @abstractmethod
    def _logs(self, name: str, container: str, start: int, end: int | None) -> LogChunk:
        """The bytes of a range already validated."""

    @abstractmethod
    def _delete(self, name: str, timeout: float) -> WorkloadStatus | None:
        """Stop and remove ``name``; the last status seen, ``None`` when nothing was there."""


class LocalDeployer(Deployer):
    """A deployer that starts processes on this host and keeps its state in ``run_dir``.

    Every local deployer takes the same arguments: ``run_dir`` (default
    ``$BERTH_DATA_DIR/<name>``, else ``~/.local/share/berth/<name>``), ``python`` (the
    interpreter for its helper programs; default this one), ``inherit_env`` (pass berth's
    environment on to workloads) and ``start_timeout`` (seconds a helper may take to start).
    """

    #: Seconds a helper program may take to start, unless ``start_timeout`` says otherwise.
    default_start_timeout: ClassVar[float] = 30.0

    def __init__(
        self,
        run_dir: str | os.PathLike[str] | None = None,
        *,
        python: str | None = None,
        inherit_env: bool = True,
        start_timeout: float | None = None,
        **options: Any,
    ) -> None:
        chosen = os.fspath(run_dir) if run_dir is not None else default_run_dir(self.name)
        self.run_dir = os.path.abspath(chosen)
        self.python = python or sys.executable
        self.inherit_env = inherit_env
        self.start_timeout = self.default_start_timeout if start_timeout is None else start_timeout
        self._setup(**options)

    def _setup(self) -> None:
        """Take the deployer's own keyword options (those beyond :class:`LocalDeployer`'s) and
        finish construction; called last by ``__init__``. Raises ``TypeError`` on unknown ones."""

    def base_env(self) -> dict[str, str]:
        """The environment a workload starts from, before the plan's own variables."""
        return dict(os.environ) if self.inherit_env else {"PATH": os.defpath}


__all__ = [
    "INSTANCE_LABEL",
    "MANAGED_LABEL",
    "MAX_LOG_READ",
    "RAY_HEAD_CONTAINER",
    "RUN_CONTAINER",
    "STOPPED_BY_BERTH",
    "Deployer",
    "DeployerError",
    "DeployerUnavailable",
    "InvalidWorkload",
    "LocalDeployer",
    "WorkloadExists",
    "WorkloadNotFound",
    "check_range",
    "labelled",
    "plan_problem",
    "stopped_status",
]
