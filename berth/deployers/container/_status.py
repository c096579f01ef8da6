"""gpustack-runtime's workload status turned into berth's: pure functions, no engine calls.

gpustack-runtime reports one state per workload (``Running``, ``Failed``, ``Inactive``...), the
containers one can read logs of (``loggable``: name and token), and an exit entry for each
container that has ended or is blocked from starting (``exits``). berth wants a state per
container, so each container is judged by its own exit entry when it has one, and otherwise by
the workload state:

==================  ===============================  =========================================
gpustack-runtime    container with no exit entry     container with an exit entry
==================  ===============================  =========================================
Pending             pending                          exit 0: stopped; non-zero: failed (exit
Initializing        starting                         code, reason, signal above 128); no code
Running             running                          yet (blocked, e.g. ImagePullBackOff):
Unhealthy           starting (restarting, or its     pending, or failed when the workload
                    health check not yet passing)    has failed
Inactive, Failed    running (another one ended)
Unknown             unknown
==================  ===============================  =========================================

A container with no exit entry is also ``running`` whenever another container of the workload
has exited: the workload state then speaks of that other one.

``running`` means the container runs (and passes its health check where the plan declares one);
whether the server inside answers is the worker's readiness probe, not the deployer's business.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime

from gpustack_runtime.deployer import WorkloadStatus as RuntimeStatus
from gpustack_runtime.deployer import WorkloadStatusStateEnum as RuntimeState
from gpustack_runtime.deployer.__types__ import WorkloadStatusExit

from berth.deployers.base import RUN_CONTAINER
from berth.schemas.workload import (
    ContainerStatus,
    WorkloadState,
    WorkloadStatus,
    aggregate_state,
)

#: State of a container that has not exited, by the workload's gpustack-runtime state.
LIVE_STATE: dict[RuntimeState, WorkloadState] = {
    RuntimeState.UNKNOWN: WorkloadState.UNKNOWN,
    RuntimeState.PENDING: WorkloadState.PENDING,
    RuntimeState.INITIALIZING: WorkloadState.STARTING,
    RuntimeState.RUNNING: WorkloadState.RUNNING,
    RuntimeState.UNHEALTHY: WorkloadState.STARTING,
    RuntimeState.INACTIVE: WorkloadState.RUNNING,
    RuntimeState.FAILED: WorkloadState.RUNNING,
}
#: Workload state when gpustack-runtime lists no container at all.
EMPTY_STATE: dict[RuntimeState, WorkloadState] = {
    RuntimeState.FAILED: WorkloadState.FAILED,
    RuntimeState.INACTIVE: WorkloadState.STOPPED,
    RuntimeState.PENDING: WorkloadState.PENDING,
    RuntimeState.INITIALIZING: WorkloadState.STARTING,
}
#: Identity keys are ``container/<name>``; their values are gpustack-runtime's tokens (ids).
IDENTITY_PREFIX = "container/"

_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_created(text: str | None) -> float | None:
    """``2026-01-02T03:04:05.123456789Z`` (Docker's nanoseconds included) -> Unix time."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(_FRACTION.sub(r"\1", text.strip())).timestamp()
    except ValueError:
        return None


def signal_of(exit_code: int | None) -> int | None:
    """The signal a shell-style exit code above 128 stands for (137 -> 9), else None."""
    if exit_code is not None and 128 < exit_code < 160:
        return exit_code - 128
    return None


def exited_container(name: str, entry: WorkloadStatusExit, workload: RuntimeState) -> ContainerStatus:
    """A container that gpustack-runtime lists among its exits."""
    code = entry.exit_code
    detail = entry.message or entry.reason
    if code is None:
        state = WorkloadState.FAILED if workload is RuntimeState.FAILED else WorkloadState.PENDING
        reason = detail or "blocked from starting"
    elif code == 0 and entry.reason in ("", None):
        state, reason = WorkloadState.STOPPED, "exited with code 0"
    else:
        state = WorkloadState.FAILED
        reason = f"exited with code {code}" + (f" ({detail})" if detail else "")
    return ContainerStatus(name=name, state=state, exit_code=code, signal=signal_of(code), reason=reason)


def live_container(
    name: str, workload: RuntimeState, message: str = "", *, others_ended: bool = False
) -> ContainerStatus:
    """A container that has not exited, judged by the workload state.

    When another container has ended, the workload state speaks of that one (gpustack-runtime
    0.2.6 calls a workload with a crashed container "Unhealthy" on engines that report an empty
    restart policy), so a container still up is simply running.
    """
    if others_ended and workload is not RuntimeState.UNKNOWN:
        return ContainerStatus(name=name, state=WorkloadState.RUNNING)
    state = LIVE_STATE.get(workload, WorkloadState.UNKNOWN)
    reason = message if state is not WorkloadState.RUNNING else ""
    return ContainerStatus(name=name, state=state, reason=reason)


def container_names(status: RuntimeStatus) -> list[str]:
    """Names of the plan's containers, the run container first (gpustack-runtime keeps no order)."""
    names = {op.name for op in status.loggable or []}
    if not names:
        names = {entry.name for entry in status.exits or []}
    return sorted(names, key=lambda n: (n != RUN_CONTAINER, n))


def containers_of(status: RuntimeStatus) -> list[ContainerStatus]:
    """One :class:`ContainerStatus` per container of the workload."""
    names = container_names(status)
    exits = {entry.name: entry for entry in status.exits or [] if entry.name in names}
    ended = any(entry.exit_code is not None for entry in exits.values())
    message = status.state_message or ""
    return [
        exited_container(name, exits[name], status.state)
        if name in exits
        else live_container(name, status.state, message, others_ended=ended)
        for name in names
    ]


def workload_state(status: RuntimeStatus, containers: Iterable[ContainerStatus]) -> WorkloadState:
    """Aggregate state: berth's fold over the containers, and gpustack-runtime's failure wins."""
    states = [c.state for c in containers]
    if not states:
        return EMPTY_STATE.get(status.state, WorkloadState.UNKNOWN)
    folded = aggregate_state(states)
    if status.state is RuntimeState.FAILED and folded is not WorkloadState.STOPPED:
        return WorkloadState.FAILED
    return folded


def failed_container(containers: list[ContainerStatus]) -> ContainerStatus | None:
    """The container to blame: a failed one (the run container first), else None."""
    return next((c for c in containers if c.state is WorkloadState.FAILED), None)


def workload_reason(state: WorkloadState, containers: list[ContainerStatus], message: str) -> str:
    """Why the workload is in ``state``, naming the container."""
    blamed = failed_container(containers)
    if state is WorkloadState.FAILED and blamed is not None:
        return f"container {blamed.name!r} {blamed.reason}"
    if state is WorkloadState.FAILED:
        stopped = [c.name for c in containers if c.state is WorkloadState.STOPPED]
        if stopped:
            return f"container {stopped[0]!r} ended while the others still run"
    if state is WorkloadState.RUNNING:
        return ""
    return message or next((c.reason for c in containers if c.reason), "")


def identity_of(status: RuntimeStatus) -> dict[str, str]:
    """``{"container/default": <token>, ...}``: the handles logs and adoption use."""
    return {f"{IDENTITY_PREFIX}{op.name}": op.token for op in status.loggable or []}


def to_status(status: RuntimeStatus, deployer: str) -> WorkloadStatus:
    """berth's view of one gpustack-runtime workload status."""
    containers = containers_of(status)
    state = workload_state(status, containers)
    run = next((c for c in containers if c.name == RUN_CONTAINER), None)
    blamed = failed_container(containers)
    exit_code = run.exit_code if run is not None and run.exit_code is not None else None
    if exit_code is None and blamed is not None:
        exit_code = blamed.exit_code
    return WorkloadStatus(
        name=status.name,
        deployer=deployer,
        state=state,
        labels=dict(status.labels or {}),
        containers=containers,
        exit_code=exit_code,
        reason=workload_reason(state, containers, status.state_message or ""),
        created_at=parse_created(status.created_at),
        identity=identity_of(status),
    )


def token_of(status: RuntimeStatus, container: str) -> str | None:
    """gpustack-runtime's token (container id) for reading ``container``'s logs."""
    return next((op.token for op in status.loggable or [] if op.name == container), None)


def has_exited(status: RuntimeStatus, container: str) -> bool:
    """Whether ``container`` has ended for good (its log will not grow)."""
    entry = next((e for e in status.exits or [] if e.name == container), None)
    return entry is not None and entry.exit_code is not None
