"""Ports: parsing ``"41000-41999"``, checking whether a port is free on this host, and finding
free ones (a single port, or a block of consecutive ports for a port-range setting)."""

from __future__ import annotations

import random
import socket
from collections.abc import Container

__all__ = [
    "BELOW_EPHEMERAL",
    "EPHEMERAL_PORTS",
    "LOOPBACK",
    "free_port",
    "free_port_range",
    "is_port_free",
    "parse_port_range",
]

LOOPBACK = "127.0.0.1"
#: Linux's default ephemeral ports (``net.ipv4.ip_local_port_range``): the kernel gives them to
#: outgoing connections, so a port picked there in advance can be taken by any client a moment later.
EPHEMERAL_PORTS = (32768, 60999)
#: Where :func:`free_port_range` looks unless told otherwise: the ports below the ephemeral range.
BELOW_EPHEMERAL = (10000, EPHEMERAL_PORTS[0] - 1)


def parse_port_range(text: str) -> tuple[int, int]:
    """Parse ``"START-END"`` (inclusive, 1..65535, START <= END) into a tuple.

    Raises ValueError naming the problem and the expected form.
    """
    start_text, sep, end_text = str(text).strip().partition("-")
    if not sep:
        raise ValueError(f"port range {text!r} must look like 'START-END', e.g. '41000-41999'")
    try:
        start, end = int(start_text), int(end_text)
    except ValueError:
        raise ValueError(f"port range {text!r} must hold two integers, e.g. '41000-41999'") from None
    if not (1 <= start <= end <= 65535):
        raise ValueError(f"port range {text!r} must satisfy 1 <= START <= END <= 65535")
    return start, end


def is_port_free(port: int, host: str = "0.0.0.0") -> bool:
    """True when a TCP listener could bind ``host:port`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = LOOPBACK, avoid: Container[int] = ()) -> int:
    """A TCP port nothing listens on at ``host`` right now, and not one in ``avoid``.

    The kernel chooses it (bind to port 0, then release), so it lies in the ephemeral range:
    good for a server started at once, not for a port written down for later.
    """
    for _ in range(100):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in avoid:
            return port
    raise OSError(f"found no free port on {host} after 100 tries")


def free_port_range(
    size: int = 100,
    area: tuple[int, int] = BELOW_EPHEMERAL,
    *,
    avoid: Container[int] = (),
) -> str:
    """``"START-END"``: ``size`` consecutive ports inside ``area`` (inclusive), each free on every
    address as :func:`is_port_free` sees it (as a worker's port allocator will) and none in
    ``avoid``, at a random block boundary.

    At random, because other programs on the machine (other workers, other test runs) look for
    blocks at the same time, and the first free block would be the same for all of them. Raises
    OSError when ``area`` holds no such block.
    """
    low, high = area
    starts = list(range(low, high - size + 2, size))
    random.shuffle(starts)
    for start in starts:
        block = range(start, start + size)
        if not any(port in avoid for port in block) and all(is_port_free(port) for port in block):
            return f"{start}-{start + size - 1}"
    raise OSError(f"no {size} free ports in a row between {low} and {high}")

