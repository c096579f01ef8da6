"""What every router shares: the worker's services, the manager dependency and documented errors.

:class:`Services` is the one typed object the app's handlers take their dependencies from
(``app.state.services``, set once by ``create_app``; nothing is added to it later, nothing is made
lazily inside a handler). It lives here, in ``api``, because this is the lowest package that can
name every service: the swap controller (``swap``) and the GPUStack agent (``gpustack``) sit
below ``api`` and above ``routing``. The router, below them, reads the same object through
:class:`berth.worker.routing.RouterServices` (the fields it needs); ``app`` makes it and runs
the lifespan that starts and stops what it holds.

Blocking work (anything that takes a lock shared with threads, touches SQLite, or waits on a
deployer or an engine) goes to a thread with :meth:`Services.blocking`, under the app's own
``threads`` limiter; log reads under ``log_reads``. Never anyio's default limiter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
import httpx
from fastapi import Depends, Request

from berth.worker.api._models import ErrorBody
from berth.worker.gpustack import GPUStackAgent
from berth.worker.instances import ServeManager
from berth.worker.routing import HeaderRoute, ModelActivator
from berth.worker.swap import SwapController

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (401, 404, 409, 413, 422, 500, 503)
}
#: Threads for blocking handlers (create, delete: a delete waits out its grace period).
THREADS = 100
#: Log reads that may run at once (each a ``pread`` or one engine call), the API's and GPUStack's.
LOG_READ_THREADS = 4

T = TypeVar("T")


@dataclass(eq=False)
class Services:
    """Everything the worker's handlers use, made by ``create_app``; the lifespan starts and stops them."""

    manager: ServeManager
    #: blocking handler work (create, delete, queries that read SQLite)
    threads: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(THREADS))
    #: log reads, whoever asks (berth's log endpoints, GPUStack's serveLogs)
    log_reads: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(LOG_READ_THREADS))
    #: routing headers a scheduler registered (the router reads them)
    header_routes: dict[str, HeaderRoute] = field(default_factory=dict)
    swap: SwapController | None = None
    #: what the router asks to bring a model up (the swap controller, when swapping is on)
    activator: ModelActivator | None = None
    gpustack: GPUStackAgent | None = None
    #: the router's pooled streaming client; opened by the lifespan, None outside it
    http: httpx.AsyncClient | None = None

    async def blocking(self, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)`` in a thread under :attr:`threads`."""
        return await anyio.to_thread.run_sync(call, *args, limiter=self.threads)


async def services_of(request: Request) -> Services:
    """The app's services; async, so FastAPI calls it on the event loop, not through a thread."""
    services: Services = request.app.state.services
    return services


async def manager_of(request: Request) -> ServeManager:
    """The worker's manager, from the app's services (never a module global)."""
    return (await services_of(request)).manager


Svc = Annotated[Services, Depends(services_of)]
Manager = Annotated[ServeManager, Depends(manager_of)]
