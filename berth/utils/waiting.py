"""One way to wait for something: poll, pause, give up after a timeout.

:func:`wait_until` calls ``predicate`` until ``done`` holds for what it returned (by default:
until it returns something truthy) and returns that value. Between two calls it reports
progress through ``on_wait(last value, seconds waited)`` and pauses ``interval`` seconds (a
:class:`~berth.utils.backoff.Backoff` makes the pauses grow). It never pauses past the
deadline: the last call happens at the deadline, and if that one is not done either it raises
:class:`WaitTimeout` (a ``TimeoutError``) naming ``what`` was awaited and for how long, with the
last value in ``last`` so the caller can say more. Exceptions of ``predicate`` and
``on_wait`` propagate, and so does ``KeyboardInterrupt`` (a pause is a plain ``time.sleep``).

:func:`async_wait_until` is the same for an event loop (``predicate`` may be a coroutine
function; pauses are ``asyncio.sleep``).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from berth.utils.backoff import Backoff

__all__ = ["WaitTimeout", "async_wait_until", "wait_until"]

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """``what`` was not done after ``waited`` seconds (``timeout`` allowed); ``last`` is the
    value the last call of the predicate returned."""

    def __init__(self, what: str, waited: float, timeout: float, last: Any) -> None:
        super().__init__(f"timed out after {waited:.1f} s waiting for {what}")
        self.what = what
        self.waited = waited
        self.timeout = timeout
        self.last = last


class _Clock:
    """Deadline and pauses shared by the two twins."""

    def __init__(self, timeout: float | None, interval: float | Backoff,
                 clock: Callable[[], float]) -> None:
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be 0 or more (or None: no limit), got {timeout}")
        if not isinstance(interval, Backoff) and interval < 0:
            raise ValueError(f"interval must be 0 or more, got {interval}")
        self.timeout = timeout
        self._interval = interval
        self._clock = clock
        self.started = clock()

    def elapsed(self) -> float:
        return self._clock() - self.started

    def expired(self) -> bool:
        return self.timeout is not None and self.elapsed() >= self.timeout

    def pause(self) -> float:
        """The next pause, cut short so that the last call falls on the deadline."""
        pause = self._interval.next() if isinstance(self._interval, Backoff) else self._interval
        if self.timeout is not None:
            pause = min(pause, max(0.0, self.timeout - self.elapsed()))
        return pause


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout: float | None,
    interval: float | Backoff,
    what: str,
    on_wait: Callable[[T, float], object] | None = None,
    done: Callable[[T], object] = bool,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Call ``predicate`` until ``done(value)``; return that value (see the module's text).

    ``timeout=None`` waits for ever. Raises :class:`WaitTimeout` when the time is up.
    """
    timer = _Clock(timeout, interval, clock)
    while True:
        value = predicate()
        if done(value):
            return value
        if timer.expired():
            raise WaitTimeout(what, timer.elapsed(), timeout or 0.0, value)
        if on_wait is not None:
            on_wait(value, timer.elapsed())
        sleep(timer.pause())


async def async_wait_until(
    predicate: Callable[[], Awaitable[T] | T],
    *,
    timeout: float | None,
    interval: float | Backoff,
    what: str,
    on_wait: Callable[[T, float], object] | None = None,
    done: Callable[[T], object] = bool,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """:func:`wait_until` on an event loop: ``predicate`` (and ``on_wait``) may return
    awaitables, which are awaited; pauses are ``asyncio.sleep``; cancelling the task stops it."""
    timer = _Clock(timeout, interval, clock)
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if done(value):
            return value  # type: ignore[return-value]
        if timer.expired():
            raise WaitTimeout(what, timer.elapsed(), timeout or 0.0, value)
        if on_wait is not None:
            reported = on_wait(value, timer.elapsed())  # type: ignore[arg-type]
            if inspect.isawaitable(reported):
                await reported
        await asyncio.sleep(timer.pause())
