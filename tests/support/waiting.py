"""Waiting in tests for something that happens elsewhere (a process, a server, a file): one loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["eventually", "wait_for"]

T = TypeVar("T")


def wait_for(check: Callable[[], T], what: str, timeout: float = 60.0, *, poll: float = 0.1,
             context: Callable[[], str] | None = None) -> T:
    """``check()``'s first true value, asked every ``poll`` s; after ``timeout`` s the test fails
    with an AssertionError naming ``what`` (and ``context()``, such as a log's tail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"\n{context()}" if context is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
        time.sleep(poll)


def eventually(check: Callable[[], object], timeout: float = 30.0, *, poll: float = 0.1) -> bool:
    """Whether ``check()`` turns true within ``timeout`` s (asked every ``poll`` s), for a test
    that asserts on the answer itself."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(poll)
    return bool(check())
