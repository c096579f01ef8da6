"""Model swapping under concurrency, made deterministic with gates: an engine whose metrics cannot
be read is never taken as drained, the router's calls never wait on a definitions write or on
another model's drain, and the controller's per-model maps do not grow with registrations."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from berth.worker.routing import ModelUnavailable
from tests.support.swap_engine import FakeEngine, Gate
from tests.unit import test_swap
from tests.unit.test_swap import age, register, state

world = test_swap.world  # the same fixture: controllers over the memory deployer, closed at the end


def promptly(call: Callable[[], Any], timeout: float = 2.0) -> Any:
    """``call()`` on a thread of its own; fails when it has not returned within ``timeout`` s."""
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(call()), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{call} was still blocked after {timeout} s"
    return results[0]


def url_of(manager, instance_id: str) -> str:
    return manager.get(instance_id).endpoints.base_url


def tracked(swap) -> dict[str, int]:
    """How many entries the controller keeps per model, by map."""
    return {**swap._state.sizes(), **swap._evictor.sizes()}


# -- bug: an engine whose metrics cannot be read was taken as drained -----------------------


def test_an_engine_whose_metrics_time_out_is_not_evicted(world):
    engine = FakeEngine(metrics_delay=0.05)
    swap, manager, *_ = world(engine=engine, swap_max_engines=1, swap_drain_timeout=0.3)
    register(swap, "busy")
    register(swap, "next")
    swap.activate("busy", 5)
    age(swap, "busy", 5)
    engine.in_flight_of[url_of(manager, "busy")] = None  # its /metrics times out
    started = time.monotonic()
    with pytest.raises(ModelUnavailable, match="metrics could not be read") as caught:
        swap.activate("next", 5)
    assert time.monotonic() - started >= 0.3  # it waited for the drain timeout first
    assert caught.value.retry_after >= 1
    assert (state(swap, "busy"), state(swap, "next")) == ("running", "parked")
    skipped = [e for e in manager.events_since(0) if e.type == "model.eviction_skipped"]
    assert skipped and "metrics could not be read" in skipped[-1].instance["why"]


def test_the_idle_policy_leaves_an_engine_whose_metrics_cannot_be_read(world):
    engine = FakeEngine()
    swap, manager, *_ = world(engine=engine, swap_idle_timeout=1)
    register(swap, "m")
    swap.activate("m", 5)
    age(swap, "m", 60)
    engine.in_flight_of[url_of(manager, "m")] = None
    swap.run_policy()
    assert state(swap, "m") == "running"
    engine.in_flight_of[url_of(manager, "m")] = 0
    swap.run_policy()
    assert state(swap, "m") == "parked"


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


# -- bug: per-model maps that only grew ------------------------------------------------------


def test_registering_and_forgetting_models_leaves_nothing_behind(world):
    swap, *_ = world()
    for round_ in range(3):
        names = [f"m{round_}-{i}" for i in range(10)]
        for name in names:
            register(swap, name)
            swap.activate(name, 5)
        for name in names:
            swap.unregister(name)
        assert tracked(swap) == {"used": 0, "last": 0, "busy": 0, "closed": 0, "flights": 0, "granted": 0,
                                 "evicting": 0}


def test_a_finished_activation_forgets_when_it_started(world):
    swap, *_ = world()
    register(swap, "m")
    swap.activate("m", 5)
    time.sleep(0.05)  # the done callback runs on the pool's thread right after the result
    assert tracked(swap)["flights"] == 0  # a flight and when it started are one entry, dropped on landing


# -- the budget's room lock is not held across drains and deletes ----------------------------


def test_a_slow_drain_blocks_neither_reads_nor_an_unrelated_start(world):
    engine = FakeEngine()
    swap, manager, *_ = world(engine=engine, swap_max_engines=2, swap_drain_timeout=30)
    for name in ("old", "keep", "new", "other"):
        register(swap, name)
    swap.activate("old", 5)
    swap.activate("keep", 5)
    age(swap, "old", 20)
    age(swap, "keep", 10)
    gate = engine.gates[url_of(manager, "old")] = Gate()  # old's drain hangs until opened
    evicting = threading.Thread(target=swap.activate, args=("new", 30))
    evicting.start()
    assert gate.entered.wait(5)
    try:
        assert promptly(lambda: swap.routable("keep")) is True
        assert promptly(lambda: swap.routable("old")) is False  # being evicted
        assert promptly(lambda: swap.view(swap.get("keep")))["state"] == "running"
        promptly(lambda: swap.park("keep"))  # room for one more engine, without evicting anybody
        assert promptly(lambda: swap.activate("other", 5)).path == "cold"
    finally:
        gate.open()
        evicting.join(30)
    assert [state(swap, n) for n in ("old", "keep", "new", "other")] == ["parked", "parked", "running", "running"]


def test_concurrent_starts_never_exceed_the_engine_budget(world):
    engine = FakeEngine()
    swap, manager, *_ = world(engine=engine, swap_max_engines=1, swap_drain_timeout=30)
    for name in ("old", "a", "b"):
        register(swap, name)
    swap.activate("old", 5)
    age(swap, "old", 20)
    gate = engine.gates[url_of(manager, "old")] = Gate()
    outcomes: dict[str, str] = {}

    def start(name: str) -> None:
        try:
            outcomes[name] = swap.activate(name, 30).path
        except ModelUnavailable as exc:
            outcomes[name] = f"unavailable: {exc}"

    threads = [threading.Thread(target=start, args=(name,)) for name in ("a", "b")]
    threads[0].start()
    assert gate.entered.wait(5)  # a is draining old, without holding the room lock
    threads[1].start()
    time.sleep(0.2)  # b plans meanwhile: old is taken, nothing else may go
    gate.open()
    for thread in threads:
        thread.join(30)
    running = [n for n in ("old", "a", "b") if state(swap, n) in ("running", "starting")]
    assert len(running) == 1, (running, outcomes)
