"""The launcher-compatible API: ``/``, ``/health`` and ``/v2/vllm/instances``, as the seed's
API reference documents them, field for field and status code for status code.

Creates and deletes block (admission, a stop's grace period): they go to a thread under the
app's limiter (:meth:`Services.blocking`); reads of the registry's in-memory copy stay on the loop.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import Response

from berth.worker.admission import LauncherRequest, check_instance_id
from berth.worker.api._deps import ERROR_RESPONSES as _ERRORS
from berth.worker.api._deps import Manager, Svc
from berth.worker.api._logs import LOG_RESPONSES, read_log
from berth.worker.api._models import (
    AllStopped,
    Created,
    Health,
    InstanceIds,
    InstanceList,
    InstanceStatus,
    ServiceInfo,
    Terminated,
    launcher_view,
)
from berth.worker.errors import InvalidRequest

router = APIRouter(tags=["launcher"])
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}

def parse_flag(value: str, field: str) -> bool:
    """``True``/``False``/``true``/``false``/``1``/``0`` (and yes/no, on/off)."""
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise InvalidRequest(f"{field}: {value[:40]!r} is not a boolean; use true or false")


@router.get("/", response_model=ServiceInfo, summary="Service information")
async def index() -> ServiceInfo:
    return ServiceInfo()


@router.get("/health", response_model=Health, summary="Is the worker up (no token needed)")
async def health() -> Health:
    return Health()


@router.post("/v2/vllm/instances", status_code=201, response_model=Created, responses=_ERRORS,
             summary="Create an instance with a generated id")
async def create_instance(body: LauncherRequest, services: Svc) -> Created:
    record = await services.blocking(services.manager.create_from_launcher, body)
    return Created(instance_id=record.id)


@router.put("/v2/vllm/instances/{instance_id}", status_code=201, response_model=Created, responses=_ERRORS,
            summary="Create an instance with the given id (409 if it exists)")
async def create_named_instance(instance_id: str, body: LauncherRequest, services: Svc) -> Created:
    record = await services.blocking(services.manager.create_from_launcher, body, check_instance_id(instance_id))
    return Created(instance_id=record.id)


@router.get("/v2/vllm/instances", response_model=InstanceList | InstanceIds, responses=_ERRORS,
            summary="All instances, with status (detail=true, the default) or ids only")
async def get_all_instances(manager: Manager, detail: Annotated[str, Query(max_length=10)] = "true") -> dict[str, Any]:
    records = manager.list()
    if not parse_flag(detail, "detail"):
        return {"instance_ids": [r.id for r in records], "count": len(records)}
    views = [launcher_view(record) for record in records]
    running = sum(1 for view in views if view["status"] == "running")
    return {"total_instances": len(views), "running_instances": running, "instances": views}


@router.get("/v2/vllm/instances/{instance_id}", response_model=InstanceStatus, responses=_ERRORS,
            summary="One instance's status")
async def get_instance_status(instance_id: str, manager: Manager) -> dict[str, Any]:
    return launcher_view(manager.get(check_instance_id(instance_id)))


@router.delete("/v2/vllm/instances/{instance_id}", response_model=Terminated, responses=_ERRORS,
               summary="Stop and delete one instance")
async def delete_instance(instance_id: str, services: Svc) -> Terminated:
    await services.blocking(services.manager.delete, check_instance_id(instance_id))
    return Terminated(instance_id=instance_id)


@router.delete("/v2/vllm/instances", response_model=AllStopped, responses=_ERRORS,
               summary="Stop and delete every instance")
async def delete_all_instances(services: Svc) -> AllStopped:
    stopped = [Terminated(instance_id=record.id) for record in await services.blocking(services.manager.delete_all)]
    return AllStopped(stopped_instances=stopped, total_stopped=len(stopped))


@router.get("/v2/vllm/instances/{instance_id}/log", response_class=Response, responses={**_ERRORS, **LOG_RESPONSES},
            summary="Raw log bytes, by RFC 9110 byte range")
async def get_instance_logs(
    instance_id: str,
    services: Svc,
    range_header: Annotated[str | None, Header(alias="Range")] = None,
) -> Response:
    return await read_log(services, check_instance_id(instance_id), range_header)
