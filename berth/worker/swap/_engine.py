"""Swap's side of the worker's one engine client: sleep, wake, ``is_sleeping`` and requests in
flight (what they mean: :mod:`berth.worker.engine`).

:class:`EngineControl` is a thin use of :class:`~berth.worker.engine.EngineClient`: given the
worker's client, or a function that returns it once the manager has started
(``EngineControl(lambda: manager.engine)``), it shares its pool and never closes it; without one
it opens a client of its own and closes it in :meth:`close`.
"""

from __future__ import annotations

from collections.abc import Callable

from berth.worker import engine
from berth.worker.engine import EngineClient

#: What a sleep or wake call raises when the engine does not do it (swap's name, as before).
EngineError = engine.EngineError


class EngineControl:
    """Sleep, wake and load questions over one pooled HTTP client. Thread-safe."""

    def __init__(self, client: EngineClient | Callable[[], EngineClient] | None = None, *,
                 timeout: float = 300.0, probe_timeout: float = 2.0) -> None:
        self._owned = client is None
        if client is None:
            client = EngineClient(timeout=probe_timeout, long_timeout=timeout)
        self._source = client if callable(client) else (lambda: client)

    @property
    def _client(self) -> EngineClient:
        return self._source()

    def open(self) -> None:
        """Make a closed control usable again (the client reopens its pool on its next request)."""

    def sleep(self, base_url: str, level: int) -> None:
        self._client.sleep(base_url, level)

    def wake(self, base_url: str, level: int = 1) -> None:
        """Wake an engine put to sleep at ``level`` (level 2: weights, reload, then KV cache)."""
        self._client.wake(base_url, level)

    def is_sleeping(self, base_url: str) -> bool:
        return self._client.is_sleeping(base_url)

    def in_flight(self, base_url: str) -> int | None:
        """Requests running or waiting in the engine; None when its metrics cannot be read."""
        return self._client.in_flight(base_url)

    def close(self) -> None:
        if self._owned:
            self._client.close()
