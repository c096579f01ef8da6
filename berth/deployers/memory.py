"""An in-memory deployer: runs nothing, records everything. The fake beside the real ones.

It keeps the whole contract of :mod:`berth.deployers.base` (the contract suite in
``tests/contract`` runs it through the same cases as the real deployers), so the worker's and
the API's tests drive lifecycles on it without an engine: a test can mark a workload running,
make it fail with an exit code, or append log bytes.
"""

from __future__ import annotations

import threading
import time

from gpustack_runtime.deployer import WorkloadPlan

from berth.deployers.base import Deployer, WorkloadExists, WorkloadNotFound
from berth.schemas.workload import (
    ContainerStatus,
    LogChunk,
    WorkloadState,
    WorkloadStatus,
    aggregate_state,
)


__all__ = ["MemoryDeployer"]


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
        #: Every plan created, as submitted (berth's labels added).
        self.created: list[WorkloadPlan] = []

    def _create(self, plan: WorkloadPlan) -> WorkloadStatus:
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

    def _list(self) -> list[WorkloadStatus]:
        with self._lock:
            names = list(self._entries)
        return [self.get(n) for n in names]

    def _logs(self, name: str, container: str, start: int, end: int | None) -> LogChunk:
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or container not in entry.logs:
                raise WorkloadNotFound(f"no container {container!r} in workload {name!r}")
            data = bytes(entry.logs[container])
        stop = len(data) if end is None else min(len(data), end + 1)
        return LogChunk(data=data[start:stop] if start < stop else b"", start=start, total=len(data))

    def _delete(self, name: str, timeout: float) -> WorkloadStatus | None:
        try:
            status = self.get(name)
        except WorkloadNotFound:
            return None
        with self._lock:
            self._entries.pop(name, None)
        return status

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
