"""What a readiness check answers, and what the worker needs from a checker.

The rule itself is :func:`berth.utils.readiness.probe_ready` (``/health`` 200 and ``/v1/models``
lists the instance's primary served name), run over the worker's one
:class:`~berth.worker.engine.EngineClient`; :class:`berth.testing.fakes.FakeProbe` stands in for
it in tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    detail: str = ""
    failed: bool = False  #: never going to be ready (e.g. followers never joined): fail the instance


class Probe(Protocol):
    """What the worker needs from a readiness checker (the fake in :mod:`berth.testing.fakes` too)."""

    def check(self, base_url: str, served_names: Sequence[str]) -> Readiness: ...

    def close(self) -> None: ...
