"""The spec API under ``/v2/instances``: create from a deployment spec (the same document as
``berth plan``), list, get, delete, logs, and a watch stream of instance events (NDJSON,
resumable from a revision).

Handlers run on the event loop: reads of the registry's in-memory copy stay there; creates,
deletes and SQLite queries go to a thread under the app's limiter (:meth:`Services.blocking`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from berth.deployers.base import RAY_HEAD_CONTAINER, RUN_CONTAINER
from berth.schemas import DeploymentSpec
from berth.worker.admission import check_instance_id
from berth.worker.api._deps import ERROR_RESPONSES as _ERRORS
from berth.worker.api._deps import Manager, Services, Svc
from berth.worker.api._logs import LOG_RESPONSES, read_log
from berth.worker.api._models import (
    InstanceView,
    InstanceViews,
    SpecCreated,
    Terminated,
    instance_view,
)
from berth.worker.instances import ServeManager
from berth.worker.redact import masked_plan

router = APIRouter(prefix="/v2/instances", tags=["instances"])
HEARTBEAT_S = 10.0
_POLL_S = 0.2


@router.post("", status_code=201, response_model=SpecCreated, responses=_ERRORS,
             summary="Create an instance from a deployment spec; returns its plan, ports and readiness URL")
async def create(
    spec: DeploymentSpec,
    services: Svc,
    allow_shared_gpus: Annotated[bool, Query(description="Allow GPUs another instance uses.")] = False,
) -> dict[str, Any]:
    record, plan = await services.blocking(
        lambda: services.manager.create_from_spec(spec, shared_gpus=allow_shared_gpus))
    view = instance_view(record)
    view["plan"] = {k: v for k, v in masked_plan(plan.to_dict()).items() if k != "ports"}  # in view["ports"]
    view["named_ports"] = view["ports"]
    return view


@router.get("", response_model=InstanceViews, responses=_ERRORS, summary="Every instance, and the current revision")
async def list_instances(manager: Manager) -> dict[str, Any]:
    revision = manager.revision
    return {"revision": revision, "instances": [instance_view(r) for r in manager.list()]}


def _events(manager: ServeManager, since: int) -> list[dict[str, Any]]:
    return [event.to_dict() for event in manager.events_since(since)]


async def _stream(request: Request, services: Services, since: int, timeout: float | None) -> AsyncIterator[bytes]:
    manager = services.manager
    deadline = None if timeout is None else time.monotonic() + timeout
    beat = time.monotonic()
    while deadline is None or time.monotonic() < deadline:
        # the revision is read from memory: an idle stream costs no thread and no query
        events = await services.blocking(_events, manager, since) if manager.revision > since else []
        for event in events:
            since = event["revision"]
            yield json.dumps(event).encode() + b"\n"
        if events:
            beat = time.monotonic()
            continue
        if await request.is_disconnected():
            return
        if time.monotonic() - beat >= HEARTBEAT_S:
            beat = time.monotonic()
            yield json.dumps({"type": "heartbeat", "revision": since}).encode() + b"\n"
        await asyncio.sleep(_POLL_S)


@router.get("/watch", response_class=StreamingResponse, responses=_ERRORS,
            summary="NDJSON stream of instance events after revision `since` (heartbeats every 10 s)")
async def watch(
    request: Request,
    services: Svc,
    since: Annotated[int, Query(ge=0, le=2**62, description="Stream events with a greater revision.")] = 0,
    timeout: Annotated[float | None, Query(gt=0, le=86400, description="End the stream after this many seconds.")] = None,
) -> Response:
    oldest = await services.blocking(services.manager.oldest_revision)  # a query: never on the event loop
    if since + 1 < oldest:
        detail = (f"since: revision {since} is no longer retained (oldest is {oldest}); "
                  f"list /v2/instances and watch from its revision")
        return JSONResponse({"detail": detail}, status_code=410)
    return StreamingResponse(_stream(request, services, since, timeout), media_type="application/x-ndjson")


@router.get("/{instance_id}", response_model=InstanceView, responses=_ERRORS, summary="One instance, spec included")
async def get_instance(instance_id: str, manager: Manager) -> dict[str, Any]:
    return instance_view(manager.get(check_instance_id(instance_id)), with_spec=True)


@router.delete("/{instance_id}", response_model=Terminated, responses=_ERRORS, summary="Stop and delete one instance")
async def delete_instance(instance_id: str, services: Svc) -> Terminated:
    record = await services.blocking(services.manager.delete, check_instance_id(instance_id))
    return Terminated(instance_id=record.id)


@router.get("/{instance_id}/log", response_class=Response, responses={**_ERRORS, **LOG_RESPONSES},
            summary="Raw log bytes of one container, by RFC 9110 byte range")
async def get_log(
    instance_id: str,
    services: Svc,
    container: Annotated[Literal["default", "ray-head"], Query(description="Run container or Ray head.")] = RUN_CONTAINER,
    range_header: Annotated[str | None, Header(alias="Range")] = None,
) -> Response:
    assert container in (RUN_CONTAINER, RAY_HEAD_CONTAINER)
    return await read_log(services, check_instance_id(instance_id), range_header, container)
