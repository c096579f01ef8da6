"""The backend contract and what every backend resolves the same way.

A backend turns (model, instance, worker, config) into a :class:`ServePlan` with a pure
``plan()``; ``start()`` hands the plan's workload to a deployer it is given. This base holds
what does not depend on the engine: which worker role this is, which GPUs and vendor, the
image, resources, mounts, ports, and the distributed parallelism shape.
"""

from __future__ import annotations

import logging
import posixpath
import re
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import gpustack_runner
from gpustack_runtime import envs as runtime_envs
from gpustack_runtime.deployer import ContainerMount, ContainerResources
from gpustack_runtime.detector import ManufacturerEnum, manufacturer_to_backend

from berth.backends.plan import DeploymentMetadata, PlanError, ServePlan
from berth.schemas import BerthConfig, DeploymentSpec, GPUDevice, Model, ModelInstance, Worker
from berth.schemas.instances import ComputedResourceClaim, InstancePorts, SubordinateWorker

if TYPE_CHECKING:
    from berth.deployers.base import Deployer
    from berth.schemas.workload import WorkloadStatus

__all__ = [
    "InferenceServer",
    "distributed_parallelism",
    "is_ascend",
    "is_ascend_310p",
]

logger = logging.getLogger(__name__)

_WORKLOAD_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")


def is_ascend(devices: list[GPUDevice]) -> bool:
    """All selected devices are Ascend NPUs (false for none: a CPU worker is not Ascend)."""
    return bool(devices) and all(d.vendor == ManufacturerEnum.ASCEND.value for d in devices)


def is_ascend_310p(devices: list[GPUDevice]) -> bool:
    """All selected devices are Ascend 310P (arch family such as ``Ascend310P3``)."""
    return is_ascend(devices) and all("310p" in (d.arch_family or "").lower() for d in devices)


def distributed_parallelism(instance: ModelInstance) -> tuple[int, int]:
    """(tp, pp) across workers: tp = the leader's GPUs, pp = number of workers.

    When workers hold different numbers of GPUs, fall back to tp 1 and pp = all GPUs.
    """
    followers = instance.subordinate_workers
    tp = len(instance.gpu_indexes) if instance.gpu_indexes else 1
    counts = [len(w.gpu_indexes or []) for w in followers]
    if any(count != tp for count in counts):
        logger.warning("workers hold unequal GPU counts %s; using pipeline parallelism only", [tp, *counts])
        return 1, tp + sum(counts)
    return tp, len(followers) + 1


def runner_image(backend: str | None, devices: list[GPUDevice], version: str | None) -> str | None:
    """The newest gpustack-runner vLLM image for a device runtime (and version, if given)."""
    if backend is None:
        return None
    query: dict[str, str] = {"backend": backend, "service": "vllm"}
    if version:
        query["service_version"] = version.removeprefix("v")
    if backend == "cann":
        query["backend_variant"] = "310p" if is_ascend_310p(devices) else "910b"
    try:
        runners = gpustack_runner.list_backend_runners(**query)
        return runners[0].versions[0].variants[0].services[0].versions[0].platforms[0].docker_image
    except (IndexError, AttributeError, TypeError, ValueError):
        return None


class InferenceServer(ABC):
    """Base of every backend. Constructors do no I/O."""

    #: Backend name in the registry (case-insensitive).
    backend_name: ClassVar[str] = "abstract"

    def __init__(
        self,
        model: Model,
        instance: ModelInstance,
        worker: Worker,
        config: BerthConfig | None = None,
        *,
        model_path: str,
        draft_model_path: str | None = None,
    ) -> None:
        self.model = model
        self.instance = instance
        self.worker = worker
        self.config = config or BerthConfig()
        self.model_path = model_path
        self.draft_model_path = draft_model_path

    @classmethod
    def from_spec(cls, spec: DeploymentSpec) -> InferenceServer:
        return cls(
            spec.model,
            spec.instance,
            spec.worker,
            spec.config,
            model_path=spec.model_path,
            draft_model_path=spec.draft_model_path,
        )

    @abstractmethod
    def plan(self) -> ServePlan:
        """Decide everything about running this instance here. Pure: same input, same plan."""

    def start(self, deployer: Deployer) -> WorkloadStatus:
        """Plan, then submit the workload to ``deployer``."""
        plan = self.plan()
        logger.info("creating workload %s (%s) on the %s deployer", plan.name, plan.role, deployer.name)
        return deployer.create(plan.workload)

    # -- roles -------------------------------------------------------------------------

    def deployment_metadata(self) -> DeploymentMetadata:
        """Single, distributed leader (the instance's main worker) or distributed follower."""
        distributed = bool(self.instance.subordinate_workers)
        leader = distributed and self.worker.id == self.instance.worker_id
        follower = distributed and not leader
        name = self.instance.name
        if follower:
            name = f"{name}-w{self.worker.id}"
        if not _WORKLOAD_NAME.match(name):
            raise PlanError(
                f"instance.name {self.instance.name!r} cannot name a workload: use 1-63 letters, "
                "digits, '-', '_' or '.', starting and ending with a letter or digit"
            )
        return DeploymentMetadata(name=name, distributed=distributed, leader=leader, follower=follower)

    def _subordinate_entry(self) -> SubordinateWorker | None:
        return next((w for w in self.instance.subordinate_workers if w.worker_id == self.worker.id), None)

    def gpu_indexes(self) -> list[int]:
        """This worker's GPU indexes for the instance (a follower's come from its entry)."""
        if self.instance.subordinate_workers and self.worker.id != self.instance.worker_id:
            entry = self._subordinate_entry()
            if entry is None:
                raise PlanError(
                    f"worker.id {self.worker.id} is neither instance.worker_id "
                    f"{self.instance.worker_id} nor listed in "
                    "instance.distributed_servers.subordinate_workers"
                )
            return list(entry.gpu_indexes or [])
        return list(self.instance.gpu_indexes or [])

    def selected_devices(self) -> list[GPUDevice]:
        """The worker's devices this instance uses here; an unknown index is an error."""
        by_index = {d.index: d for d in self.worker.gpu_devices}
        missing = [i for i in self.gpu_indexes() if i not in by_index]
        if missing:
            raise PlanError(
                f"instance.gpu_indexes: GPU indexes {missing} are assigned to the instance but "
                "worker.gpu_devices does not list them; add them to worker.gpu_devices"
            )
        return [by_index[i] for i in self.gpu_indexes()]

    def vendor(self) -> str | None:
        """Vendor of the selected devices (nvidia, amd, ascend, ...); None on a CPU worker."""
        devices = self.selected_devices()
        return devices[0].vendor if devices else None

    def runtime_backend(self) -> str | None:
        """gpustack-runtime's backend for the vendor: cuda, rocm, cann, ..."""
        vendor = self.vendor()
        if vendor is None:
            return None
        try:
            return manufacturer_to_backend(ManufacturerEnum(vendor))
        except ValueError:
            devices = self.selected_devices()
            return devices[0].type or None

    # -- resolution ----------------------------------------------------------------------

    def image(self) -> str:
        """The model's image; else the config's image for this vendor and version; else
        gpustack-runner's catalog for the device runtime (other vendors); else an error."""
        if self.model.image_name:
            return self.model.image_name
        vendor = self.vendor() or "cpu"
        version = self.model.backend_version
        template = self.config.images.get(vendor)
        if template:
            tag = f"v{version.removeprefix('v')}" if version else "latest"
            return template.format(tag=tag, version=version or "latest")
        found = runner_image(self.runtime_backend(), self.selected_devices(), version)
        if found:
            return found
        raise PlanError(
            f"model.image_name: no image for vendor {vendor!r}"
            + (f" and vLLM {version}" if version else "")
            + f": set model.image_name, or config.images.{vendor}"
        )

    def base_env(self) -> dict[str, str]:
        """The model's own environment (never overridden by defaults)."""
        return dict(self.model.env or {})

    def resources(self) -> ContainerResources:
        """GPU resources keyed by the runtime's resource key, valued by index list."""
        indexes = self.gpu_indexes()
        backend = self.runtime_backend()
        if not indexes or backend is None:
            return ContainerResources()
        key = (runtime_envs.GPUSTACK_RUNTIME_DETECT_BACKEND_MAP_RESOURCE_KEY or {}).get(backend)
        if key is None:
            raise PlanError(f"worker.gpu_devices: gpustack-runtime knows no resource key for runtime {backend!r}")
        return ContainerResources(**{key: ",".join(str(i) for i in indexes)})

    def mounts(self) -> list[ContainerMount]:
        """Directories the engine reads, mounted at the same path: model (and draft) parents."""
        paths: list[str] = []
        for model_path in (self.model_path, self.draft_model_path):
            if model_path and model_path.startswith("/"):
                parent = posixpath.dirname(model_path.rstrip("/")) or "/"
                if parent not in paths:
                    paths.append(parent)
        return [ContainerMount(path=path) for path in paths]

    def named_ports(self, *, distributed: bool) -> InstancePorts:
        ports = list(self.instance.ports or [])
        if not ports:
            raise PlanError("instance.ports is empty: the scheduler must assign at least the HTTP port")
        if distributed and len(ports) < 2:
            raise PlanError(
                "instance.ports must hold at least 2 ports for a distributed instance "
                "([http, ..., distributed-init])"
            )
        return InstancePorts.from_list(ports)

    def total_vram_claim(self) -> int:
        """Bytes of VRAM the scheduler claimed for this instance on this worker."""
        claim: ComputedResourceClaim | None = self.instance.computed_resource_claim
        if self.worker.id != self.instance.worker_id:
            entry = self._subordinate_entry()
            if entry is not None:
                claim = entry.computed_resource_claim
        if claim is None or not claim.vram:
            return 0
        return sum(claim.vram.values())
