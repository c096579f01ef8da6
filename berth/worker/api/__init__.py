"""The worker's HTTP API: thin routers per resource and their response schemas."""

from __future__ import annotations

from berth.worker.api._instances import router as instances_router
from berth.worker.api._launcher import router as launcher_router
from berth.worker.api._loras import router as loras_router
from berth.worker.api._swap import install as install_swap

__all__ = [
    "install_swap",
    "instances_router",
    "launcher_router",
    "loras_router",
]
