"""The ``/v1/*`` inference router: by a scheduler's header, by model or adapter name, on demand."""

from __future__ import annotations

from berth.worker.routing._activation import (
    ModelActivator,
    ModelUnavailable,
    RouteGate,
    UnknownModel,
)
from berth.worker.routing._router import ROUTER_PREFIX, router, served_model_names
from berth.worker.routing._services import (
    HeaderRoute,
    RouterServices,
    engine_stream_client,
)

__all__ = [
    "HeaderRoute",
    "ModelActivator",
    "ModelUnavailable",
    "ROUTER_PREFIX",
    "RouteGate",
    "RouterServices",
    "UnknownModel",
    "engine_stream_client",
    "router",
    "served_model_names",
]
