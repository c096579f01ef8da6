"""What the swap controller remembers in memory per model, behind one lock.

The inference router reads and writes some of it on the event loop (:meth:`SwapState.use`,
:meth:`SwapState.is_closed`, the flights of ``ensure_ready``) while the pool's and the policy's
threads change the rest, so it all lives here, under one ``threading.Lock`` that is held for a
dictionary operation and never across I/O, a wait or a call out of this module.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Activation:
    """An activation's outcome: the instance that serves, how it got there, and how long it took."""

    model: str
    instance_id: str
    path: str
    seconds: float


class SwapState:
    """Per model: its last request, last activation, transition under way and activation in
    flight; per instance: whether it is closed to new requests (being evicted)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._used: dict[str, float] = {}  # model -> last request (time.time)
        self._last: dict[str, Activation] = {}  # model -> its last activation that had work to do
        self._busy: dict[str, str] = {}  # model -> transition under way
        self._closed: set[str] = set()  # instance ids being evicted: no new requests
        self._flights: dict[str, tuple[Future[Activation], float]] = {}  # model -> (flight, started)

    # -- uses --------------------------------------------------------------------------------

    def use(self, name: str, at: float | None = None) -> None:
        """Note a request for ``name`` (now, or at ``at``)."""
        with self._lock:
            self._used[name] = time.time() if at is None else at

    def used_at(self, name: str, default: float = 0.0) -> float:
        with self._lock:
            return self._used.get(name, default)

    def last_used(self, name: str) -> float | None:
        with self._lock:
            return self._used.get(name)

    def reset_uses(self, names: list[str]) -> None:
        """Every model used now, and no other (a restart counts as a use)."""
        now = time.time()
        with self._lock:
            self._used = dict.fromkeys(names, now)

    # -- activations -------------------------------------------------------------------------

    def landed(self, activation: Activation) -> None:
        with self._lock:
            self._last[activation.model] = activation

    def last(self, name: str) -> Activation | None:
        with self._lock:
            return self._last.get(name)

    def flight(self, name: str, submit: Callable[[float], Future[Activation]]) -> tuple[Future[Activation], bool]:
        """The model's activation in flight, else a new one from ``submit(started)``; (it, whether new).
        ``submit`` only queues work (a pool's ``submit``): it runs under the lock."""
        with self._lock:
            current = self._flights.get(name)
            if current is not None:
                return current[0], False
            started = time.monotonic()
            flight = submit(started)
            self._flights[name] = (flight, started)
            return flight, True

    def flight_ended(self, name: str, flight: Future[Activation]) -> None:
        with self._lock:
            current = self._flights.get(name)
            if current is not None and current[0] is flight:
                del self._flights[name]

    def flight_started(self, name: str) -> float | None:
        """When the model's activation in flight started (time.monotonic), None when none is."""
        with self._lock:
            current = self._flights.get(name)
            return current[1] if current is not None else None

    # -- transitions and the route gate ------------------------------------------------------

    def busy(self, name: str) -> str | None:
        with self._lock:
            return self._busy.get(name)

    def set_busy(self, name: str, what: str) -> None:
        with self._lock:
            self._busy[name] = what

    def clear_busy(self, name: str) -> None:
        with self._lock:
            self._busy.pop(name, None)

    @contextmanager
    def transition(self, name: str, what: str) -> Iterator[None]:
        """``what`` (sleeping, parking...) is under way for ``name`` while the block runs."""
        self.set_busy(name, what)
        try:
            yield
        finally:
            self.clear_busy(name)

    def is_closed(self, instance_id: str) -> bool:
        with self._lock:
            return instance_id in self._closed

    @contextmanager
    def closed(self, instance_id: str) -> Iterator[None]:
        """No new requests for ``instance_id`` while the block runs."""
        with self._lock:
            self._closed.add(instance_id)
        try:
            yield
        finally:
            with self._lock:
                self._closed.discard(instance_id)

    # -- forgetting --------------------------------------------------------------------------

    def forget(self, name: str) -> None:
        """Drop what is kept about a model no longer registered."""
        with self._lock:
            self._used.pop(name, None)
            self._last.pop(name, None)
            self._busy.pop(name, None)

    def sizes(self) -> dict[str, int]:
        """How many entries each map holds (tests: nothing grows without bound)."""
        with self._lock:
            return {"used": len(self._used), "last": len(self._last), "busy": len(self._busy),
                    "closed": len(self._closed), "flights": len(self._flights)}
