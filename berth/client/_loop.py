"""A private event loop in a daemon thread, shared by every open client of this process.

The synchronous API submits coroutines to it and waits, which works the same whether or not
the caller's thread runs an event loop of its own. The loop starts with the first client that
needs it and stops (its thread joined) when the last one releases it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar


T = TypeVar("T")

_lock = threading.Lock()
_shared: BackgroundLoop | None = None


class BackgroundLoop:
    """One event loop running forever in one daemon thread, reference-counted by its users."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._users = 0
        self._thread = threading.Thread(target=self._run, name="berth-client-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        self.loop.close()

    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedule ``coro`` on the loop from any thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and block this thread for its result."""
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError(
                "a synchronous berth client method was called from the client's own event "
                "loop; await the async variant (achat/agenerate) there instead"
            )
        return self.submit(coro).result()

    async def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the loop from any event loop (directly when already on it)."""
        if self.in_loop_thread():
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

    def release(self) -> None:
        """Drop one user; the last one stops the loop and joins its thread."""
        global _shared
        with _lock:
            self._users -= 1
            if self._users > 0:
                return
            if _shared is self:
                _shared = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        if not self.in_loop_thread():
            self._thread.join(timeout=10)


def acquire_loop() -> BackgroundLoop:
    """The shared background loop, started when needed; pair with :meth:`BackgroundLoop.release`."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = BackgroundLoop()
        _shared._users += 1
        return _shared
