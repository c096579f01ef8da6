"""A model instance assigned to this worker, and the named ports it was given."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from berth.schemas._base import GPUStackModel, check_ports, port_field
from berth.utils.ports import parse_port_range

__all__ = [
    "CacheConfigSnapshot",
    "ComputedResourceClaim",
    "DistributedServers",
    "InstancePorts",
    "MountedLoRA",
    "ModelInstance",
    "SubordinateWorker",
]


class ComputedResourceClaim(GPUStackModel):
    """Resources the scheduler reserved."""

    vram: dict[int, int] | None = Field(default=None, description="GPU index -> bytes of VRAM.")
    ram: int | None = Field(default=None, description="Bytes of host RAM.")


_HEREDOC_END = "GPUSTACK_CACHE_FILE_EOF"


class MountedLoRA(GPUStackModel):
    """A LoRA adapter the scheduler mounted on the instance (GPUStack's ``LoraListEntry``)."""

    lora_name: str = Field(min_length=1, description="Name clients send, '<base>:<adapter>'.")
    path: str | None = Field(default=None, description="The adapter's directory on this node.")


class CacheConfigSnapshot(GPUStackModel):
    """A shared KV cache service as the scheduler resolved it for this instance."""

    cache_service_id: int | None = Field(default=None, description="The cache service's id.")
    injected: bool = Field(
        default=False, description="True when the instance starts attached; false is a degraded start."
    )
    reason: str | None = Field(default=None, description="Why it is not injected.")
    env: dict[str, str] = Field(default_factory=dict, description="Connector environment.")
    args: list[str] = Field(default_factory=list, description="Connector engine arguments.")
    files: dict[str, str] = Field(
        default_factory=dict, description="Connector config files: container path -> contents."
    )

    @field_validator("files")
    @classmethod
    def _safe_files(cls, value: dict[str, str]) -> dict[str, str]:
        """Files are written by a shell script: absolute plain paths, and no content line that
        would end the script's heredoc early."""
        for path, content in value.items():
            if not path.startswith("/") or ".." in path.split("/") or any(c in path for c in "'\n\x00"):
                raise ValueError(f"{path!r} must be an absolute path without '..', quotes or newlines")
            if _HEREDOC_END in content.splitlines():
                raise ValueError(f"{path!r}: a line of the contents is {_HEREDOC_END!r}, which the script reserves")
        return value


class SubordinateWorker(GPUStackModel):
    """A follower worker of a distributed instance."""

    worker_id: int | None = Field(default=None)
    worker_name: str | None = Field(default=None)
    worker_ip: str | None = Field(default=None)
    worker_ifname: str | None = Field(default=None, description="Kept; berth uses worker.ifname.")
    gpu_type: str | None = Field(default=None, description="Runtime type of its GPUs (cuda, rocm...).")
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
    worker_ifname: str | None = Field(default=None, description="Kept; berth uses worker.ifname.")
    gpu_type: str | None = Field(
        default=None, description="Runtime type of the leader's GPUs; only devices of it are selected."
    )
    gpu_indexes: list[int] | None = Field(default=None, description="Leader's GPU indexes.")
    ports: list[int] | None = Field(
        default=None,
        description="As the scheduler sends them: [http, dp_rpc?, ..., distributed] "
        "(second = data-parallel RPC, last = distributed init, for distributed instances).",
    )
    port: int | None = port_field("The serving port when ports is empty; also {{port}} in placeholders.")
    distributed_servers: DistributedServers | None = Field(default=None)
    computed_resource_claim: ComputedResourceClaim | None = Field(default=None)
    mounted_loras: list[MountedLoRA] | None = Field(
        default=None, description="LoRA adapters served from the start (--lora-modules)."
    )
    cache_config: CacheConfigSnapshot | None = Field(
        default=None, description="Shared KV cache service, resolved by the scheduler."
    )
    role: str | None = Field(
        default=None, description="Disaggregated-serving role (prefill, decode...); orders KV connectors."
    )
    group_id: str | None = Field(default=None, description="Disaggregated group; {{group_id}}.")

    @field_validator("ports")
    @classmethod
    def _ports_in_range(cls, value: list[int] | None) -> list[int] | None:
        check_ports(value or [])
        return value

    @property
    def subordinate_workers(self) -> list[SubordinateWorker]:
        servers = self.distributed_servers
        return list(servers.subordinate_workers or []) if servers else []


class InstancePorts(BaseModel):
    """Every port an instance holds, by meaning: the one shape from the scheduler's list to the
    plan, the worker's registry and its API.

    Built once from the scheduler's list (:meth:`from_list`), which GPUStack's serve manager
    reserves as ``[http, dp_rpc, master, vllm_base, ..., distributed]``: the first is ``http``;
    with two or more, the second is ``dp_rpc`` and the last ``distributed``; the third and fourth
    are mp multi-node's ``master`` and ``vllm_base``; ports between ``vllm_base`` and the last are
    kept in ``extra`` (declared by the run container, held by the worker). A distributed
    instance also holds a Ray band, ``ray_range``. :meth:`held` is every port the instance
    holds, so admission holds and releases them as a whole.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    http: int | None = port_field("OpenAI-compatible API port.")
    dp_rpc: int | None = port_field("Data-parallel RPC port (ZMQ).")
    distributed: int | None = port_field(
        "The last port: distributed init (VLLM_PORT) under Ray, the data-parallel "
        "master (VLLM_DP_MASTER_PORT) under vLLM's mp multi-node mode."
    )
    master: int | None = port_field("mp multi-node: torch's TCPStore master port (--master-port); third port.")
    vllm_base: int | None = port_field(
        "mp multi-node, data parallel only: the base of vLLM's own port range "
        "(VLLM_PORT); fourth port, when the list holds more than three."
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
        check_ports(value)
        return value

    @field_validator("ray_range")
    @classmethod
    def _band(cls, value: str | None) -> str | None:
        if value is not None:
            parse_port_range(value)
        return value

    @property
    def dp_master(self) -> int | None:
        """mp multi-node: the data-parallel master port (VLLM_DP_MASTER_PORT), the last port."""
        return self.distributed

    @classmethod
    def from_list(
        cls, ports: list[int] | None, *, ray_range: str | None = None, fallback: int | None = None
    ) -> InstancePorts:
        """Name the scheduler's list; one port means HTTP only; none means ``fallback``
        (``instance.port``) as HTTP."""
        ports = list(ports or [])
        if len(ports) < 2:
            return cls(http=ports[0] if ports else fallback, ray_range=ray_range)
        return cls(
            http=ports[0],
            dp_rpc=ports[1],
            distributed=ports[-1],
            master=ports[2] if len(ports) > 2 else None,
            vllm_base=ports[3] if len(ports) > 3 else None,
            extra=tuple(ports[4:-1]),
            ray_range=ray_range,
        )

    def to_list(self) -> list[int]:
        """The scheduler's list again: ``http``, ``dp_rpc``, ``master``, ``vllm_base``,
        ``extra``..., ``distributed``."""
        named = (self.http, self.dp_rpc, self.master, self.vllm_base, *self.extra, self.distributed)
        return list(dict.fromkeys(p for p in named if p is not None))

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
