"""What ``plan()`` returns: the workload plus everything decided on the way, by name."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

from gpustack_runtime.deployer import ContainerPort, WorkloadPlan

from berth.utils.ports import parse_port_range

__all__ = ["DeploymentMetadata", "NamedPorts", "PlanError", "RayPorts", "ServePlan", "workload_to_dict"]

Role = Literal["single", "leader", "follower"]


class PlanError(ValueError):
    """The spec cannot be planned; the message names the field and the fix."""


@dataclass(frozen=True, slots=True)
class RayPorts:
    """One Ray node's ports, carved in order from the worker's Ray port range."""

    gcs: int
    client: int  # reserved: Ray client is no longer used
    dashboard: int
    dashboard_grpc: int  # kept for older Ray
    dashboard_agent_grpc: int
    dashboard_agent_listen: int
    metrics_export: int
    node_manager: int
    object_manager: int
    runtime_env_agent: int
    min_worker: int
    max_worker: int

    @classmethod
    def from_range(cls, text: str) -> RayPorts:
        start, end = parse_port_range(text)
        return cls(*(start + offset for offset in range(11)), max_worker=end)

    @property
    def dashboard_metrics(self) -> int:
        """Head only: the dashboard's metrics port, in the slot Ray >= 2.45 no longer uses."""
        return self.dashboard_grpc

    @property
    def autoscaler_metrics(self) -> int:
        """Head only: the autoscaler's metrics port, the band's last port (taken from the
        head's worker range, which then ends one port earlier)."""
        return self.max_worker

    def head_env(self) -> dict[str, str]:
        """Ray settings that keep a head's metrics ports inside the band (Ray's defaults,
        44217 and 44227, collide when two heads share a host)."""
        return {
            "DASHBOARD_METRIC_PORT": str(self.dashboard_metrics),
            "AUTOSCALER_METRIC_PORT": str(self.autoscaler_metrics),
        }

    def declared(self, *, leader: bool) -> list[int]:
        """Ports a Ray container declares: the node's own, plus GCS, dashboard, Ray client
        server and autoscaler metrics on the head."""
        ports = [
            self.dashboard_grpc,
            self.dashboard_agent_grpc,
            self.dashboard_agent_listen,
            self.metrics_export,
            self.node_manager,
            self.object_manager,
            self.runtime_env_agent,
        ]
        return ports + [self.gcs, self.dashboard, self.client, self.autoscaler_metrics] if leader else ports


@dataclass(frozen=True, slots=True)
class NamedPorts:
    """Every port of the plan by meaning; never ``ports[1]``."""

    http: int | None = None
    dp_rpc: int | None = None
    distributed: int | None = None
    ray: RayPorts | None = None
    master: int | None = None  # vLLM mp multi-node: --master-port
    vllm_base: int | None = None  # vLLM mp multi-node, data parallel only: VLLM_PORT

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"http": self.http, "dp_rpc": self.dp_rpc, "distributed": self.distributed}
        out |= {"master": self.master, "vllm_base": self.vllm_base}
        out["ray"] = None if self.ray is None else {k: getattr(self.ray, k) for k in RayPorts.__slots__}
        return out

    def all(self) -> list[int]:
        """Every concrete port (the Ray worker range counted by its bounds), each once."""
        named = (self.http, self.dp_rpc, self.master, self.vllm_base, self.distributed)
        ports = list(dict.fromkeys(p for p in named if p is not None))
        if self.ray is not None:
            ports += [getattr(self.ray, k) for k in RayPorts.__slots__]
        return ports


@dataclass(frozen=True, slots=True)
class DeploymentMetadata:
    name: str
    distributed: bool
    leader: bool
    follower: bool
    follower_index: int | None = None  # position among the subordinate workers

    @property
    def role(self) -> Role:
        return "follower" if self.follower else "leader" if self.leader else "single"


@dataclass(slots=True)
class ServePlan:
    """A pure description of how one instance runs on this worker."""

    name: str
    role: Role
    image: str
    command: list[str] | None
    args: list[str]
    env: dict[str, str]
    injected: list[str]
    workload: WorkloadPlan
    ports: NamedPorts
    base_url: str | None
    readiness_url: str | None
    warnings: list[str] = field(default_factory=list)
    profile: Literal["cluster", "exact"] = "cluster"
    served_names: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``berth plan --format json``). Env values are not masked here."""
        return {
            "name": self.name,
            "role": self.role,
            "profile": self.profile,
            "image": self.image,
            "command": self.command,
            "args": self.args,
            "env": self.env,
            "injected": self.injected,
            "ports": self.ports.to_dict(),
            "base_url": self.base_url,
            "readiness_url": self.readiness_url,
            "served_names": self.served_names,
            "warnings": self.warnings,
            "workload": workload_to_dict(self.workload),
        }


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def workload_to_dict(workload: WorkloadPlan) -> dict[str, Any]:
    """A WorkloadPlan as plain JSON types."""
    return _plain(workload.to_dict())


def container_ports(ports: list[int]) -> list[ContainerPort]:
    return [ContainerPort(internal=port) for port in ports]


def dumps(plan: ServePlan) -> str:
    return json.dumps(plan.to_dict(), indent=2)
