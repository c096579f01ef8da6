"""Byte units."""

from __future__ import annotations

__all__ = ["GIB", "byte_to_gib"]

GIB = 1 << 30


def byte_to_gib(value: int) -> float:
    """Bytes to GiB, rounded to two decimals (``3221225472 -> 3.0``)."""
    return round(value / GIB, 2)
