"""The worker's FastAPI app: its lifespan, middleware and the services it holds."""

from __future__ import annotations

from berth.worker.app._app import KEEP_ALIVE_S, create_app
from berth.worker.app._runtime import freeze_startup_objects, limit_malloc_arenas

__all__ = [
    "KEEP_ALIVE_S",
    "create_app",
    "freeze_startup_objects",
    "limit_malloc_arenas",
]
