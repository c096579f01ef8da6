"""Registered models under ``/v2/models``: register, list, park, wake, sleep, pin, forget.

A registered model keeps its definition (the launcher body or spec it is started from) while its
engine is parked or asleep; ``/v1/*`` requests for it start or wake it through the same
:class:`~berth.worker.swap.SwapController` these endpoints use. Names may hold ``/``
(``Qwen/Qwen2.5-0.5B``): the operations are suffixes after the name. The controller's calls
block (its lock, SQLite, an engine's start or wake): each runs in a thread under the app's limiter.
The app includes this router, and starts and closes the controller, when ``swap_enabled``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query

from berth.worker.api._deps import ERROR_RESPONSES as _ERRORS
from berth.worker.api._deps import Services, Svc
from berth.worker.errors import WorkerError
from berth.worker.swap import (
    ActivationView,
    ModelDefinition,
    ModelList,
    ModelRegistration,
    ModelView,
    SwapController,
)

router = APIRouter(prefix="/v2/models", tags=["models"])
_MAX_WAIT_S = 3600.0
T = TypeVar("T")


class SwapDisabled(WorkerError):
    status_code = 404


@dataclass(frozen=True, slots=True)
class SwapCalls:
    """The controller, and the services' thread limiter its blocking calls run under."""

    controller: SwapController
    services: Services

    async def __call__(self, act: Callable[[SwapController], T]) -> T:
        """``act(controller)`` in a thread."""
        controller = self.controller
        return await self.services.blocking(lambda: act(controller))

    async def view(self, act: Callable[[SwapController], ModelDefinition]) -> dict[str, Any]:
        """``act(controller)`` then the definition's view, both in one thread."""
        return await self(lambda controller: controller.view(act(controller)))


async def controller_of(services: Svc) -> SwapCalls:
    if services.swap is None:
        raise SwapDisabled("model swapping is off on this worker (swap_enabled=false)")
    return SwapCalls(services.swap, services)


Swap = Annotated[SwapCalls, Depends(controller_of)]
Wait = Annotated[float, Query(gt=0, le=_MAX_WAIT_S, description="Seconds to wait for the engine (503 + Retry-After past it).")]


@router.post("", status_code=201, response_model=ModelView, responses=_ERRORS,
             summary="Register a model (launcher options or a deployment spec); parked unless start=true")
async def register(body: ModelRegistration, swap: Swap) -> dict[str, Any]:
    return await swap.view(lambda c: c.register(body))


@router.get("", response_model=ModelList, responses=_ERRORS, summary="Every registered model and its state")
async def list_models(swap: Swap) -> dict[str, Any]:
    return {"models": await swap(lambda c: [c.view(d) for d in c.definitions()])}


@router.post("/{name:path}/wake", response_model=ActivationView, responses=_ERRORS,
             summary="Make the model ready: wake it if asleep, start it if parked; waits up to `timeout` s")
async def wake(name: str, swap: Swap, timeout: Wait = 300.0) -> dict[str, Any]:
    activation = await swap(lambda c: c.activate(name, timeout))
    view = await swap.view(lambda c: c.get(name))
    return {**view, "path": activation.path, "seconds": round(activation.seconds, 3)}


@router.post("/{name:path}/sleep", response_model=ModelView, responses=_ERRORS,
             summary="Put the model's engine to sleep (vLLM sleep mode; level 1 or 2, default its own)")
async def sleep(name: str, swap: Swap,
                level: Annotated[int | None, Query(ge=1, le=2, description="vLLM sleep level.")] = None) -> dict[str, Any]:
    return await swap.view(lambda c: c.sleep(name, level))


@router.post("/{name:path}/park", response_model=ModelView, responses=_ERRORS,
             summary="Stop the model's engine and keep its definition")
async def park(name: str, swap: Swap) -> dict[str, Any]:
    return await swap.view(lambda c: c.park(name))


@router.post("/{name:path}/pin", response_model=ModelView, responses=_ERRORS,
             summary="Pin the model: the policy never sleeps or parks it")
async def pin(name: str, swap: Swap) -> dict[str, Any]:
    return await swap.view(lambda c: c.pin(name, True))


@router.post("/{name:path}/unpin", response_model=ModelView, responses=_ERRORS, summary="Unpin the model")
async def unpin(name: str, swap: Swap) -> dict[str, Any]:
    return await swap.view(lambda c: c.pin(name, False))


@router.get("/{name:path}", response_model=ModelView, responses=_ERRORS, summary="One registered model")
async def get_model(name: str, swap: Swap) -> dict[str, Any]:
    return await swap.view(lambda c: c.get(name))


@router.delete("/{name:path}", response_model=ModelView, responses=_ERRORS,
               summary="Park the model and forget its definition")
async def unregister(name: str, swap: Swap) -> dict[str, Any]:
    view = await swap.view(lambda c: c.unregister(name))
    return {**view, "reason": "unregistered: its engine is stopped and its definition forgotten"}
