"""Request and response bodies of the worker's API, and the views that build them from records.

The launcher shapes (``/v2/vllm/instances``) are the seed's, field for field; berth adds fields
(``state``, ``ready``, ``reason``...) to an instance's status without changing the seed's ones.
``status`` keeps the seed's meaning: ``running`` while the instance's process lives (states
``pending``, ``starting``, ``running``, ``stopping``), ``stopped`` once it has exited
(``failed``, ``stopped``); ``ready`` says whether it serves.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from berth.schemas import InstancePorts
from berth.worker.redact import masked_spec
from berth.worker.store import InstanceRecord, InstanceState, launcher_status

_ENDPOINTS = {
    "index": "GET /",
    "health": "GET /health",
    "create_instance": "POST /v2/vllm/instances",
    "create_named_instance": "PUT /v2/vllm/instances/{instance_id}",
    "delete_instance": "DELETE /v2/vllm/instances/{instance_id}",
    "delete_all_instances": "DELETE /v2/vllm/instances",
    "get_instance_status": "GET /v2/vllm/instances/{instance_id}",
    "get_all_instances": "GET /v2/vllm/instances",
    "get_instance_logs": "GET /v2/vllm/instances/{instance_id}/log",
}


class ErrorBody(BaseModel):
    detail: str = Field(description="What is wrong, naming the field, and how to fix it.")


class ServiceInfo(BaseModel):
    name: str = "Multi-Instance vLLM Management API"
    version: str = "2.0"
    endpoints: dict[str, str] = Field(default_factory=lambda: dict(_ENDPOINTS))


class Health(BaseModel):
    status: Literal["OK"] = "OK"


class Created(BaseModel):
    status: Literal["started"] = "started"
    instance_id: str


class Terminated(BaseModel):
    status: Literal["terminated"] = "terminated"
    instance_id: str


class AllStopped(BaseModel):
    status: Literal["all_stopped"] = "all_stopped"
    stopped_instances: list[Terminated]
    total_stopped: int


class InstanceStatus(BaseModel):
    """One instance in the launcher API: the seed's two fields, then berth's."""

    model_config = ConfigDict(extra="allow")

    status: Literal["running", "stopped"] = Field(description="running while the process lives, else stopped.")
    instance_id: str
    state: InstanceState = Field(description="pending, starting, running, stopping, failed or stopped.")
    ready: bool = Field(description="True once /health answers 200 and /v1/models lists the served name.")
    reason: str = Field(description="Why it is in this state.")
    exit_code: int | None = Field(default=None, description="Exit code once the process has exited.")
    restarts: int = Field(description="Restarts so far.")
    port: int | None = Field(default=None, description="The instance's HTTP port.")
    base_url: str | None = Field(default=None, description="Where its OpenAI-compatible API answers.")
    gpus: list[int] = Field(description="GPU indexes it uses.")


class InstanceList(BaseModel):
    total_instances: int
    running_instances: int
    instances: list[InstanceStatus]


class InstanceIds(BaseModel):
    instance_ids: list[str]
    count: int


class InstanceView(BaseModel):
    """An instance in the spec API."""

    model_config = ConfigDict(extra="allow")

    instance_id: str
    status: Literal["running", "stopped"]
    state: InstanceState
    ready: bool
    reason: str
    ports: InstancePorts = Field(description="Every port the instance holds, by name (the Ray band included).")
    readiness_url: str | None = None
    base_url: str | None = None
    revision: int = Field(description="Registry revision of the last change (for the watch stream).")


class InstanceViews(BaseModel):
    revision: int = Field(description="Current registry revision: watch from here to follow changes.")
    instances: list[InstanceView]


class SpecCreated(InstanceView):
    plan: dict[str, Any] = Field(description="The plan, secrets masked (its ports are `ports`).")
    named_ports: InstancePorts = Field(description="Deprecated: the same as `ports`, for older clients.")


def launcher_view(record: InstanceRecord) -> dict[str, Any]:
    """An instance as the launcher API shows it."""
    return {
        "status": launcher_status(record.state),
        "instance_id": record.id,
        "state": record.state.value,
        "ready": record.state is InstanceState.RUNNING,
        "reason": record.reason,
        "exit_code": record.exit_code,
        "restarts": record.restarts,
        "port": InstancePorts.model_validate(record.ports).http,
        "base_url": record.endpoints.base_url,
        "gpus": list(record.gpus),
        "deployer": record.deployer,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


def instance_view(record: InstanceRecord, *, with_spec: bool = False) -> dict[str, Any]:
    """An instance as the spec API shows it (spec secrets masked when included)."""
    view = record.summary()
    view["instance_id"] = view.pop("id")
    view.update(
        status=launcher_status(record.state),
        ready=record.state is InstanceState.RUNNING,
        base_url=record.endpoints.base_url,
        readiness_url=record.endpoints.readiness_url,
        served_names=list(record.endpoints.served_names),
    )
    if with_spec:
        view["spec"] = masked_spec(record.spec)
    return view
