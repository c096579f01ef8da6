"""Registered models under ``/v2/models``: register, list, park, wake, sleep, pin, forget.

A registered model keeps its definition (the launcher body or spec it is started from) while its
engine is parked or asleep; ``/v1/*`` requests for it start or wake it through the same
:class:`~berth.worker.swap.SwapController` these endpoints use. Names may hold ``/``
(``Qwen/Qwen2.5-0.5B``): the operations are suffixes after the name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool

from berth.worker.api._deps import ERROR_RESPONSES as _ERRORS
from berth.worker.errors import WorkerError
from berth.worker.instances import ServeManager
from berth.worker.swap import ActivationView, ModelList, ModelRegistration, ModelView, SwapController


router = APIRouter(prefix="/v2/models", tags=["models"])
_MAX_WAIT_S = 3600.0


class SwapDisabled(WorkerError):
    status_code = 404


def controller_of(request: Request) -> SwapController:
    swap = getattr(request.app.state, "swap", None)
    if swap is None:
        raise SwapDisabled("model swapping is off on this worker (swap_enabled=false)")
    return swap


Swap = Annotated[SwapController, Depends(controller_of)]
Wait = Annotated[float, Query(gt=0, le=_MAX_WAIT_S, description="Seconds to wait for the engine (503 + Retry-After past it).")]


@router.post("", status_code=201, response_model=ModelView, responses=_ERRORS,
             summary="Register a model (launcher options or a deployment spec); parked unless start=true")
def register(body: ModelRegistration, swap: Swap) -> dict[str, Any]:
    return swap.view(swap.register(body))


@router.get("", response_model=ModelList, responses=_ERRORS, summary="Every registered model and its state")
def list_models(swap: Swap) -> dict[str, Any]:
    return {"models": [swap.view(d) for d in swap.definitions()]}


@router.post("/{name:path}/wake", response_model=ActivationView, responses=_ERRORS,
             summary="Make the model ready: wake it if asleep, start it if parked; waits up to `timeout` s")
def wake(name: str, swap: Swap, timeout: Wait = 300.0) -> dict[str, Any]:
    activation = swap.activate(name, timeout)
    return {**swap.view(swap.get(name)), "path": activation.path, "seconds": round(activation.seconds, 3)}


@router.post("/{name:path}/sleep", response_model=ModelView, responses=_ERRORS,
             summary="Put the model's engine to sleep (vLLM sleep mode; level 1 or 2, default its own)")
def sleep(name: str, swap: Swap,
          level: Annotated[int | None, Query(ge=1, le=2, description="vLLM sleep level.")] = None) -> dict[str, Any]:
    return swap.view(swap.sleep(name, level))


@router.post("/{name:path}/park", response_model=ModelView, responses=_ERRORS,
             summary="Stop the model's engine and keep its definition")
def park(name: str, swap: Swap) -> dict[str, Any]:
    return swap.view(swap.park(name))


@router.post("/{name:path}/pin", response_model=ModelView, responses=_ERRORS,
             summary="Pin the model: the policy never sleeps or parks it")
def pin(name: str, swap: Swap) -> dict[str, Any]:
    return swap.view(swap.pin(name, True))


@router.post("/{name:path}/unpin", response_model=ModelView, responses=_ERRORS, summary="Unpin the model")
def unpin(name: str, swap: Swap) -> dict[str, Any]:
    return swap.view(swap.pin(name, False))


@router.get("/{name:path}", response_model=ModelView, responses=_ERRORS, summary="One registered model")
def get_model(name: str, swap: Swap) -> dict[str, Any]:
    return swap.view(swap.get(name))


@router.delete("/{name:path}", response_model=ModelView, responses=_ERRORS,
               summary="Park the model and forget its definition")
def unregister(name: str, swap: Swap) -> dict[str, Any]:
    definition = swap.unregister(name)
    return {**swap.view(definition), "reason": "unregistered: its engine is stopped and its definition forgotten"}


def install(app: FastAPI, manager: ServeManager) -> SwapController | None:
    """Add model swapping to the worker's app when the settings allow it: the router, the
    activator the ``/v1/*`` router asks (``app.state.model_activator``), and its start and close
    inside the app's lifespan (after the manager starts, before it closes)."""
    if not manager.settings.swap_enabled:
        return None
    swap = SwapController(manager)
    app.state.swap = swap
    app.state.model_activator = swap
    app.include_router(router)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_: FastAPI) -> AsyncIterator[Any]:
        async with inner(app_) as state:
            await run_in_threadpool(swap.start)
            try:
                yield state
            finally:
                await run_in_threadpool(swap.close)

    app.router.lifespan_context = lifespan
    return swap
