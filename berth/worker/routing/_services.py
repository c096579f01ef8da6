"""What the ``/v1`` router reads from the worker's services, and its one HTTP stack.

The worker's services are one typed object (:class:`berth.worker.api.Services`) made by the app.
It names the swap controller and the GPUStack agent, which sit above this package, so the router
cannot import it; :class:`RouterServices` is the part the router reads, which that object has.

The router's HTTP client is async and streams both ways (requests of any length, answers token
by token): one pooled client per app, opened by the app's lifespan and closed at shutdown. It is
distinct by need from the engine client of :mod:`berth.worker.engine` (synchronous, short control
calls made from threads).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import httpx

from berth.worker.instances import ServeManager
from berth.worker.routing._activation import ModelActivator

#: ``header value -> berth instance id`` (None: the value names no instance of this worker).
HeaderRoute = Callable[[str], "str | None"]
#: Seconds to open a connection to an engine (nothing else is bounded: a long generation is no failure).
CONNECT_TIMEOUT_S = 10.0


class RouterServices(Protocol):
    """The services the router uses."""

    manager: ServeManager
    #: routing headers a scheduler registered (GPUStack's ``X-GPUStack-Model-Instance``)
    header_routes: dict[str, HeaderRoute]
    #: brings models up on demand (the swap controller), or None
    activator: ModelActivator | None
    #: the router's client to engines; None before start-up and after shutdown
    http: httpx.AsyncClient | None


def engine_stream_client() -> httpx.AsyncClient:
    """The router's pooled client to engines: connecting is bounded, reading and writing are not."""
    timeout = httpx.Timeout(connect=CONNECT_TIMEOUT_S, read=None, write=None, pool=None)
    return httpx.AsyncClient(timeout=timeout, trust_env=False, limits=httpx.Limits(max_connections=None))
