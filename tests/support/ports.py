"""Ports for tests on a shared machine: never a fixed number, always ones nothing holds right now.

Several test runs (and other servers) share the machine, so a test takes its ports from the
kernel (:func:`free_port`) or a block picked at random below the ephemeral range (:func:`free_range`),
which the kernel never hands out to clients, rather than a range written in the test.
"""

from __future__ import annotations

import random
import socket

__all__ = ["free_port", "free_range"]

#: Where :func:`free_range` looks: below Linux's ephemeral ports (32768-60999).
RANGE_AREA = (10000, 32767)


def free_port() -> int:
    """A loopback TCP port nothing listened on a moment ago (bound to port 0, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_range(size: int = 100) -> str:
    """``START-END``: ``size`` consecutive ports, none bound now, at a random place (for port-range settings)."""
    low, high = RANGE_AREA
    starts = list(range(low, high - size + 2, size))
    random.shuffle(starts)
    for start in starts:
        if all(_bindable(port) for port in range(start, start + size)):
            return f"{start}-{start + size - 1}"
    raise AssertionError(f"no {size} free ports in a row between {low} and {high}")
