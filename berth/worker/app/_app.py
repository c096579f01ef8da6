"""The worker's FastAPI application: the launcher-compatible API, the spec API, ``/metrics``
and the OpenAPI page at ``/docs``.

Every error is JSON ``{"detail": "..."}`` naming the field: malformed bodies 422 (never 500),
unknown ids 404, conflicts 409, oversized bodies 413, missing or wrong token 401.

**Services.** :func:`create_app` makes everything the handlers use, once, in one typed
:class:`~berth.worker.api.Services` object (``app.state.services``: the manager, the thread
limiters, the routing headers, the swap controller, the GPUStack agent, the router's client);
handlers take their dependencies from it and nothing is made lazily inside a handler.

**Lifespan.** One lifespan, here, starts in this order and stops in the reverse: the manager,
the swap controller, the GPUStack agent, the router's HTTP client, the background trims.

**Threads and the event loop.** Request handlers run on the event loop and never block it.
Anything that takes a lock shared with threads, touches SQLite, or does blocking I/O (a
deployer call, a stop's grace period, a file read) is sent to a thread with
``anyio.to_thread.run_sync`` under one of the app's own limiters, passed explicitly:
``services.threads`` (:data:`~berth.worker.api.THREADS`) for handler work, ``services.log_reads``
(:data:`~berth.worker.api.LOG_READ_THREADS`) for every log read, berth's and GPUStack's; anyio's
default limiter is left as it is. Reads of the registry's in-memory copy are cheap and stay on
the loop. State touched from both the loop and threads belongs to one object guarded by one
``threading.Lock``, and no lock is held across slow I/O (HTTP to an engine, SQLite commits where
avoidable, deployer calls, sleeps, drain waits): read under the lock, do the I/O outside it, then
compare-and-set under the lock (on the record's ``revision``, say).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from berth import __version__
from berth.worker.api import (
    Services,
    instances_router,
    launcher_router,
    loras_router,
    swap_router,
)
from berth.worker.app._middleware import BearerAuth, BodyLimit, RequestMetrics
from berth.worker.app._runtime import trim_malloc
from berth.worker.errors import WorkerError
from berth.worker.gpustack import GPUSTACK_PATHS, GPUStackAgent, health_router
from berth.worker.gpustack import router as gpustack_router
from berth.worker.instances import ServeManager
from berth.worker.metrics import CONTENT_TYPE
from berth.worker.routing import ROUTER_PREFIX, RouterServices, engine_stream_client
from berth.worker.routing import router as inference_router
from berth.worker.swap import SwapController

logger = logging.getLogger(__name__)
_GPUSTACK_HEADER = "X-GPUStack-Model-Instance"
BearerAuthCheck = Callable[[str, bytes], bool]
#: Seconds an idle client connection is kept open. Longer than clients keep idle connections
#: pooled (httpx 5 s, aiohttp 15 s), so the client always closes first: a server closing at the
#: moment a client reuses the connection would fail that request with a transport error.
KEEP_ALIVE_S = 75
#: Seconds between returns of freed C memory to the system (see :mod:`berth.worker._runtime`).
TRIM_EVERY_S = 60.0
_SIMPLE = re.compile(r"^[A-Za-z_][\w-]*$")

_DESCRIPTION = """berth's worker: runs vLLM instances on this node.

* `/v2/vllm/instances`: the multi-instance launcher's API, unchanged (a client written for the
  launcher works as is). `status` is `running` while an instance's process lives and `stopped`
  once it exited; `state` and `ready` say more.
* `/v2/instances`: instances from deployment specs (the document `berth plan` reads), with their
  plan, named ports and readiness URL; `/v2/instances/watch` streams changes.
* `/v1/*`: one OpenAI-compatible endpoint for every instance, routed by the request's `model`
  (or GPUStack's `X-GPUStack-Model-Instance` header), streamed both ways.
* With a token configured, every endpoint but `/health` needs `Authorization: Bearer <token>`.
"""


def validation_detail(exc: RequestValidationError) -> str:
    """One line per problem, each naming its field (``options``, ``model.env``, ``query.since``...)."""
    lines = []
    for error in exc.errors():
        loc = tuple(error.get("loc") or ())
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if error.get("type") == "extra_forbidden" and loc:
            loc, message = loc[:-1], f"unknown field {str(loc[-1])[:60]!r} (check the spelling; see /docs)"
        path, key = _where(loc)
        lines.append(f"{path}: {key}{message}")
    return "; ".join(lines) or "invalid request"


def _where(loc: tuple[int | str, ...]) -> tuple[str, str]:
    """(field path, note naming a mapping key): ``("body", "model", "env", "A B")`` ->
    ``("model.env", "key 'A B': ")``; the body itself is ``body``."""
    parts = list(loc[1:]) if loc[:1] == ("body",) else list(loc)
    if loc[:1] == ("body",) and parts[:1] and isinstance(parts[0], int):
        return "body", ""  # a JSON decoding error at a character position
    path = ""
    for index, part in enumerate(parts):
        if isinstance(part, int):
            path += f"[{part}]"
            continue
        if not _SIMPLE.match(part) or parts[index + 1 : index + 2] == ["[key]"]:
            return path or "body", f"key {part[:40]!r}: "
        path += f".{part}" if path else part
    return path or "body", ""


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": validation_detail(exc)}, status_code=422)


async def _worker_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, WorkerError)
    return JSONResponse({"detail": str(exc)}, status_code=exc.status_code, headers=exc.headers() or None)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's errors as JSON; a body FastAPI could not decode (not UTF-8) is a 422 naming it."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400 and exc.__cause__ is not None:
        detail = f"body: cannot be decoded ({type(exc.__cause__).__name__}); send UTF-8 JSON"
        return JSONResponse({"detail": detail}, status_code=422)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unexpected error in %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the worker's log"}, status_code=500)


def _lifespan(services: Services, start: bool, close: bool) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            await _start_all(services, stack, start, close)
            yield

    return lifespan


async def _start_all(services: Services, stack: contextlib.AsyncExitStack, start: bool, close: bool) -> None:
    """Start everything in order; ``stack`` stops what started, in the reverse order."""
    manager = services.manager
    if start:
        await services.blocking(manager.start)
    if close:
        stack.push_async_callback(services.blocking, manager.close)
    if services.swap is not None:
        await services.blocking(services.swap.start)
        stack.push_async_callback(services.blocking, services.swap.close)
    if services.gpustack is not None:
        await services.gpustack.start()
        stack.push_async_callback(services.gpustack.stop)
    services.http = engine_stream_client()
    stack.push_async_callback(_close_http, services)
    trimming = asyncio.create_task(_trim_memory(services))
    stack.push_async_callback(_cancel, trimming)


async def _close_http(services: Services) -> None:
    client, services.http = services.http, None
    if client is not None:
        await client.aclose()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _services(manager: ServeManager) -> Services:
    """Every service the handlers use, made now (no I/O: the lifespan starts them)."""
    services = Services(manager)
    if manager.settings.swap_enabled:
        services.swap = services.activator = SwapController(manager)
    if manager.settings.gpustack_url:
        services.gpustack = GPUStackAgent(manager, services.threads, services.log_reads)
        services.header_routes[_GPUSTACK_HEADER] = services.gpustack.header_route
    return services


def router_view(services: Services) -> RouterServices:
    """The services as the router reads them (a type check: :class:`Services` has what it needs)."""
    return services


def _gpustack_admits(app: FastAPI, agent: GPUStackAgent | None) -> BearerAuthCheck | None:
    """With an agent: GPUStack's worker endpoints, and its token admitted on GPUStack's paths."""
    if agent is None:
        return None
    app.include_router(health_router)
    app.include_router(gpustack_router)

    def admits(path: str, presented: bytes) -> bool:
        return path.startswith(GPUSTACK_PATHS) and agent.accepts(presented)

    return admits


async def _trim_memory(services: Services) -> None:
    """Every :data:`TRIM_EVERY_S`, on a thread (the call holds the allocator, not the GIL)."""
    while True:
        await asyncio.sleep(TRIM_EVERY_S)
        if not await services.blocking(trim_malloc):
            return


def create_app(manager: ServeManager, *, start: bool = True, close: bool = True) -> FastAPI:
    """The API over ``manager``; the app's lifespan starts it (``start``) and closes it (``close``).

    Closing belongs to the lifespan: uvicorn re-raises SIGTERM after its shutdown, so code after
    ``uvicorn.run`` may never run.
    """
    services = _services(manager)
    app = FastAPI(title="berth worker", version=__version__, description=_DESCRIPTION,
                  lifespan=_lifespan(services, start, close))
    app.state.services = services
    app.include_router(launcher_router)
    app.include_router(instances_router)
    app.include_router(loras_router)
    if services.swap is not None:
        app.include_router(swap_router)
    gpustack_admits = _gpustack_admits(app, services.gpustack)
    app.include_router(inference_router)
    app.add_api_route("/metrics", _metrics, methods=["GET"], response_class=Response, tags=["worker"],
                      summary="Prometheus metrics")
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(WorkerError, _worker_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    settings = manager.settings
    token = settings.api_token.get_secret_value() if settings.api_token else None
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, unbuffered=(ROUTER_PREFIX,))
    app.add_middleware(BearerAuth, token=token, open_paths=frozenset({"/health", "/healthz"}), also=gpustack_admits)
    app.add_middleware(RequestMetrics, metrics=manager.metrics)
    return app


async def _metrics(request: Request) -> Response:
    services: Services = request.app.state.services
    return Response(services.manager.metrics.render(), media_type=CONTENT_TYPE)
