"""The worker's one allocator: the only way an instance or a reservation takes ports and GPUs.

It knows what every instance's record holds and what every reservation promises (both in the
registry's file, so a promise survives a restart). Two ways in, used by the spec and launcher
APIs, swap and the GPUStack agent alike (all through ``ServeManager``):

- :meth:`Allocator.place` records a new instance: admission and planning run against a snapshot
  of the holdings, then the record is inserted by a compare-and-set;
- :meth:`Allocator.reserve` keeps ports for an instance that does not exist yet, under a key (the
  id the instance will have); creating that instance may use them and consumes the reservation
  in the transaction that records it. :meth:`Allocator.release` drops one.

Locks: ``_lock`` guards one step only, from "nothing chosen is held by anyone" to "it is
written": a set lookup against the holdings and one SQLite commit (the record or reservation
itself; the check would mean nothing without it). Port probes (binding each candidate),
planning (reading the model's config, creating cache dirs) and deployer calls all run before
it, with no lock held; when something chosen was taken meanwhile, the work is redone against a
fresh snapshot, at most :data:`TRIES` times. A collision always means another request won
something since the snapshot (a given port or GPU that is already held fails admission itself),
so the retries of one request are bounded by how many others run at once; :data:`TRIES` only
stops a pathological storm. Releasing only frees, so it takes no lock here (the
registry's own lock orders its writes). Callers on an event loop send all of this to a thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from berth.backends import ServePlan
from berth.worker.admission._admission import Admitted, Holdings, free_ports
from berth.worker.errors import InstanceConflict, InvalidRequest
from berth.worker.settings import Settings
from berth.worker.store import InstanceRecord, Registry

logger = logging.getLogger(__name__)

TRIES = 64
MAX_RESERVED_PORTS = 64


@dataclass(frozen=True, slots=True)
class Placement:
    """A new instance ready to be recorded: what admission chose, its record and its plan."""

    admitted: Admitted
    record: InstanceRecord
    plan: ServePlan


Prepare = Callable[[Holdings], Placement]


class Allocator:
    """Ports and GPUs for instances and reservations; constructing it does no I/O."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self._settings = settings
        self._registry = registry
        self._lock = threading.Lock()  # the compare-and-set: check the holdings, then write

    def holdings(self, *, excluding: str | None = None) -> Holdings:
        """What every instance holds and every reservation promises (but ``excluding``'s own reservation)."""
        reserved = self._registry.reservations()
        if excluding is not None:
            reserved.pop(excluding, None)
        return Holdings.of(self._registry.all(), reserved)

    def place(self, instance_id: str, prepare: Prepare, *, claim: Callable[[str], object]) -> Placement:
        """Record the instance ``prepare`` admits and plans against a snapshot of the holdings.

        The insert happens only if the id is still free and nothing the placement holds was taken
        meanwhile; else ``prepare`` runs again on a fresh snapshot. ``claim(instance_id)`` runs
        right after the insert, still under the lock (the manager takes the instance's own lock
        there, so no other operation sees the record before it is deployed).
        """
        collided = ""
        for _ in range(TRIES):
            self._check_new(instance_id)
            placement = prepare(self.holdings(excluding=instance_id))
            with self._lock:
                collided = self._collision(instance_id, placement.admitted)
                if not collided:
                    record = self._registry.insert(placement.record)
                    claim(instance_id)
                    return replace(placement, record=record)
            logger.info("instance %s: %s was taken while it was admitted; admitting it again", instance_id, collided)
        raise InstanceConflict(
            f"instance {instance_id!r}: {collided} was taken by another request while this one was admitted, "
            f"{TRIES} times in a row; retry the request"
        )

    def reserve(self, key: str, count: int) -> list[int]:
        """``count`` ports of ``instance_port_range`` kept for ``key`` until it is created or released.

        The same key gets its existing reservation back (whatever ``count``). Ports are never
        ones a record or another reservation holds, nor ones bound on this host.
        """
        _check_reservation(key, count)
        collided = ""
        for _ in range(TRIES):
            existing = self._registry.reservations().get(key)
            if existing is not None:
                return list(existing)
            ports = self._free_ports(count)
            with self._lock:
                collided = self._taken(ports, self.holdings())
                if not collided:
                    return list(self._registry.reserve(key, ports))
        raise InstanceConflict(
            f"reservation {key!r}: {collided} was taken by another request while it was chosen, "
            f"{TRIES} times in a row; retry"
        )

    def release(self, key: str) -> None:
        """Drop ``key``'s reservation; nothing happens when there is none."""
        self._registry.release(key)

    def _free_ports(self, count: int) -> list[int]:
        """The lowest ``count`` ports neither held nor bound (probes: called with no lock held)."""
        return free_ports(count, self._settings, self.holdings())

    def _check_new(self, instance_id: str) -> None:
        if self._registry.get(instance_id) is not None:
            raise InstanceConflict(f"instance {instance_id!r} already exists")

    def _collision(self, instance_id: str, admitted: Admitted) -> str:
        """What of the admitted instance someone holds now ("" when nothing); under ``_lock``."""
        self._check_new(instance_id)
        held = self.holdings(excluding=instance_id)
        taken = self._taken(sorted(admitted.ports.held()), held)
        if taken or admitted.shared:
            return taken
        gpu = next((index for index in admitted.gpus if index in held.gpus), None)
        return "" if gpu is None else f"GPU {gpu} (now held by {held.gpus[gpu]!r})"

    @staticmethod
    def _taken(ports: Iterable[int], held: Holdings) -> str:
        port = next((port for port in ports if port in held.ports), None)
        return "" if port is None else f"port {port} (now held by {held.ports[port]!r})"


def _check_reservation(key: str, count: int) -> None:
    if not key:
        raise InvalidRequest("reservation key: must not be empty")
    if not 1 <= count <= MAX_RESERVED_PORTS:
        raise InvalidRequest(f"reservation {key!r}: count {count} must be from 1 to {MAX_RESERVED_PORTS}")
