"""The worker's durable registry: instance records, their states, revisions and events (SQLite)."""

from __future__ import annotations

from berth.worker.store._endpoints import Endpoints, RayJoin, RuntimeLora
from berth.worker.store._registry import Event, InstanceRecord, Registry
from berth.worker.store._states import InstanceState, launcher_status

__all__ = [
    "Endpoints",
    "RayJoin",
    "RuntimeLora",
    "Event",
    "InstanceRecord",
    "InstanceState",
    "Registry",
    "launcher_status",
]
