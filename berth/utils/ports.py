"""Port ranges: parsing ``"41000-41999"`` and checking whether a port is free on this host."""

from __future__ import annotations

import socket

__all__ = ["is_port_free", "parse_port_range"]


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
