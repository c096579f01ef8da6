"""Which ports are already bound on this host, read from ``/proc/net`` (no socket is opened).

Processes share the host network, so a plan's declared ports are not published anywhere; the
process deployer only checks, before starting, that none of them is taken already.
"""

from __future__ import annotations

from collections.abc import Iterable

from gpustack_runtime.deployer import Container, ContainerPortProtocolEnum

from berth.deployers.base import InvalidWorkload

_TCP_LISTEN = "0A"
_TABLES = {
    ContainerPortProtocolEnum.TCP: ("/proc/net/tcp", "/proc/net/tcp6"),
    ContainerPortProtocolEnum.UDP: ("/proc/net/udp", "/proc/net/udp6"),
    ContainerPortProtocolEnum.SCTP: (),
}


def bound_ports(protocol: ContainerPortProtocolEnum = ContainerPortProtocolEnum.TCP) -> set[int]:
    """Local ports with a listening TCP socket (or any bound UDP socket), on any address."""
    ports: set[int] = set()
    for table in _TABLES.get(protocol, ()):
        ports |= _ports_in(table, listen_only=protocol is ContainerPortProtocolEnum.TCP)
    return ports


def _ports_in(table: str, *, listen_only: bool) -> set[int]:
    try:
        with open(table, encoding="ascii") as fh:
            lines = fh.read().splitlines()[1:]
    except OSError:
        return set()
    ports: set[int] = set()
    for line in lines:
        cols = line.split()
        if len(cols) < 4 or (listen_only and cols[3] != _TCP_LISTEN):
            continue
        ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def check_ports_free(containers: Iterable[Container]) -> None:
    """Raise :class:`InvalidWorkload` naming the first declared port already bound here."""
    taken: dict[ContainerPortProtocolEnum, set[int]] = {}
    for container in containers:
        for port in container.ports or []:
            protocol = ContainerPortProtocolEnum(port.protocol or ContainerPortProtocolEnum.TCP)
            if protocol not in taken:
                taken[protocol] = bound_ports(protocol)
            if port.internal in taken[protocol]:
                raise InvalidWorkload(
                    f"port {port.internal}/{protocol.value.lower()} declared by container "
                    f"{container.name!r} is already bound on this host; stop what uses it or "
                    f"give the instance other ports"
                )
