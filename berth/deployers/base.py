"""The deployer contract: where a ``WorkloadPlan`` runs.

Every deployer implements the same five operations. Adding a deployer means one module that
subclasses :class:`Deployer` plus one line in :mod:`berth.deployers` (the registry).
Deployers run what the plan says; they never build or edit vLLM arguments.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import ClassVar

from gpustack_runtime.deployer import WorkloadPlan

from berth.schemas.workload import LogChunk, WorkloadStatus

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


class Deployer(ABC):
    """Runs workload plans. Implementations must be safe to call from several threads."""

    #: Registry name, e.g. ``container``, ``process``, ``launcher``, ``memory``.
    name: ClassVar[str] = "abstract"

    @abstractmethod
    def create(self, plan: WorkloadPlan) -> WorkloadStatus:
        """Start every container of ``plan``; return its first status (usually ``starting``).

        Raises :class:`WorkloadExists`, :class:`InvalidWorkload` or :class:`DeployerUnavailable`.
        """

    @abstractmethod
    def get(self, name: str) -> WorkloadStatus:
        """Current status of workload ``name``; raises :class:`WorkloadNotFound`."""

    @abstractmethod
    def list(self) -> list[WorkloadStatus]:
        """Every workload this deployer created for berth (found by :data:`MANAGED_LABEL`)."""

    @abstractmethod
    def logs(
        self,
        name: str,
        *,
        container: str = RUN_CONTAINER,
        start: int = 0,
        end: int | None = None,
    ) -> LogChunk:
        """Bytes ``start..end`` (inclusive; ``end=None`` means to the end) of one container's log.

        ``start`` past the end returns an empty chunk whose ``total`` is the log's size.
        Raises :class:`WorkloadNotFound` for an unknown workload or container.
        """

    @abstractmethod
    def delete(self, name: str, *, timeout: float = 10.0) -> WorkloadStatus | None:
        """Stop gracefully (SIGTERM, then kill after ``timeout`` s) and remove every trace.

        Returns the last status, or ``None`` when nothing of that name existed.
        """

    def adopt(self, name: str, identity: dict[str, str]) -> WorkloadStatus:
        """Re-attach to a workload created by an earlier berth process, from its identity.

        Deployers whose ``get`` already finds workloads by label need not override this.
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

    def close(self) -> None:
        """Release clients and threads held by the deployer (never stops workloads)."""
