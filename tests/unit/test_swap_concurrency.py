"""Model swapping under concurrency, made deterministic with gates: the router's calls never
wait on a definitions write."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from tests.support.swap_engine import Gate
from tests.unit.test_swap import register, world  # noqa: F401 - world is a fixture


def promptly(call: Callable[[], Any], timeout: float = 2.0) -> Any:
    """``call()`` on a thread of its own; fails when it has not returned within ``timeout`` s."""
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(call()), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{call} was still blocked after {timeout} s"
    return results[0]


# -- bug: the router's calls waited on a definitions write (an SQLite commit) ----------------


def test_routable_and_touch_do_not_wait_on_a_definitions_write(world, monkeypatch):
    swap, *_ = world()
    register(swap, "m")
    swap.activate("m", 5)
    gate, write = Gate(), swap.store._write

    def slow_write(sql: str, values: tuple[Any, ...]) -> None:
        gate.hold()  # the commit, stuck
        write(sql, values)

    monkeypatch.setattr(swap.store, "_write", slow_write)
    pinning = threading.Thread(target=swap.pin, args=("m", True))
    pinning.start()
    assert gate.entered.wait(5)
    try:
        assert promptly(lambda: swap.routable("m")) is True
        promptly(lambda: swap.touch("m"))
        assert promptly(lambda: swap.store.get("m")).pinned is False  # the old definition until committed
    finally:
        gate.open()
        pinning.join(10)
    assert swap.get("m").pinned is True
