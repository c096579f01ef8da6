"""berth.utils.waiting: poll until done, pauses (fixed or growing), the deadline, progress."""

from __future__ import annotations

import asyncio

import pytest

from berth.utils.backoff import Backoff
from berth.utils.waiting import WaitTimeout, async_wait_until, wait_until


class FakeTime:
    """A clock that only moves when slept on."""

    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


def counting(ready_at: int):
    calls = []

    def predicate():
        calls.append(1)
        return f"done after {len(calls)}" if len(calls) >= ready_at else None
    return predicate, calls


def test_returns_the_first_truthy_value_and_reports_progress():
    time, seen = FakeTime(), []
    predicate, calls = counting(3)
    value = wait_until(predicate, timeout=10, interval=1.0, what="x", sleep=time.sleep, clock=time.clock,
                       on_wait=lambda last, elapsed: seen.append((last, elapsed)))
    assert value == "done after 3" and len(calls) == 3
    assert time.pauses == [1.0, 1.0] and seen == [(None, 0.0), (None, 1.0)]


def test_times_out_naming_what_and_how_long_with_the_last_value():
    time = FakeTime()
    with pytest.raises(WaitTimeout, match=r"timed out after 2\.5 s waiting for the answer") as caught:
        wait_until(lambda: 0, timeout=2.5, interval=1.0, what="the answer", sleep=time.sleep, clock=time.clock)
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.last == 0 and caught.value.timeout == 2.5
    assert time.pauses == [1.0, 1.0, 0.5]  # never past the deadline: the last look is at it


def test_done_decides_and_the_last_value_is_kept():
    time, views = FakeTime(), iter([{"state": "starting"}, {"state": "loading"}, {"state": "ready"}])
    last = wait_until(lambda: next(views), timeout=None, interval=0.5, what="x", sleep=time.sleep,
                      clock=time.clock, done=lambda view: view["state"] == "ready")
    assert last == {"state": "ready"}
    views = iter([{"state": "starting"}, {"state": "loading"}])
    with pytest.raises(WaitTimeout) as caught:
        wait_until(lambda: next(views), timeout=0.5, interval=0.5, what="x", sleep=time.sleep,
                   clock=time.clock, done=lambda view: False)
    assert caught.value.last == {"state": "loading"}


def test_a_backoff_interval_grows():
    time = FakeTime()
    predicate, _ = counting(5)
    wait_until(predicate, timeout=None, interval=Backoff(0.1, 0.3), what="x", sleep=time.sleep, clock=time.clock)
    assert time.pauses == [0.1, 0.2, 0.3, 0.3]


def test_errors_and_interrupts_propagate():
    def broken():
        raise RuntimeError("probe broke")

    with pytest.raises(RuntimeError, match="probe broke"):
        wait_until(broken, timeout=5, interval=0.01, what="x")

    def interrupted(_seconds: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        wait_until(lambda: False, timeout=5, interval=0.01, what="x", sleep=interrupted)


def test_zero_timeout_looks_once_and_nonsense_is_refused():
    predicate, calls = counting(99)
    with pytest.raises(WaitTimeout):
        wait_until(predicate, timeout=0, interval=1.0, what="x")
    assert len(calls) == 1
    with pytest.raises(ValueError, match="timeout"):
        wait_until(predicate, timeout=-1, interval=1.0, what="x")
    with pytest.raises(ValueError, match="interval"):
        wait_until(predicate, timeout=1, interval=-1, what="x")


def test_real_sleeps_end_at_the_deadline():
    with pytest.raises(WaitTimeout) as caught:
        wait_until(lambda: None, timeout=0.2, interval=0.05, what="nothing")
    assert 0.2 <= caught.value.waited < 2.0


def test_async_twin_awaits_predicates_and_reports():
    calls, seen = [], []

    async def predicate():
        calls.append(1)
        return len(calls) if len(calls) >= 3 else 0

    async def report(last, elapsed):
        seen.append(last)

    assert asyncio.run(async_wait_until(predicate, timeout=5, interval=0.01, what="x", on_wait=report)) == 3
    assert seen == [0, 0]
    assert asyncio.run(async_wait_until(lambda: "plain", timeout=1, interval=0.01, what="x")) == "plain"
    with pytest.raises(WaitTimeout, match="waiting for the async thing"):
        asyncio.run(async_wait_until(predicate, timeout=0.05, interval=0.01, what="the async thing",
                                     done=lambda value: False))
