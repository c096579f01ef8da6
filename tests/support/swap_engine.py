"""A stand-in for the swap controller's :class:`~berth.worker.swap.EngineControl`, answered from
memory: requests in flight per engine (a number, or ``None`` as when ``/metrics`` times out),
an optional gate that holds ``in_flight`` until a test opens it, and the sleeps and wakes asked."""

from __future__ import annotations

import threading
import time


class Gate:
    """Holds a caller until :meth:`open`; :attr:`entered` is set once one is held."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def hold(self) -> None:
        self.entered.set()
        self.opened.wait(30)

    def open(self) -> None:
        self.opened.set()


class FakeEngine:
    """Every engine idle (0 in flight) unless :attr:`in_flight_of` or :attr:`gates` say otherwise."""

    def __init__(self, *, metrics_delay: float = 0.0) -> None:
        self.in_flight_of: dict[str, int | None] = {}  # base_url -> in flight (None: unreadable)
        self.gates: dict[str, Gate] = {}  # base_url -> held on its next in_flight
        self.metrics_delay = metrics_delay
        self.asked: list[tuple[str, str]] = []  # (what, base_url)

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def in_flight(self, base_url: str) -> int | None:
        gate = self.gates.get(base_url)
        if gate is not None:
            gate.hold()
        value = self.in_flight_of.get(base_url, 0)
        if value is None and self.metrics_delay:
            time.sleep(self.metrics_delay)  # as a probe timing out does
        return value

    def sleep(self, base_url: str, level: int) -> None:
        self.asked.append(("sleep", base_url))

    def wake(self, base_url: str, level: int = 1) -> None:
        self.asked.append(("wake", base_url))

    def is_sleeping(self, base_url: str) -> bool:
        return any(what == "sleep" for what, url in self.asked if url == base_url)
