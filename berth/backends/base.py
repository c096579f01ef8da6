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
from typing import TYPE_CHECKING, ClassVar, Literal, NamedTuple

import gpustack_runner
from gpustack_runtime import envs as runtime_envs
from gpustack_runtime.deployer import ContainerMount, ContainerResources
from gpustack_runtime.detector import ManufacturerEnum, manufacturer_to_backend
from gpustack_runtime.detector.ascend import get_ascend_cann_variant

from berth.backends.plan import DeploymentMetadata, PlanError, ServePlan
from berth.schemas import BerthConfig, DeploymentSpec, GPUDevice, Model, ModelInstance, Worker
from berth.schemas.instances import ComputedResourceClaim, InstancePorts, SubordinateWorker
from berth.utils.templates import deployment_variables, render

if TYPE_CHECKING:
    from berth.deployers.base import Deployer
    from berth.schemas.workload import WorkloadStatus

__all__ = [
    "DeviceInfo",
    "InferenceServer",
    "distributed_parallelism",
    "is_ascend",
    "is_ascend_310p",
]

logger = logging.getLogger(__name__)

Profile = Literal["cluster", "exact"]
_WORKLOAD_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")


def is_ascend(devices: list[GPUDevice]) -> bool:
    """All selected devices are Ascend NPUs (false for none: a CPU worker is not Ascend)."""
    return bool(devices) and all(d.vendor == ManufacturerEnum.ASCEND.value for d in devices)


def is_ascend_310p(devices: list[GPUDevice]) -> bool:
    """All selected devices are Ascend 310P (arch family such as ``Ascend310P3``)."""
    return is_ascend(devices) and all(get_ascend_cann_variant(d.arch_family) == "310p" for d in devices)


def device_runtime(device: GPUDevice) -> str | None:
    """A device's runtime type (cuda, rocm, cann...): as reported, else from its vendor."""
    if device.type:
        return device.type
    try:
        return manufacturer_to_backend(ManufacturerEnum(device.vendor))
    except ValueError:
        return None


class DeviceInfo(NamedTuple):
    """Runtime type, host runtime version and arch family of the devices a plan runs on."""

    runtime: str | None
    runtime_version: str | None
    arch_family: str | None


def gpus_per_node(instance: ModelInstance) -> list[int]:
    """GPU count of each worker of a distributed instance, leader first (at least 1 on the leader)."""
    leader = len(instance.gpu_indexes) if instance.gpu_indexes else 1
    return [leader] + [len(w.gpu_indexes or []) for w in instance.subordinate_workers]


def distributed_parallelism(instance: ModelInstance) -> tuple[tuple[int, int], str | None]:
    """((tp, pp), warning) across Ray workers: tp = the leader's GPUs, pp = number of workers.

    When workers hold different numbers of GPUs, fall back to tp 1 and pp = all GPUs (and say so).
    """
    counts = gpus_per_node(instance)
    tp = counts[0]
    if any(count != tp for count in counts[1:]):
        return (1, sum(counts)), f"workers hold unequal GPU counts {counts}; using pipeline parallelism only"
    return (tp, len(counts)), None


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
        profile: Profile = "cluster",
    ) -> None:
        self.model = model
        self.instance = instance
        self.worker = worker
        self.config = config or BerthConfig()
        self.model_path = model_path
        self.draft_model_path = draft_model_path
        self.profile: Profile = profile
        self.warnings: list[str] = []
        self._devices: list[GPUDevice] | None = None

    @classmethod
    def from_spec(cls, spec: DeploymentSpec) -> InferenceServer:
        return cls(
            spec.model,
            spec.instance,
            spec.worker,
            spec.config,
            model_path=spec.model_path,
            draft_model_path=spec.draft_model_path,
            profile=spec.profile,
        )

    @property
    def exact(self) -> bool:
        """The ``exact`` profile: the user's options as given, no cluster policy."""
        return self.profile == "exact"

    def warn(self, message: str) -> None:
        """Record a warning on the plan being made (``ServePlan.warnings``)."""
        if message not in self.warnings:
            self.warnings.append(message)

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
        followers = self.instance.subordinate_workers
        distributed = bool(followers)
        leader = distributed and self.worker.id == self.instance.worker_id
        follower = distributed and not leader
        name, index = self.instance.name, None
        if follower:
            index = self._follower_index()
            name = f"{name}-f{index}"
        if not _WORKLOAD_NAME.match(name):
            raise PlanError(
                f"instance.name {self.instance.name!r} cannot name a workload: use 1-63 letters, "
                "digits, '-', '_' or '.', starting and ending with a letter or digit"
            )
        return DeploymentMetadata(
            name=name, distributed=distributed, leader=leader, follower=follower, follower_index=index
        )

    def _follower_index(self) -> int:
        """This worker's position among the instance's subordinate workers."""
        ids = [w.worker_id for w in self.instance.subordinate_workers]
        if self.worker.id not in ids:
            raise PlanError(
                f"worker.id {self.worker.id} is neither instance.worker_id "
                f"{self.instance.worker_id} nor listed in "
                "instance.distributed_servers.subordinate_workers"
            )
        return ids.index(self.worker.id)

    def _subordinate_entry(self) -> SubordinateWorker | None:
        return next((w for w in self.instance.subordinate_workers if w.worker_id == self.worker.id), None)

    def _assignment(self) -> tuple[list[int], str | None]:
        """(GPU indexes, GPU type) assigned on this worker (a follower's come from its entry)."""
        if self.instance.subordinate_workers and self.worker.id != self.instance.worker_id:
            entry = self._subordinate_entry()
            if entry is None:
                raise PlanError(
                    f"worker.id {self.worker.id} is neither instance.worker_id "
                    f"{self.instance.worker_id} nor listed in "
                    "instance.distributed_servers.subordinate_workers"
                )
            return list(entry.gpu_indexes or []), entry.gpu_type
        return list(self.instance.gpu_indexes or []), self.instance.gpu_type

    def gpu_indexes(self) -> list[int]:
        """This worker's GPU indexes for the instance, as assigned."""
        return self._assignment()[0]

    def selected_devices(self) -> list[GPUDevice]:
        """The worker's devices this instance uses here, by index (and by type when the
        instance names one), sorted by index; derived once. An unknown index is an error."""
        if self._devices is None:
            indexes, gpu_type = self._assignment()
            found = {
                d.index: d for d in self.worker.gpu_devices if gpu_type is None or device_runtime(d) == gpu_type
            }
            missing = [i for i in indexes if i not in found]
            if missing:
                kind = f" of type {gpu_type!r}" if gpu_type else ""
                raise PlanError(
                    f"instance.gpu_indexes: GPU indexes {missing} are assigned to the instance but "
                    f"worker.gpu_devices does not list them{kind}; add them to worker.gpu_devices"
                )
            self._devices = [found[i] for i in sorted(set(indexes))]
        return self._devices

    def device_info(self) -> DeviceInfo:
        """Runtime, runtime version and arch family of the first selected device, else of the
        worker's first device (a CPU-placed instance on a GPU worker), else all None."""
        devices = self.selected_devices() or self.worker.gpu_devices
        if not devices:
            return DeviceInfo(None, None, None)
        first = devices[0]
        return DeviceInfo(device_runtime(first), first.runtime_version, first.arch_family)

    def vendor(self) -> str | None:
        """Vendor of the selected devices (nvidia, amd, ascend, ...); None on a CPU worker."""
        devices = self.selected_devices()
        return devices[0].vendor if devices else None

    def runtime_backend(self) -> str | None:
        """gpustack-runtime's backend for the selected devices: cuda, rocm, cann, ..."""
        devices = self.selected_devices()
        return device_runtime(devices[0]) if devices else None

    def template_variables(self) -> dict[str, object]:
        """What ``{{name}}`` placeholders resolve to for this instance on this worker."""
        indexes = [d.index for d in self.selected_devices()]
        return deployment_variables(
            model_path=self.model_path,
            port=self.instance_ports().http,
            worker_ip=self.worker.ip,
            model_name=self.instance.model_name,
            gpu_count=len(indexes),
            gpu_ids=indexes,
            role=self.instance.role,
            group_id=self.instance.group_id,
        )

    def render(self, text: str, context: str, variables: dict[str, object] | None = None) -> str:
        """``text`` with its placeholders filled (from ``variables``, by default the instance's);
        an unknown one stays as written, with a warning."""
        rendered, missing = render(text, self.template_variables() if variables is None else variables)
        if missing:
            names = ", ".join("{{" + name + "}}" for name in missing)
            self.warn(f"{context}: no value for {names}; left as written")
        return rendered

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
        """The model's own environment, placeholders rendered (never overridden by defaults)."""
        return {k: self.render(v, f"model.env[{k!r}]") for k, v in (self.model.env or {}).items()}

    def resources(self) -> ContainerResources:
        """GPU resources: the operator's vGPU keys when the model names a GPU pool, else the
        runtime's resource key valued by the selected indexes."""
        if self.model.gpu_type_selector is not None:
            return self._pool_resources()
        devices = self.selected_devices()
        backend = self.runtime_backend()
        if not devices or backend is None:
            return ContainerResources()
        if len({device_runtime(d) for d in devices}) > 1:
            raise PlanError("instance.gpu_indexes: all GPUs of an instance must be of one type")
        key = (runtime_envs.GPUSTACK_RUNTIME_DETECT_BACKEND_MAP_RESOURCE_KEY or {}).get(backend)
        if key is None:
            raise PlanError(f"worker.gpu_devices: gpustack-runtime knows no resource key for runtime {backend!r}")
        return ContainerResources(**{key: ",".join(str(d.index) for d in devices)})

    def _pool_resources(self) -> ContainerResources:
        """gpustack-operator's resources for ``model.gpu_type_selector``: a MIG partition, a
        slice (memory and cores percentages) or whole cards (as many as the VRAM claim names)."""
        selector = self.model.gpu_type_selector
        assert selector is not None
        base = self._pool_resource_base()
        profile = selector.accelerator_partitioned_profile
        if profile:
            return ContainerResources(**{f"{base}.partitioned": "1", f"{base}.partitioned.mig-{profile}": "1"})
        memory = selector.accelerator_sliced_memory_percentage or 0
        cores = selector.accelerator_sliced_cores_percentage or 0
        if memory == 0 and cores == 0:
            claim = self.instance.computed_resource_claim
            cards = len(claim.vram) if claim and claim.vram else 1
            return ContainerResources(**{base: str(max(cards, 1))})
        return ContainerResources(**{
            f"{base}.sliced": "1",
            f"{base}.sliced.memory-percentage": str(memory),
            f"{base}.sliced.cores-percentage": str(cores),
        })

    def _pool_resource_base(self) -> str:
        """The operator's resource base (``nvidia.com/gpu``...) for the instance's GPU type."""
        gpu_type = self.instance.gpu_type or self.device_info().runtime
        key_map = runtime_envs.GPUSTACK_RUNTIME_DETECT_BACKEND_MAP_RESOURCE_KEY or {}
        device_key = key_map.get(gpu_type) if gpu_type else None
        base = (runtime_envs.GPUSTACK_RUNTIME_DEPLOY_RESOURCE_KEY_MAP_CDI or {}).get(device_key) if device_key else None
        if not base:
            raise PlanError(
                f"model.gpu_type_selector: no operator resource for GPU type {gpu_type!r}; set "
                "instance.gpu_type (cuda, rocm...) or list the worker's devices, so the instance "
                "is not started without GPU isolation"
            )
        return base

    def mounts(self) -> list[ContainerMount]:
        """Directories the engine reads, mounted at the same path: model (and draft) parents."""
        paths: list[str] = []
        for model_path in (self.model_path, self.draft_model_path):
            if model_path and model_path.startswith("/"):
                parent = posixpath.dirname(model_path.rstrip("/")) or "/"
                if parent not in paths:
                    paths.append(parent)
        return [ContainerMount(path=path) for path in paths]

    def instance_ports(self) -> InstancePorts:
        """The instance's ports by meaning: the one reading of ``instance.ports`` (else
        ``instance.port``) that the plan's ``--port`` and the ``{{port}}`` placeholder share."""
        return InstancePorts.from_list(self.instance.ports, fallback=self.instance.port)

    def named_ports(self, *, distributed: bool) -> InstancePorts:
        """:meth:`instance_ports`, checked to hold what the plan needs."""
        ports = list(self.instance.ports or [])
        if not ports and self.instance.port is None:
            raise PlanError("instance.ports is empty: the scheduler must assign at least the HTTP port")
        if distributed and len(ports) < 2:
            raise PlanError(
                "instance.ports must hold at least 2 ports for a distributed instance "
                "([http, ..., distributed-init])"
            )
        return self.instance_ports()

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
