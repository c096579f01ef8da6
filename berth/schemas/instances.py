"""A model instance assigned to this worker, and the named ports it was given."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from berth.schemas._base import GPUStackModel

__all__ = [
    "ComputedResourceClaim",
    "DistributedServers",
    "InstancePorts",
    "ModelInstance",
    "SubordinateWorker",
]


class ComputedResourceClaim(GPUStackModel):
    """Resources the scheduler reserved."""

    vram: dict[int, int] | None = Field(default=None, description="GPU index -> bytes of VRAM.")
    ram: int | None = Field(default=None, description="Bytes of host RAM.")


class SubordinateWorker(GPUStackModel):
    """A follower worker of a distributed instance."""

    worker_id: int | None = Field(default=None)
    worker_name: str | None = Field(default=None)
    worker_ip: str | None = Field(default=None)
    gpu_indexes: list[int] | None = Field(default=None)
    computed_resource_claim: ComputedResourceClaim | None = Field(default=None)


class DistributedServers(GPUStackModel):
    subordinate_workers: list[SubordinateWorker] | None = Field(default=None)


class ModelInstance(GPUStackModel):
    """One replica of a model, as GPUStack's scheduler assigns it."""

    id: int | None = Field(default=None, description="Scheduler's instance id.")
    name: str = Field(min_length=1, description="Instance name; the workload is named after it.")
    model_id: int | None = Field(default=None)
    model_name: str = Field(min_length=1, description="Served model name.")
    worker_id: int | None = Field(default=None, description="Leader (main) worker id.")
    worker_ip: str | None = Field(default=None, description="Leader (main) worker address.")
    gpu_indexes: list[int] | None = Field(default=None, description="Leader's GPU indexes.")
    ports: list[int] | None = Field(
        default=None,
        description="As the scheduler sends them: [http, dp_rpc?, ..., distributed] "
        "(second = data-parallel RPC, last = distributed init, for distributed instances).",
    )
    distributed_servers: DistributedServers | None = Field(default=None)
    computed_resource_claim: ComputedResourceClaim | None = Field(default=None)

    @field_validator("ports")
    @classmethod
    def _ports_in_range(cls, value: list[int] | None) -> list[int] | None:
        for port in value or []:
            if not 1 <= port <= 65535:
                raise ValueError(f"port {port} is outside 1..65535")
        return value

    @property
    def subordinate_workers(self) -> list[SubordinateWorker]:
        servers = self.distributed_servers
        return list(servers.subordinate_workers or []) if servers else []


class InstancePorts(BaseModel):
    """The instance's ports by meaning. Built once from the scheduler's list."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    http: int | None = Field(default=None, description="OpenAI-compatible API port.")
    dp_rpc: int | None = Field(default=None, description="Data-parallel RPC port.")
    distributed: int | None = Field(default=None, description="Distributed init (VLLM_PORT).")

    @classmethod
    def from_list(cls, ports: list[int] | None) -> InstancePorts:
        """``[http, dp_rpc, ..., distributed]``; one port means HTTP only."""
        ports = list(ports or [])
        if len(ports) < 2:
            return cls(http=ports[0] if ports else None)
        return cls(http=ports[0], dp_rpc=ports[1], distributed=ports[-1])
