"""What a deployer reports about a workload it runs: states, per-container status, log chunks."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field


class LifecycleState(str, Enum):
    """The base of berth's state enums (a workload's, an instance's): a state prints as its
    value, and ``failed`` and ``stopped`` are final."""

    def __str__(self) -> str:
        return self.value

    @property
    def terminal(self) -> bool:
        return self.value in ("failed", "stopped")


class WorkloadState(LifecycleState):
    """berth's lifecycle states, shared by every deployer.

    ``starting`` means the processes/containers exist but the workload is not yet known to be
    ready; the worker promotes an instance to ``running`` only once its readiness check passes.
    """

    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    FAILED = "failed"
    STOPPED = "stopped"
    UNKNOWN = "unknown"


class ContainerStatus(BaseModel):
    """One container of a plan (or the local process standing in for it)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Container name from the plan, e.g. 'default' or 'ray-head'.")
    state: WorkloadState = Field(description="State of this container.")
    exit_code: int | None = Field(default=None, description="Exit code once it has exited.")
    signal: int | None = Field(default=None, description="Signal that ended it, if any.")
    reason: str = Field(default="", description="Human-readable reason for the state.")
    pid: int | None = Field(default=None, description="Process id (process deployers only).")


class WorkloadStatus(BaseModel):
    """A workload as one deployer sees it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Workload name (the plan's name).")
    deployer: str = Field(description="Name of the deployer that runs it.")
    state: WorkloadState = Field(description="Aggregate state over all containers.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels from the plan.")
    containers: list[ContainerStatus] = Field(default_factory=list)
    exit_code: int | None = Field(default=None, description="Run container's exit code.")
    reason: str = Field(default="", description="Why it is in this state.")
    created_at: float | None = Field(default=None, description="Unix time it was created.")
    identity: dict[str, str] = Field(
        default_factory=dict,
        description="Deployer-specific handle used to re-adopt it (container ids, pgid, ...).",
    )

    def container(self, name: str) -> ContainerStatus | None:
        return next((c for c in self.containers if c.name == name), None)


@dataclass(frozen=True, slots=True)
class LogChunk:
    """Bytes ``[start, start + len(data))`` of a log whose current size is ``total``."""

    data: bytes
    start: int
    total: int

    @property
    def end(self) -> int:
        """Inclusive index of the last byte returned (``start - 1`` when empty)."""
        return self.start + len(self.data) - 1


def aggregate_state(states: list[WorkloadState]) -> WorkloadState:
    """Fold container states into one workload state: any failure fails the workload."""
    if not states:
        return WorkloadState.UNKNOWN
    for state in (WorkloadState.FAILED, WorkloadState.PENDING, WorkloadState.STARTING):
        if state in states:
            return state
    if all(s is WorkloadState.STOPPED for s in states):
        return WorkloadState.STOPPED
    if WorkloadState.STOPPED in states:
        # a sidecar or the main container ended while the other still runs
        return WorkloadState.FAILED
    if all(s is WorkloadState.RUNNING for s in states):
        return WorkloadState.RUNNING
    return WorkloadState.UNKNOWN
