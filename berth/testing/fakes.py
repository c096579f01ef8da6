"""Fakes for testing code that uses the worker: a readiness probe that answers from a set."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from berth.worker.engine import Readiness

__all__ = ["FakeProbe"]


class FakeProbe:
    """Ready exactly for the base URLs in :attr:`ready` (add and remove them in tests)."""

    def __init__(self) -> None:
        self.ready: set[str] = set()
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def check(self, base_url: str, served_names: Sequence[str]) -> Readiness:
        with self._lock:
            self.calls.append(base_url)
            ready = base_url in self.ready
        return Readiness(ready, "" if ready else "not ready (fake probe)")

    def close(self) -> None:
        pass
