"""Whether a plan's declared ports are free here, and which ports are bound on this host.

Processes share the host network, so a plan's declared ports are not published anywhere; the
process deployer only checks, before starting, that none of them is taken already. It does so by
binding each one for an instant, on every address of each family this host has (``0.0.0.0``, and
``::`` IPv6-only): a few system calls, whatever the number of sockets on the host. A TCP probe sets
``SO_REUSEADDR``, as servers do, so connections still closing (``TIME_WAIT``) do not count as taken
and a listener on any address does; a UDP probe does not, so any bound UDP socket counts.

:func:`bound_ports` reads the whole socket tables in ``/proc/net`` instead (no socket is opened):
for checks of many ports at once, as the tests make.
"""

from __future__ import annotations

import errno
import socket
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


_SOCKET_TYPES = {
    ContainerPortProtocolEnum.TCP: socket.SOCK_STREAM,
    ContainerPortProtocolEnum.UDP: socket.SOCK_DGRAM,
}
_FAMILIES = ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::"))
#: The family is missing here (no IPv6 on this host): nothing of that family can hold the port.
_NO_FAMILY = (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT)


def port_taken(port: int, protocol: ContainerPortProtocolEnum = ContainerPortProtocolEnum.TCP) -> bool:
    """Whether something on this host already holds ``port`` (see the module docstring); a
    protocol with no probe here (SCTP) is never taken."""
    kind = _SOCKET_TYPES.get(protocol)
    if kind is None:
        return False
    return any(_bind_fails(family, host, kind, port) for family, host in _FAMILIES)


def _bind_fails(family: int, host: str, kind: int, port: int) -> bool:
    try:
        sock = socket.socket(family, kind)
    except OSError as exc:
        if exc.errno in _NO_FAMILY:
            return False
        raise
    with sock:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in _NO_FAMILY:
                return False
            return True
    return False


def check_ports_free(containers: Iterable[Container]) -> None:
    """Raise :class:`InvalidWorkload` naming the first declared port already taken here."""
    for container in containers:
        for port in container.ports or []:
            protocol = ContainerPortProtocolEnum(port.protocol or ContainerPortProtocolEnum.TCP)
            if port_taken(port.internal, protocol):
                raise InvalidWorkload(
                    f"port {port.internal}/{protocol.value.lower()} declared by container "
                    f"{container.name!r} is already bound on this host; stop what uses it or "
                    f"give the instance other ports"
                )
