"""What the manager, the watcher and recovery share: settings, deployer, registry, probe,
metrics, per-instance operation locks and the restart schedule."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from berth.deployers.base import Deployer
from berth.worker.metrics import WorkerMetrics
from berth.worker.readiness import Probe
from berth.worker.registry import Registry
from berth.worker.settings import Settings


class OpLocks:
    """One lock per instance id: create, delete and restart of one instance never overlap,
    while operations on different instances run side by side."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def of(self, instance_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(instance_id, threading.Lock())

    def forget(self, instance_id: str) -> None:
        with self._guard:
            self._locks.pop(instance_id, None)


class RestartSchedule:
    """When each failed instance is due for its next restart (monotonic seconds)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._due: dict[str, float] = {}

    def schedule(self, instance_id: str, delay: float) -> None:
        with self._guard:
            self._due[instance_id] = time.monotonic() + delay

    def cancel(self, instance_id: str) -> None:
        with self._guard:
            self._due.pop(instance_id, None)

    def pop_due(self) -> list[str]:
        now = time.monotonic()
        with self._guard:
            due = [key for key, at in self._due.items() if at <= now]
            for key in due:
                del self._due[key]
        return due

    def pending(self, instance_id: str) -> bool:
        with self._guard:
            return instance_id in self._due


@dataclass
class WorkerContext:
    settings: Settings
    deployer: Deployer
    registry: Registry
    probe: Probe
    metrics: WorkerMetrics
    owner: str
    locks: OpLocks = field(default_factory=OpLocks)
    restarts: RestartSchedule = field(default_factory=RestartSchedule)
