"""Pure lifecycle rules: what a deployer status and a readiness check make of an instance's state,
when a failed instance is restarted, and how long it waits first.

Nothing here does I/O; the watcher applies the changes these functions return.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from berth.deployers import RUN_CONTAINER
from berth.schemas.workload import WorkloadState, WorkloadStatus
from berth.worker.engine import Readiness
from berth.worker.store import InstanceRecord, InstanceState

#: Label naming the worker (its registry) that owns a workload, so orphans are told apart.
OWNER_LABEL = "berth.io/owner"
#: How a record's reason starts while the deployer could not be asked about it at start; the
#: watcher's next observation of the instance clears it.
READOPTION_PENDING = "re-adoption pending"
def owner_value(data_dir: Path) -> str:
    """A short, stable value for :data:`OWNER_LABEL` derived from the registry's location."""
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]


def created_changes(status: WorkloadStatus, now: float) -> dict[str, Any]:
    """The record after its workload was created and first reported ``status``."""
    changes: dict[str, Any] = {"identity": dict(status.identity), "started_at": now, "ready_at": None}
    if status.state.terminal:
        return changes | _ended(status)
    return changes | {"state": InstanceState.STARTING, "reason": "waiting for readiness", "exit_code": None}


def _exit_code(status: WorkloadStatus) -> int | None:
    """The run container's exit code; ``128 + signal`` (as a shell reports it) when a signal ended it."""
    if status.exit_code is not None:
        return status.exit_code
    run = status.container(RUN_CONTAINER)
    return 128 + run.signal if run is not None and run.signal else None


def _ended(status: WorkloadStatus) -> dict[str, Any]:
    state = InstanceState.FAILED if status.state is WorkloadState.FAILED else InstanceState.STOPPED
    reason = status.reason or ("failed" if state is InstanceState.FAILED else "exited")
    return {"state": state, "reason": reason, "exit_code": _exit_code(status)}


def observed_changes(
    record: InstanceRecord,
    status: WorkloadStatus | None,
    readiness: Readiness | None,
    now: float,
) -> dict[str, Any]:
    """Changes to ``record`` given the deployer's ``status`` (None: vanished) and readiness;
    its identity too, which a deployer may complete after ``create`` (the pids of processes
    that were still starting) or change (after a restart of berth)."""
    changes = _state_changes(record, status, readiness, now)
    if status is not None and status.identity and status.identity != record.identity:
        changes["identity"] = dict(status.identity)
    return changes


def _state_changes(
    record: InstanceRecord, status: WorkloadStatus | None, readiness: Readiness | None, now: float
) -> dict[str, Any]:
    if status is None:
        return {"state": InstanceState.FAILED, "reason": _vanished(record), "exit_code": None}
    if status.state.terminal:
        return _ended(status)
    if record.state is InstanceState.RUNNING:
        return {"reason": ""} if record.reason.startswith(READOPTION_PENDING) else {}
    if readiness is not None and readiness.failed:
        return {"state": InstanceState.FAILED, "reason": readiness.detail, "exit_code": None}
    if readiness is not None and readiness.ready:
        return {"state": InstanceState.RUNNING, "reason": "", "ready_at": now}
    reason = readiness.detail if readiness is not None else "waiting for the workload to start"
    changes = {"state": InstanceState.STARTING, "reason": reason}
    return {k: v for k, v in changes.items() if getattr(record, k) != v}


def _vanished(record: InstanceRecord) -> str:
    if record.state is InstanceState.PENDING:
        return "the worker stopped before the workload was created"
    return f"workload {record.workload!r} is gone from the {record.deployer} deployer"


def restart_due(record: InstanceRecord) -> bool:
    """A failed instance is restarted when its policy is on-failure and restarts remain."""
    return (
        record.state is InstanceState.FAILED
        and record.restart_policy == "on-failure"
        and record.restarts < record.max_restarts
    )
