"""Spreading a batch over endpoints by outstanding work, keeping input order in the results.

Each endpoint runs up to ``concurrency`` workers that pull the next job from one shared queue,
so a server holds at most that many requests and a faster server takes more of the batch.
Workers start interleaved (A, B, A, B ...) so that a small batch alternates between servers.
When a server becomes unreachable its job moves to the live endpoint with the least
outstanding work, and its workers stop taking jobs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from berth.client.errors import ServerUnavailable
from berth.client.transport import Endpoint

__all__ = ["run_batch"]

T = TypeVar("T")
Send = Callable[[Endpoint, int], Awaitable[T]]
OnDone = Callable[[int], None]


async def run_batch(
    endpoints: Sequence[Endpoint],
    count: int,
    send: Send[T],
    *,
    weight: int = 1,
    on_done: OnDone | None = None,
) -> list[T]:
    """Call ``send(endpoint, i)`` for every ``i`` in ``range(count)``; results in index order.

    ``weight`` is the work one job adds to its endpoint's ``outstanding`` count. The first
    error cancels the remaining jobs and is raised as itself.
    """
    if not endpoints:
        raise ServerUnavailable("no running server to send the batch to")
    results: list[Any] = [None] * count
    jobs = iter(range(count))
    runner = _Runner(endpoints, send, weight, on_done)
    workers = _interleaved(endpoints, min(count, sum(e.concurrency for e in endpoints)))
    try:
        async with asyncio.TaskGroup() as group:
            for endpoint in workers:
                group.create_task(runner.work(endpoint, jobs, results))
    except BaseExceptionGroup as failed:
        raise _first_error(failed) from None
    return results


def _interleaved(endpoints: Sequence[Endpoint], total: int) -> list[Endpoint]:
    """Up to ``total`` worker slots, one endpoint after another: A, B, A, B, A ..."""
    slots: list[Endpoint] = []
    depth = max(e.concurrency for e in endpoints)
    for level in range(depth):
        slots.extend(e for e in endpoints if level < e.concurrency)
        if len(slots) >= total:
            break
    return slots[:total]


def _first_error(group: BaseExceptionGroup) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


class _Runner:
    def __init__(self, endpoints: Sequence[Endpoint], send: Send[Any], weight: int,
                 on_done: OnDone | None) -> None:
        self.endpoints = endpoints
        self.send = send
        self.weight = weight
        self.on_done = on_done

    async def work(self, endpoint: Endpoint, jobs: Any, results: list[Any]) -> None:
        """Take jobs until none are left or this endpoint is down."""
        for index in jobs:
            results[index] = await self.attempt(endpoint, index)
            if self.on_done is not None:
                self.on_done(1)
            if endpoint.down:
                return

    async def attempt(self, endpoint: Endpoint, index: int) -> Any:
        """Send job ``index``, moving it to another live endpoint when this one is down."""
        target = endpoint
        while True:
            try:
                return await self._send_counted(target, index)
            except ServerUnavailable:
                target.down = True
                live = [e for e in self.endpoints if not e.down]
                if not live:
                    raise
                target = min(live, key=lambda e: e.outstanding)

    async def _send_counted(self, endpoint: Endpoint, index: int) -> Any:
        async with endpoint.slots():
            endpoint.outstanding += self.weight
            try:
                result = await self.send(endpoint, index)
            finally:
                endpoint.outstanding -= self.weight
        endpoint.answered += 1
        return result
