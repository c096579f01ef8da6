"""Runtime LoRA adapters of a running instance: list, load, unload.

The same operations under both APIs, for instances of either origin:
``/v2/instances/{id}/loras[/{name}]`` and ``/v2/vllm/instances/{id}/loras[/{name}]``.
A load is checked (name, path, the instance's runtime-LoRA options, no other instance of this
worker already answering to the name), done by the engine, then written to the instance's
record, so the ``/v1`` router sends ``model=<name>`` to it and the adapter is loaded again when
the engine or the worker restarts (see :mod:`berth.worker.loras`). The work is
``ServeManager.load_lora``/``unload_lora``'s; the handlers send it to a thread under the app's
limiter (:meth:`Services.blocking`), so the engine calls never block the event loop. A list
reads the registry's in-memory copy and stays on the loop.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from berth.worker.admission import check_instance_id
from berth.worker.api._deps import ERROR_RESPONSES as _ERRORS
from berth.worker.api._deps import Manager, Svc
from berth.worker.loras import LoraLoad, runtime_loras
from berth.worker.store import InstanceRecord

router = APIRouter(tags=["loras"])
_PREFIXES = ("/v2/instances", "/v2/vllm/instances")
_ERRORS_502 = {**_ERRORS, 502: _ERRORS[503]}


class LoraEntry(BaseModel):
    name: str = Field(description="The adapter's name; `/v1` requests with this `model` go to the instance.")
    path: str = Field(description="The adapter directory the engine loaded (symlinks resolved).")


class LoraList(BaseModel):
    instance_id: str = Field(description="The instance.")
    loras: list[LoraEntry] = Field(description="Adapters loaded at run time, in load order (kept across restarts).")


def _view(record: InstanceRecord) -> dict[str, Any]:
    return {"instance_id": record.id, "loras": runtime_loras(record)}


async def list_loras(instance_id: str, manager: Manager) -> dict[str, Any]:
    """Adapters loaded at run time (those of `--lora-modules` are part of the spec)."""
    return _view(manager.get(check_instance_id(instance_id)))


async def load_lora(instance_id: str, body: LoraLoad, services: Svc) -> dict[str, Any]:
    """Load a LoRA adapter into the running engine and keep it in the instance's record.

    Loading a name again with another path replaces it. 409 when the instance is not running, was
    not started for runtime LoRA, or another instance already answers to the name."""
    load = services.manager.load_lora
    return _view(await services.blocking(load, check_instance_id(instance_id), body.name, body.path))


async def unload_lora(instance_id: str, name: str, services: Svc) -> dict[str, Any]:
    """Unload an adapter from the engine and forget it (it is not loaded again on restart)."""
    unload = services.manager.unload_lora
    return _view(await services.blocking(unload, check_instance_id(instance_id), name))


for _prefix in _PREFIXES:
    _tag = "launcher" if "vllm" in _prefix else "instances"
    router.add_api_route(f"{_prefix}/{{instance_id}}/loras", list_loras, methods=["GET"], response_model=LoraList,
                         responses=_ERRORS, tags=[_tag], operation_id=f"list_loras_{_tag}",
                         summary="LoRA adapters loaded into the instance at run time")
    router.add_api_route(f"{_prefix}/{{instance_id}}/loras", load_lora, methods=["POST"], response_model=LoraList,
                         responses=_ERRORS_502, tags=[_tag], operation_id=f"load_lora_{_tag}",
                         summary="Load a LoRA adapter into the running instance (kept across restarts)")
    router.add_api_route(f"{_prefix}/{{instance_id}}/loras/{{name}}", unload_lora, methods=["DELETE"],
                         response_model=LoraList, responses=_ERRORS_502, tags=[_tag],
                         operation_id=f"unload_lora_{_tag}", summary="Unload a runtime LoRA adapter")
