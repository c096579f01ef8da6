"""The process deployer's port check: a bind probe per declared port, on every address family.

Each test holds a socket of its own on a port the kernel picked, so no port is assumed free.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from gpustack_runtime.deployer import (
    Container,
    ContainerExecution,
    ContainerPort,
    ContainerPortProtocolEnum,
)

from berth.deployers.base import InvalidWorkload
from berth.deployers.process._ports import bound_ports, check_ports_free, port_taken

TCP, UDP = ContainerPortProtocolEnum.TCP, ContainerPortProtocolEnum.UDP


def held(family: int, kind: int, host: str, *, listen: bool) -> Iterator[int]:
    try:
        sock = socket.socket(family, kind)
        sock.bind((host, 0))
    except OSError as exc:
        pytest.skip(f"cannot bind {host}: {exc} (no such address family here)")
    with sock:
        if listen:
            sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def loopback_listener() -> Iterator[int]:
    yield from held(socket.AF_INET, socket.SOCK_STREAM, "127.0.0.1", listen=True)


@pytest.fixture
def ipv6_only_listener() -> Iterator[int]:
    yield from held(socket.AF_INET6, socket.SOCK_STREAM, "::1", listen=True)


@pytest.fixture
def udp_socket() -> Iterator[int]:
    yield from held(socket.AF_INET, socket.SOCK_DGRAM, "127.0.0.1", listen=False)


def container(*ports: ContainerPort) -> Container:
    return Container(name="default", image="local/none", ports=list(ports),
                     execution=ContainerExecution(command=["true"]))


def test_a_listener_on_any_address_takes_the_port(loopback_listener: int) -> None:
    assert port_taken(loopback_listener, TCP)
    assert loopback_listener in bound_ports(TCP)  # the /proc reading agrees


def test_an_ipv6_only_listener_takes_the_port(ipv6_only_listener: int) -> None:
    assert port_taken(ipv6_only_listener, TCP)


def test_a_bound_udp_socket_takes_the_port_for_udp_only(udp_socket: int) -> None:
    assert port_taken(udp_socket, UDP)
    assert udp_socket in bound_ports(UDP)


def test_a_released_port_is_free_again() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert port_taken(port, TCP)
    assert not port_taken(port, TCP) or port in bound_ports(TCP)  # unless another process took it since


def test_no_probe_means_not_taken(loopback_listener: int) -> None:
    assert not port_taken(loopback_listener, ContainerPortProtocolEnum.SCTP)


def test_check_names_the_port_protocol_and_container(loopback_listener: int) -> None:
    plan = [container(ContainerPort(internal=loopback_listener))]
    with pytest.raises(InvalidWorkload, match=rf"port {loopback_listener}/tcp declared by container 'default'"):
        check_ports_free(plan)


def test_check_passes_ports_nothing_holds(udp_socket: int) -> None:
    check_ports_free([container(ContainerPort(internal=udp_socket, protocol=TCP))])  # UDP holds it, not TCP
