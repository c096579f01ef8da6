"""The one client to a running engine: readiness (one rule), runtime LoRA calls."""

from __future__ import annotations

from berth.worker.engine._loras import EngineLoras
from berth.worker.engine._readiness import Probe, Readiness, ReadinessProbe

__all__ = [
    "EngineLoras",
    "Probe",
    "Readiness",
    "ReadinessProbe",
]
