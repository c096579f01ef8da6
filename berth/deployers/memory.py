"""An in-memory deployer: runs nothing, records everything. The fake beside the real ones.

Tests of the worker and the API use it to drive lifecycles without an engine: a test can
mark a workload running, make it fail with an exit code, or append log bytes.
"""

from __future__ import annotations

import threading
import time

from gpustack_runtime.deployer import WorkloadPlan

from berth.deployers.base import (
    MANAGED_LABEL,
    Deployer,
    WorkloadExists,
    WorkloadNotFound,
)
from berth.schemas.workload import (
    ContainerStatus,
    LogChunk,
    WorkloadState,
    WorkloadStatus,
    aggregate_state,
)


class _Entry:
    def __init__(self, plan: WorkloadPlan, initial: WorkloadState) -> None:
        self.plan = plan
        self.created_at = time.time()
        names = [c.name for c in plan.containers or []]
        self.containers = {n: ContainerStatus(name=n, state=initial) for n in names}
        self.logs: dict[str, bytearray] = {n: bytearray() for n in names}


class MemoryDeployer(Deployer):
    """Keeps plans in a dict. ``initial`` is the state a new workload reports."""

    name = "memory"

    def __init__(self, initial: WorkloadState = WorkloadState.RUNNING) -> None:
        self._initial = initial
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self.created: list[WorkloadPlan] = []

    def create(self, plan: WorkloadPlan) -> WorkloadStatus:
        with self._lock:
            if plan.name in self._entries:
                raise WorkloadExists(f"workload {plan.name!r} already exists")
            self._entries[plan.name] = _Entry(plan, self._initial)
            self.created.append(plan)
        return self.get(plan.name)

    def get(self, name: str) -> WorkloadStatus:
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                raise WorkloadNotFound(f"no workload named {name!r}")
            containers = [c.model_copy() for c in entry.containers.values()]
        run = containers[0] if containers else None
        return WorkloadStatus(
            name=name,
            deployer=self.name,
            state=aggregate_state([c.state for c in containers]),
            labels=dict(entry.plan.labels or {}),
            containers=containers,
            exit_code=run.exit_code if run else None,
            reason=run.reason if run else "",
            created_at=entry.created_at,
            identity={"memory": name},
        )

    def list(self) -> list[WorkloadStatus]:
        with self._lock:
            names = [n for n, e in self._entries.items() if (e.plan.labels or {}).get(MANAGED_LABEL)]
        return [self.get(n) for n in names]

    def logs(self, name, *, container="default", start=0, end=None) -> LogChunk:
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or container not in entry.logs:
                raise WorkloadNotFound(f"no container {container!r} in workload {name!r}")
            data = bytes(entry.logs[container])
        stop = len(data) if end is None else min(len(data), end + 1)
        return LogChunk(data=data[start:stop] if start < len(data) else b"", start=start, total=len(data))

    def delete(self, name: str, *, timeout: float = 10.0) -> WorkloadStatus | None:
        try:
            status = self.get(name)
        except WorkloadNotFound:
            return None
        with self._lock:
            self._entries.pop(name, None)
        return status.model_copy(update={"state": WorkloadState.STOPPED})

    # -- test controls -------------------------------------------------------------------

    def set_state(
        self,
        name: str,
        state: WorkloadState,
        *,
        container: str | None = None,
        exit_code: int | None = None,
        reason: str = "",
    ) -> None:
        """Force a container (default: all) into ``state``."""
        with self._lock:
            entry = self._entries[name]
            for cname, c in entry.containers.items():
                if container is None or cname == container:
                    entry.containers[cname] = c.model_copy(
                        update={"state": state, "exit_code": exit_code, "reason": reason}
                    )

    def write_log(self, name: str, data: bytes, *, container: str = "default") -> None:
        with self._lock:
            self._entries[name].logs[container].extend(data)
