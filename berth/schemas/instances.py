"""A model instance assigned to this worker, and the named ports it was given."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from berth.schemas._base import GPUStackModel
from berth.utils.ports import parse_port_range

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
    """Every port an instance holds, by meaning: the one shape from the scheduler's list to the
    plan, the worker's registry and its API.

    Built once from the scheduler's list (:meth:`from_list`): the first is ``http``; with two
    or more, the second is ``dp_rpc`` and the last ``distributed``; ports between them are kept
    in ``extra`` (declared by the run container, held by the worker). A distributed instance
    also holds a Ray band, ``ray_range``. :meth:`held` is every port the instance holds, so
    admission holds and releases them as a whole.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    http: int | None = Field(default=None, ge=1, le=65535, description="OpenAI-compatible API port.")
    dp_rpc: int | None = Field(default=None, ge=1, le=65535, description="Data-parallel RPC port.")
    distributed: int | None = Field(
        default=None, ge=1, le=65535, description="Distributed init (VLLM_PORT, or mp's master port)."
    )
    extra: tuple[int, ...] = Field(
        default=(), description="Ports the scheduler sent beyond the named ones, in its order."
    )
    ray_range: str | None = Field(
        default=None, description="The Ray band START-END a distributed instance holds, else null."
    )

    @field_validator("extra")
    @classmethod
    def _extra_in_range(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        for port in value:
            if not 1 <= port <= 65535:
                raise ValueError(f"port {port} is outside 1..65535")
        return value

    @field_validator("ray_range")
    @classmethod
    def _band(cls, value: str | None) -> str | None:
        if value is not None:
            parse_port_range(value)
        return value

    @classmethod
    def from_list(cls, ports: list[int] | None, *, ray_range: str | None = None) -> InstancePorts:
        """``[http, dp_rpc, ..., distributed]``; one port means HTTP only."""
        ports = list(ports or [])
        if len(ports) < 2:
            return cls(http=ports[0] if ports else None, ray_range=ray_range)
        return cls(http=ports[0], dp_rpc=ports[1], distributed=ports[-1], extra=tuple(ports[2:-1]),
                   ray_range=ray_range)

    def to_list(self) -> list[int]:
        """The scheduler's list again: ``http``, ``dp_rpc``, ``extra``..., ``distributed``."""
        ports = [p for p in (self.http, self.dp_rpc, *self.extra, self.distributed) if p is not None]
        return list(dict.fromkeys(ports))

    def stored(self) -> dict[str, object]:
        """The compact JSON form a registry keeps (unset ports left out); read back with
        :meth:`model_validate`."""
        return self.model_dump(mode="json", exclude_defaults=True)

    def held(self) -> set[int]:
        """Every port the instance holds: each named one (a port field added later counts too),
        the extra ones and the whole Ray band."""
        named = {value for value in self.model_dump().values() if isinstance(value, int)}
        held = named | set(self.extra)
        if self.ray_range:
            start, end = parse_port_range(self.ray_range)
            held.update(range(start, end + 1))
        return held
