"""The one client to this worker's running engines: readiness (one rule), runtime LoRA, sleep
and wake, requests in flight, and a Ray leader's dashboard."""

from __future__ import annotations

from berth.worker.engine._client import EngineClient, ReadinessProbe
from berth.worker.engine._ray import joined_nodes
from berth.worker.engine._readiness import Probe, Readiness
from berth.worker.engine._sleep import EngineError

__all__ = [
    "EngineClient",
    "EngineError",
    "Probe",
    "Readiness",
    "ReadinessProbe",
    "joined_nodes",
]
