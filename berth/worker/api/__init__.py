"""The worker's HTTP API: thin routers per resource, their response schemas, and the one typed
:class:`Services` object every handler takes its dependencies from."""

from __future__ import annotations

from berth.worker.api._deps import LOG_READ_THREADS, THREADS, Services
from berth.worker.api._instances import router as instances_router
from berth.worker.api._launcher import router as launcher_router
from berth.worker.api._loras import router as loras_router
from berth.worker.api._swap import router as swap_router

__all__ = [
    "LOG_READ_THREADS",
    "THREADS",
    "Services",
    "instances_router",
    "launcher_router",
    "loras_router",
    "swap_router",
]
