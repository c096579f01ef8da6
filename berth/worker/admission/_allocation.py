"""Giving instances ports and GPUs without collisions.

Ports come from the worker's instance range (HTTP, data-parallel RPC, distributed init) and Ray
bands from its Ray pool, skipping every port another instance holds or a reservation promises
(the registry's, recovered ones included) and every port already bound on this host. GPUs are
chosen by index or UUID; one already held by another instance is refused unless sharing is
asked for.

Whether a port is bound is found out by binding it (:func:`~berth.utils.ports.is_port_free`):
these helpers are called with no lock held, against a snapshot of the holdings; the
:class:`~berth.worker.admission.Allocator` checks the choice again under its lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from berth.schemas import GPUDevice, InstancePorts
from berth.utils.ports import is_port_free, parse_port_range
from berth.worker.errors import InstanceConflict, InvalidRequest, ResourceExhausted

PortCheck = Callable[[int], bool]


def expand_ports(ports: Mapping[str, object]) -> set[int]:
    """Every port a record holds, from its stored :class:`InstancePorts`: the scheduler's whole
    list (named and extra ports) and the whole ``ray_range`` band."""
    return InstancePorts.model_validate(ports).held()


@dataclass(slots=True)
class PortAllocator:
    """Ports from ``port_range`` and Ray bands of ``band_size`` from ``ray_pool``."""

    port_range: str
    ray_pool: str
    band_size: int
    is_free: PortCheck = is_port_free

    def allocate(self, count: int, held: set[int]) -> list[int]:
        """The ``count`` lowest ports of the range neither held nor bound here."""
        start, end = parse_port_range(self.port_range)
        found: list[int] = []
        for port in range(start, end + 1):
            if port not in held and self.is_free(port):
                found.append(port)
                if len(found) == count:
                    return found
        raise ResourceExhausted(
            f"no {count} free ports left in instance_port_range {self.port_range}; "
            "delete instances or widen the range"
        )

    def allocate_band(self, held: set[int]) -> str:
        """A free Ray band ``START-END`` (its fixed ports unbound on this host)."""
        start, end = parse_port_range(self.ray_pool)
        for first in range(start, end - self.band_size + 2, self.band_size):
            band = range(first, first + self.band_size)
            if held.isdisjoint(band) and all(self.is_free(p) for p in band[:11]):
                return f"{first}-{first + self.band_size - 1}"
        raise ResourceExhausted(
            f"no free Ray band of {self.band_size} ports left in ray_port_range {self.ray_pool}; "
            "delete distributed instances or widen the range"
        )

    def check(self, ports: Iterable[int], held: Mapping[int, str], field: str) -> None:
        """Refuse ports another instance holds (409) or something on this host has bound (409)."""
        for port in ports:
            owner = held.get(port)
            if owner is not None:
                raise InstanceConflict(f"{field}: port {port} is already used by instance {owner!r}")
            if not self.is_free(port):
                raise InstanceConflict(
                    f"{field}: port {port} is already in use on this host; choose another or omit it"
                )


@dataclass(slots=True)
class GPUAllocator:
    """The worker's devices, handed out by index or UUID."""

    devices: Sequence[GPUDevice]

    def resolve(self, wanted: Sequence[str], field: str) -> list[int]:
        """Indexes for ``wanted`` (UUIDs or index numbers); unknown or repeated ones are refused."""
        if not self.devices:
            raise InvalidRequest(f"{field}: this worker has no GPUs configured (set BERTH_GPU_DEVICES)")
        by_key = {d.uuid: d.index for d in self.devices if d.uuid}
        by_key.update({str(d.index): d.index for d in self.devices})
        indexes: list[int] = []
        for position, key in enumerate(wanted):
            index = by_key.get(str(key).strip())
            if index is None:
                known = ", ".join(sorted(by_key))
                raise InvalidRequest(f"{field}[{position}]: no GPU {key!r} on this worker; known: {known}")
            if index in indexes:
                raise InvalidRequest(f"{field}[{position}]: GPU {key!r} is listed twice")
            indexes.append(index)
        return indexes

    def check_free(self, indexes: Iterable[int], held: Mapping[int, str], field: str, *, shared: bool) -> None:
        if shared:
            return
        for index in indexes:
            owner = held.get(index)
            if owner is not None:
                raise InstanceConflict(
                    f"{field}: GPU {index} is in use by instance {owner!r}; choose another, "
                    "or allow sharing (allow_shared_gpus)"
                )

    def pick(self, count: int, held: Mapping[int, str]) -> list[int]:
        """``count`` free GPUs, lowest index first (none on a CPU worker)."""
        if not self.devices or count <= 0:
            return []
        free = [d.index for d in sorted(self.devices, key=lambda d: d.index) if d.index not in held]
        if len(free) < count:
            raise ResourceExhausted(
                f"the instance needs {count} GPUs but only {len(free)} are free on this worker; "
                "delete instances or give gpu_uuids to share"
            )
        return free[:count]
