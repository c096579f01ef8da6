"""What the manager, the watcher and recovery share: settings, deployer, registry, probe, the one
engine client, metrics, per-instance operation locks, the restart schedule and the adapter-name
claims.

Locks, and what they guard: an :class:`OpLocks` entry serialises the lifecycle operations of one
instance (create, delete, restart); they hold it across their deployer calls and rewrite the
record under it. The watcher takes it only without waiting, to write what it observed; the LoRA
operations never take it: their record writes, and the watcher's, are compare-and-sets on the
record's revision (``Registry.update_if``). The restart schedule and the adapter-name claims
each have one short lock over memory, never held across I/O."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from berth.deployers.base import Deployer
from berth.worker.engine import EngineClient, Probe
from berth.worker.loras import NameClaims
from berth.worker.metrics import WorkerMetrics
from berth.worker.settings import Settings
from berth.worker.store import Registry


@dataclass
class _Held:
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0


class OpLocks:
    """One lock per instance id: create, delete and restart of one instance never overlap,
    while operations on different instances run side by side.

    Locks are counted (holders and waiters) and dropped when unused, so thousands of
    create/delete cycles leave nothing behind, and one id never has two live locks.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._held: dict[str, _Held] = {}

    def acquire(self, instance_id: str, *, blocking: bool = True, timeout: float = -1) -> bool:
        """Take ``instance_id``'s lock (waiting at most ``timeout`` s when given); False if not taken."""
        with self._guard:
            entry = self._held.setdefault(instance_id, _Held())
            entry.users += 1
        if entry.lock.acquire(blocking, timeout if blocking else -1):
            return True
        self._drop(instance_id, entry)
        return False

    def release(self, instance_id: str) -> None:
        with self._guard:
            entry = self._held[instance_id]
        entry.lock.release()
        self._drop(instance_id, entry)

    def _drop(self, instance_id: str, entry: _Held) -> None:
        with self._guard:
            entry.users -= 1
            if entry.users == 0 and self._held.get(instance_id) is entry:
                del self._held[instance_id]

    @contextmanager
    def held(self, instance_id: str) -> Iterator[None]:
        self.acquire(instance_id)
        try:
            yield
        finally:
            self.release(instance_id)

    def __len__(self) -> int:
        with self._guard:
            return len(self._held)


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
    engine: EngineClient = field(default_factory=EngineClient)
    locks: OpLocks = field(default_factory=OpLocks)
    restarts: RestartSchedule = field(default_factory=RestartSchedule)
    lora_claims: NameClaims = field(default_factory=NameClaims)
